"""Our medical readers vs MONAI's, in one run: exactness, speed (ratios), errors on hostile files, import cost.

Items (issue 20.11): NIfTI loading + orientation (``read_nifti`` + ``Volume.axis_for`` vs ``LoadImage`` +
``Orientation("RAS")``), DICOM series (``read_dicom_series`` vs ``LoadImage(reader="PydicomReader")``),
percentile scaling (``fit_percentiles`` + ``Intensity.apply`` vs ``ScaleIntensityRangePercentiles``), MSD /
nnU-Net lists (``nnunet.cases`` vs ``load_decathlon_datalist``). Files: the MNI152 T1 template nilearn ships
(a real NIfTI volume), a CT-like DICOM series and an MSD-style folder written from it here, in a temporary
folder. Times are medians of ``--repeats`` calls, both readers timed alternately in this process; a ratio
> 1 means MONAI is slower. Usage: ``python benchmarks/medical_readers.py [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _line(item: str, ours: float, monai: float, exact: str) -> None:
    print(f"{item:34s} ours {ours * 1e3:8.1f} ms  monai {monai * 1e3:8.1f} ms  ratio monai/ours {monai / ours:5.2f}  {exact}")


def _files(tmp: Path) -> dict[str, Path]:
    import nibabel as nib
    import pydicom
    from nilearn import datasets as nd
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    img = nd.load_mni152_template(resolution=1)
    t1 = np.asarray(img.get_fdata(), np.float32)
    nifti = tmp / "mni_t1.nii.gz"
    nib.save(nib.Nifti1Image((t1 * 1000).astype(np.int16), img.affine), nifti)
    series = tmp / "dicom"
    series.mkdir()
    uid = generate_uid()
    for n, z in enumerate(range(40, 140, 2)):
        stored = (t1[:, :, z].T * 1200.0 + 24.0).round().astype(np.uint16)  # HU = stored - 1024
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality, ds.SeriesInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID, "CT", uid
        ds.Rows, ds.Columns = stored.shape
        ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 2.0
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-90.0, -126.0, -72.0 + 2.0 * z]
        ds.RescaleSlope, ds.RescaleIntercept = 1.0, -1024.0
        ds.InstanceNumber = n + 1  # MONAI's PydicomReader orders (and needs) InstanceNumber; ours orders by position
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = stored.tobytes()
        ds.save_as(series / f"IM{999 - n:04d}.dcm", enforce_file_format=True)  # names in reverse position order
    msd = tmp / "msd"
    (msd / "imagesTr").mkdir(parents=True)
    (msd / "labelsTr").mkdir()
    training = []
    for i in range(20):
        for sub, array in (("imagesTr", t1[::4, ::4, ::4] * 100 + i), ("labelsTr", (t1[::4, ::4, ::4] > 0.5).astype(np.uint8))):
            nib.save(nib.Nifti1Image(array, img.affine), msd / sub / f"case_{i:03d}.nii.gz")
        training.append({"image": f"./imagesTr/case_{i:03d}.nii.gz", "label": f"./labelsTr/case_{i:03d}.nii.gz"})
    (msd / "dataset.json").write_text(json.dumps({
        "name": "Task01_MNI", "modality": {"0": "T1"}, "labels": {"0": "background", "1": "brain"},
        "numTraining": 20, "training": training, "test": [],
    }))
    return {"nifti": nifti, "dicom": series, "msd": msd}


def nifti_and_orientation(files, repeats: int) -> None:
    from monai.transforms import LoadImage, Orientation

    from hf_transfer_seg.data.sources.volumes import read_nifti

    path = files["nifti"]
    loader = LoadImage(reader="NibabelReader", image_only=True, ensure_channel_first=True, dtype=np.float32)
    orient = Orientation(axcodes="RAS")
    ours = read_nifti(path)
    theirs = loader(str(path))
    diff = float(np.abs(ours.array - np.asarray(theirs)).max())
    _line("NIfTI load (MNI152 1 mm, int16 .gz)", _median_time(lambda: read_nifti(path), repeats),
          _median_time(lambda: loader(str(path)), repeats), f"max |diff| {diff:g}")
    axis = ours.axis_for("axial")
    ras = orient(theirs)
    ours_slices = np.moveaxis(ours.array[0], axis, 0)
    theirs_slices = np.moveaxis(np.asarray(ras[0]), 2, 0)
    same = all(
        np.array_equal(ours_slices[i], theirs_slices[i]) or np.array_equal(np.flip(ours_slices[i], (0, 1)), theirs_slices[i])
        or np.array_equal(np.flip(ours_slices[i], 0), theirs_slices[i]) or np.array_equal(np.flip(ours_slices[i], 1), theirs_slices[i])
        for i in range(ours_slices.shape[0])
    )
    _line("axial slicing (axis pick vs RAS)", _median_time(lambda: ours.axis_for("axial"), repeats),
          _median_time(lambda: orient(theirs), repeats),
          f"same axial slices up to in-plane flips: {same}; ours reads axis {axis} (no copy), RAS reorders the array")


def dicom(files, repeats: int) -> None:
    from monai.transforms import LoadImage

    from hf_transfer_seg.data.sources.volumes import read_dicom_series

    folder = files["dicom"]
    loader = LoadImage(reader="PydicomReader", image_only=True, ensure_channel_first=True, dtype=np.float32)
    ours = read_dicom_series(folder).array[0]  # [slices, rows, columns] in HU
    theirs = np.asarray(loader(str(folder)))[0]  # MONAI: [columns, rows, slices] (swap_ij) in HU
    theirs = np.transpose(theirs, (2, 1, 0))
    exact = f"max |diff| {float(np.abs(ours - theirs).max()):g}" if ours.shape == theirs.shape else f"shapes {ours.shape} vs {theirs.shape}"
    _line(f"DICOM series ({ours.shape[0]} slices)", _median_time(lambda: read_dicom_series(folder), repeats),
          _median_time(lambda: loader(str(folder)), repeats), exact)
    import pydicom

    for path in sorted(folder.iterdir()):  # the same series without InstanceNumber (an optional tag in CT/MR images)
        ds = pydicom.dcmread(path)
        del ds.InstanceNumber
        ds.save_as(path)
    try:
        loader(str(folder))
        print("  without InstanceNumber: MONAI loads it")
    except Exception as exc:  # noqa: BLE001
        same = np.array_equal(read_dicom_series(folder).array[0], ours)
        print(f"  without InstanceNumber: MONAI raises {type(exc).__name__}: {exc}; ours reads the same volume: {same}")


def percentiles(files, repeats: int) -> None:
    from monai.transforms import ScaleIntensityRangePercentiles

    from hf_transfer_seg.data.intensity import fit_percentiles
    from hf_transfer_seg.data.sources.volumes import read_nifti

    volume = read_nifti(files["nifti"]).array
    scale = ScaleIntensityRangePercentiles(lower=0.5, upper=99.5, b_min=0.0, b_max=1.0, clip=True)

    def ours():
        return fit_percentiles([volume]).apply(volume[:, :, :, volume.shape[3] // 2])

    def theirs():
        return scale(volume)[:, :, :, volume.shape[3] // 2]

    a, b = np.asarray(ours()), np.asarray(theirs())
    _line("0.5-99.5 percentile scaling", _median_time(ours, repeats), _median_time(theirs, repeats),
          f"max |diff| {float(np.abs(a - b).max()):.2g} (ours: range fitted once per dataset on <=200k values per case; "
          "MONAI: per call on all values)")


def datalists(files, repeats: int) -> None:
    from monai.data import load_decathlon_datalist

    from hf_transfer_seg.data.sources import nnunet

    root = files["msd"]
    ours = [c.name for c in nnunet.cases(root, labelled=True)]
    theirs = [Path(d["image"]).name.removesuffix(".nii.gz") for d in load_decathlon_datalist(str(root / "dataset.json"), True, "training")]
    _line("MSD list (20 cases)", _median_time(lambda: nnunet.cases(root, labelled=True), repeats),
          _median_time(lambda: load_decathlon_datalist(str(root / "dataset.json"), True, "training"), repeats),
          f"same cases: {ours == theirs}")
    v2 = json.loads((root / "dataset.json").read_text())
    v2.pop("training")
    (root / "v2.json").write_text(json.dumps(v2))
    try:
        load_decathlon_datalist(str(root / "v2.json"), True, "training")
        print("  nnU-Net v2 dataset.json (no 'training' list): MONAI lists it")
    except Exception as exc:  # noqa: BLE001
        print(f"  nnU-Net v2 dataset.json (no 'training' list): MONAI raises {type(exc).__name__}: {str(exc)[:90]}")


_HOSTILE = r"""
import resource, sys, numpy as np
sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[1] + "/tests")
import warnings; warnings.simplefilter("ignore")
from pathlib import Path
import test_bad_inputs_medical as t
tmp = Path(sys.argv[2]); name = sys.argv[3]
path = t.CASES[name][0](tmp)
target = str(t._target_of(path))
from monai.transforms import LoadImage
import monai.data.image_reader, pydicom, nibabel
reader = "PydicomReader" if path.suffix == ".dcm" else "NibabelReader"
mapped = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (mapped + 3 * 2**30, mapped + 3 * 2**30))  # 3 GiB beyond what is mapped now
try:
    out = LoadImage(reader=reader, image_only=True)(target)
    print("accepted", tuple(out.shape), "finite" if np.isfinite(np.asarray(out)).all() else "NON-FINITE")
except MemoryError:
    print("MemoryError (3 GiB address-space limit)")
except Exception as exc:
    print(type(exc).__name__, str(exc).replace(chr(10), " ")[:110])
"""


def hostile(cases: list[str]) -> None:
    """MONAI's LoadImage on the hostile files of tests/test_bad_inputs_medical.py, each in a subprocess allowed 3 GiB more address space."""
    for name in cases:
        with tempfile.TemporaryDirectory() as tmp:
            done = subprocess.run([sys.executable, "-c", _HOSTILE, str(ROOT), tmp, name], capture_output=True, text=True, timeout=300)
            print(f"  monai on {name:28s} -> {(done.stdout.strip() or done.stderr.strip().splitlines()[-1])[:150]}")


def import_cost() -> None:
    times = {}
    for what, code in (("hf_transfer_seg.data.sources.volumes", "import hf_transfer_seg.data.sources.volumes, nibabel, pydicom"),
                       ("monai.transforms + monai.data", "import monai.transforms, monai.data")):
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import torch, numpy; " + code], check=True, cwd=ROOT,
                           env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin"})
            runs.append(time.perf_counter() - t0)
        times[what] = statistics.median(runs)
    base = subprocess.run([sys.executable, "-c", "import time; t=time.perf_counter(); import torch, numpy; print(time.perf_counter()-t)"],
                          capture_output=True, text=True, check=True).stdout
    ours, theirs = times["hf_transfer_seg.data.sources.volumes"], times["monai.transforms + monai.data"]
    print(f"import (fresh process, torch+numpy {float(base):.2f} s included): ours {ours:.2f} s, monai {theirs:.2f} s, "
          f"ratio monai/ours {theirs / ours:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-hostile", action="store_true", help="skip MONAI on the hostile files")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as tmp:
        files = _files(Path(tmp))
        nifti_and_orientation(files, args.repeats)
        dicom(files, args.repeats)
        percentiles(files, args.repeats)
        datalists(files, args.repeats)
    import_cost()
    if not args.no_hostile:
        sys.path.insert(0, str(ROOT / "tests"))
        hostile(["nifti-truncated", "nifti-gz-truncated", "nifti-header-only", "nifti-30000-cubed", "nifti-rgb24",
                 "nifti-nan", "nifti-4d-two-channels", "dicom-slope-abc", "dicom-compressed-no-decoder",
                 "dicom-short-pixeldata", "dicom-orientation-parallel", "dicom-spacing-zero-nan"])
    print(f"peak RSS of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
