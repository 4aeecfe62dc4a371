"""``hf-transfer-seg predict``: masks from a fine-tuned segmentation model for a folder of images or volumes."""

from __future__ import annotations

import argparse

from hf_transfer_seg.cli import argtypes as T


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "predict",
        help="segment a folder of images / volumes with a fine-tuned model into masks of the same geometry",
        description=(
            "Sliding-window inference with a segmentation model pushed by `finetune --push-to` (REPO[@REVISION], or a "
            "saved model folder; safetensors only). PNG/JPEG/... in: palette PNG masks out; TIFF in: TIFF out; NIfTI "
            "in: NIfTI out with the same affine; a sub-folder holding one DICOM series: a NIfTI mask. Mask values are "
            "class indices (predictions.json names them). The output folder appears only when every input is done."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("-i", "--input", required=True, help="folder of images, NIfTI files and DICOM series folders (or one file)")
    p.add_argument("-o", "--output", required=True, type=T.output_dir, help="new (or empty) folder for the masks")
    p.add_argument("--model", required=True, help="segmentation model: REPO or REPO@REVISION on the Hub, or a saved model folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    from hf_transfer_seg.finetune.predict import check_output, predict_folder

    check_output(args.output)  # before the model is downloaded
    manifest = predict_folder(args.input, args.output, args.model, progress=not args.no_progress)
    names = ", ".join(f"{i}={n}" for n, i in manifest["mask_values"].items())
    print(f"{len(manifest['masks'])} mask(s) in {args.output} (values: {names}); see predictions.json")
    return 0
