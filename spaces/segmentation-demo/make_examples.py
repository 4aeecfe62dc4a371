"""Write the Space's example images: held-out slices of the embedded default segmentation target.

Run once (``python spaces/segmentation-demo/make_examples.py``) and commit the PNGs: the Space ships
them and fetches nothing at run time. The slices come from the validation half of the seeded split
that fine-tuning uses by default, so the demo shows images the served model was not trained on.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from hf_transfer_seg.data.registry import load_target
from hf_transfer_seg.data.segmentation import split_target
from hf_transfer_seg.finetune.config import FinetuneConfig

COUNT = 4


def main() -> None:
    defaults = FinetuneConfig()
    target = load_target(defaults.target)
    _, val, _ = split_target(target, val_fraction=defaults.val_fraction, seed=defaults.split_seed)
    picks = np.linspace(0, len(val.samples) - 1, COUNT).round().astype(int)
    out = Path(__file__).resolve().parent / "examples"
    out.mkdir(exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    files = []
    for i in picks:
        sample = val.samples[int(i)]
        grey = (sample.image[0].numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)  # T1 slice: 3 equal channels
        path = out / f"{sample.name}.png"
        Image.fromarray(grey).save(path, optimize=True)
        files.append(path.name)
        print(f"{path.name}: {grey.shape[1]}x{grey.shape[0]}")
    # what the examples are: the Space labels them by it, and says so when it serves a model of another target
    (out / "examples.json").write_text(json.dumps({
        "target": target.key,
        "what": f"held-out validation slices (split seed {defaults.split_seed}) of {target.key}, the demo's default "
                "fine-tuning target: axial slices of the MNI152 T1 template shipped with nilearn",
        "files": files,
    }, indent=2) + "\n")


if __name__ == "__main__":
    main()
