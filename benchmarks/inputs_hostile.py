"""Hostile inputs of issue 24 items 1, 6 and 7, counted by cause against two checkouts (before and after a fix).

Each case runs against the code of one checkout (``PYTHONPATH``) in child processes: real ``hf-transfer-seg``
processes for the licence and recipe cases, real files for the readers, a real local hub (started by the child,
from the same checkout) for the sidecar cases. A case is *clean* when it ends as the quality bar says: bad input
refused before any work (exit 2, one ``error:`` line, no training state written, no traceback), a hostile
revision skipped with one message (report's cards mode, Space selection), a damaged file refused with one
error and no library traceback logged above it; and a valid use accepted (``score ... --license mit``).

    python benchmarks/inputs_hostile.py --before /work/main --after .

Prints one line per cause: ``cause: before clean/total, after clean/total``, and the cases that are not clean.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve()
TINY = ["--encoder", "test_resnet", "--image-size", "32", "--train-size", "16", "--val-size", "8", "--batch-size", "8",
        "--num-workers", "0", "--log-every", "0", "--epochs", "0.5", "--checkpoint-epochs", "0.5"]


def _cli(checkout: str, args: list[str], env: dict | None = None, cwd: str = tempfile.gettempdir()) -> subprocess.CompletedProcess:
    """``hf-transfer-seg ARGS`` with the code of ``checkout`` (run outside any checkout: ``python -m`` puts the
    working directory first on sys.path)."""
    full = {k: v for k, v in os.environ.items() if k != "HF_TRANSFER_SEG_LICENSE"}
    full.update({"PYTHONPATH": checkout, "TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                 "HF_ENDPOINT": "http://127.0.0.1:9"}, **(env or {}))
    return subprocess.run([sys.executable, "-m", "hf_transfer_seg", *args], env=full, capture_output=True, text=True,
                          timeout=600, cwd=cwd)


def licence_cases(checkout: str, tmp: Path) -> dict[str, bool]:
    """Refused at start (exit 2, one line, no state/), or, for a valid setting after the subcommand, accepted."""
    out: dict[str, bool] = {}

    def refused(name: str, args: list[str], env: dict | None = None, pre: tuple[str, ...] = ()) -> None:
        folder = tmp / name
        run = _cli(checkout, [*pre, "pretrain", *TINY, "--output-dir", str(folder), *args], env)
        lines = [line for line in run.stderr.splitlines() if line.strip() and " INFO " not in line and " WARNING " not in line]
        out[name] = (run.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and "icens" in lines[0]
                     and "is not" in lines[0] and not (folder / "run_config.json").exists())  # refused before training

    for i, value in enumerate(["nonsense!!", "other:x y", "0", "x" * 5000]):
        refused(f"env-{i}-{value[:10]}", [], {"HF_TRANSFER_SEG_LICENSE": value})
    for i, line in enumerate(['license: "nonsense!!"', "license: 0", 'license: "other:x y"']):
        recipe = tmp / f"recipe{i}.yaml"
        recipe.write_text(line + "\n")
        refused(f"recipe-{i}-{line[9:20]}", ["--config", str(recipe)])
    refused("flag-0", [], pre=("--license", "0"))
    refused("flag-5000", [], pre=("--license", "x" * 5000))
    refused("flag-after-subcommand-0", ["--license", "0"])
    run = _cli(checkout, ["score", "--repo-id", "test-org/none", "--license", "mit"])  # valid: only the Hub is missing
    out["flag-after-subcommand-mit-accepted"] = "unrecognized arguments" not in run.stderr and "icens" not in run.stderr
    return out


def recipe_cases(checkout: str, tmp: Path) -> dict[str, bool]:
    out = {}
    for name, data in {"binary": bytes(range(256)) * 16, "nul": b"epochs: 1\x00\n", "latin1": "epochs: 1 # \xe9\n".encode("latin-1"),
                       "deep": b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n"}.items():
        path = tmp / f"{name}.yaml"
        path.write_bytes(data)
        run = _cli(checkout, ["pretrain", *TINY, "--config", str(path), "--output-dir", str(tmp / f"r-{name}")])
        out[f"recipe-{name}"] = run.returncode == 2 and "Traceback" not in run.stderr and run.stderr.strip().count("\n") == 0
    return out


CHILD_READERS = r'''
import json, logging, random, sys, gzip, io
from pathlib import Path
sys.path.insert(0, sys.argv[2])
logging.basicConfig(level=logging.INFO, stream=io.StringIO())
records = []
class Keep(logging.Handler):
    def emit(self, record): records.append(record)
logging.getLogger().addHandler(Keep())
from test_bad_inputs_medical import _dicom_series, _score_images, _target_of
from medical_data import write_nifti
from hf_transfer_seg.errors import HfTransferSegError
tmp = Path(sys.argv[1]); results = {}
def run(name, target):
    records.clear()
    try:
        _score_images(_target_of(target)); ok = False
    except HfTransferSegError:
        ok = True
    except BaseException as exc:
        ok = False
    loud = [r for r in records if r.levelno >= logging.INFO and r.exc_info]
    results[name] = ok and not loud
from pydicom import uid
from pydicom.encaps import encapsulate
for syntax in ["JPEGBaseline8Bit", "JPEG2000", "JPEG2000Lossless", "JPEGLSLossless", "RLELossless", "JPEGLosslessSV1"]:
    junk = random.Random(syntax).randbytes(256)
    def edit(ds, meta, s=getattr(uid, syntax)):
        meta.TransferSyntaxUID = s; ds.PixelData = encapsulate([junk]); ds["PixelData"].VR = "OB"
    run(f"dicom-{syntax}", _dicom_series(tmp / syntax / "series", edit))
image, _ = write_nifti(tmp)
brain = image.read_bytes()
for where in [0.0001, 0.001, 0.002, 0.25, 0.5, 0.75, 0.9999]:
    pos = max(12, int(len(brain) * where)); raw = bytearray(brain); raw[pos:pos + 64] = random.Random(pos).randbytes(64)
    p = tmp / f"mid{where}.nii.gz"; p.write_bytes(bytes(raw[:len(brain)])); run(f"nii.gz-random-at-{where}", p)
for name, data in {"cut": brain[: len(brain) // 2], "crc": brain[:-8] + bytes(4) + brain[-4:], "length": brain[:-4] + bytes(4),
                   "magic": b"NOTGZIP" + brain[7:], "trailing-member": brain + gzip.compress(bytes(8 << 20))}.items():
    p = tmp / f"{name}.nii.gz"; p.write_bytes(data); run(f"nii.gz-{name}", p)
print(json.dumps(results))
'''

CHILD_SIDECARS = r'''
import json, logging, sys, io
from pathlib import Path
logging.basicConfig(level=logging.WARNING, stream=io.StringIO())
sys.path.insert(0, sys.argv[2])  # the cases of this checkout's tests, whatever the checkout under test
from huggingface_hub import CommitOperationAdd, HfApi
from test_bad_inputs_sidecars import GRID, HOSTILE, TARGET, _card, _good_grid, _ours
from hf_transfer_seg.localhub import local_hub
from hf_transfer_seg.errors import HfTransferSegError
results = {}
with local_hub(Path(sys.argv[1]) / "root", port=int(sys.argv[3])) as endpoint:
    api = HfApi(endpoint=endpoint)
    from hf_transfer_seg.report.table import table_from_cards
    from hf_transfer_seg.space.config import SpaceConfig
    from hf_transfer_seg.space.selection import select
    for i, (name, (change, grid)) in enumerate(HOSTILE.items()):
        repo = f"test-org/hostile-{i}"
        api.create_repo(repo)
        api.create_commit(repo, operations=[CommitOperationAdd("README.md", _card({}).encode())], commit_message="main")
        for e, bad in ((1, False), (2, True)):
            o = _ours(e)
            if bad:
                change(o)
            blob = grid if (bad and grid) else _good_grid(e)
            api.create_branch(repo, branch=f"epoch-{e:04d}")
            ops = [CommitOperationAdd("README.md", _card(o).encode()), CommitOperationAdd(GRID, blob)]
            api.create_commit(repo, operations=ops, commit_message=name, revision=f"epoch-{e:04d}")
        try:  # a clean error that loses the good revision beside the bad one is not clean either
            results[f"report:{name}"] = list(table_from_cards([repo], TARGET)["revision"]) == ["epoch-0001"]
        except BaseException:
            results[f"report:{name}"] = False
        try:
            notices = select(SpaceConfig(model_repo=repo)).notices
            results[f"space:{name}"] = any(n.startswith("revision epoch-0002 skipped") for n in notices)
        except BaseException:
            results[f"space:{name}"] = False
print(json.dumps(results))
'''


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _child(checkout: str, code: str, *args: str, port: int = 9) -> dict[str, bool]:
    env = dict(os.environ, PYTHONPATH=f"{checkout}{os.pathsep}{Path(checkout) / 'tests'}", HF_HUB_DISABLE_PROGRESS_BARS="1",
               TQDM_DISABLE="1", HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_HOME=str(Path(args[0]) / "hf-home"))
    run = subprocess.run([sys.executable, "-c", code, *args, str(port)], env=env, capture_output=True, text=True,
                         timeout=900, cwd=args[0])
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise SystemExit(f"child failed:\n{run.stderr[-3000:]}")
    return json.loads(lines[-1])


def measure(checkout: str) -> dict[str, dict[str, bool]]:
    checkout = str(Path(checkout).resolve())
    with tempfile.TemporaryDirectory(prefix="inputs-hostile-") as tmp:
        tmp = Path(tmp)
        for part in ("l", "r", "m", "hub"):
            (tmp / part).mkdir()
        return {
            "licence: flag, variable, recipe (item 1)": licence_cases(checkout, tmp / "l"),
            "recipe file not YAML text (item 7)": recipe_cases(checkout, tmp / "r"),
            "damaged DICOM / .nii.gz (item 7)": _child(checkout, CHILD_READERS, str(tmp / "m"), str(Path(checkout) / "tests")),
            "sidecars: report + Space (item 6)": _child(checkout, CHILD_SIDECARS, str(tmp / "hub"), str(HERE.parents[1] / "tests"),
                                                        port=_free_port()),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="checkout without the fix (e.g. /work/main)")
    parser.add_argument("--after", default=str(HERE.parents[1]), help="checkout with the fix (default: this one)")
    args = parser.parse_args()
    before, after = measure(args.before), measure(args.after)
    total_b = total_a = total = 0
    for cause, cases in after.items():
        b, a = sum(before[cause].values()), sum(cases.values())
        total_b, total_a, total = total_b + b, total_a + a, total + len(cases)
        print(f"{cause}: before {b}/{len(cases)} clean, after {a}/{len(cases)} clean")
        for name in cases:
            if not cases[name] or not before[cause][name]:
                print(f"    {name}: before {'clean' if before[cause][name] else 'BAD'}, after {'clean' if cases[name] else 'BAD'}")
    print(f"all: before {total_b}/{total} clean, after {total_a}/{total} clean")


if __name__ == "__main__":
    main()
