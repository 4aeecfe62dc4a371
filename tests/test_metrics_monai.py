"""The project's segmentation metrics against ``monai.metrics`` on constructed masks with known answers.

Per image, Dice / IoU / HD95 / average surface distance must equal MONAI's to 1e-6 (2-D, 3-D, anisotropic
spacing, single pixels, empty masks); over a set, Dice and IoU follow the paper's accumulation (MONAI's
``compute_dice`` of the whole set as one volume) and HD95 is the mean over images where both masks are non-empty.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from hf_transfer_seg.metrics import SegmentationMetrics, average_surface_distance, hd95, load_metric


def monai_metrics():
    """``monai.metrics``, imported by the first test that needs it: at module level it cost every test run's
    collection a full MONAI import (seconds of CPU, minutes of silence on a loaded machine)."""
    return pytest.importorskip("monai.metrics")


TOL = 1e-6


def _edges(mask: np.ndarray) -> np.ndarray:
    """Edge voxels by hand: in the mask with a face neighbour outside it (or outside the image)."""
    pts = []
    for idx in zip(*np.nonzero(mask)):
        for axis, step in itertools.product(range(mask.ndim), (-1, 1)):
            j = list(idx)
            j[axis] += step
            if not (0 <= j[axis] < mask.shape[axis]) or not mask[tuple(j)]:
                pts.append(idx)
                break
    return np.array(pts, float)


def _brute(pred: np.ndarray, ref: np.ndarray, spacing=None) -> tuple[float, float]:
    """HD95 (larger of the two directed 95th percentiles) and symmetric ASD, from every pair of edge points."""
    s = np.asarray(spacing if spacing is not None else [1.0] * pred.ndim, float)
    a, b = _edges(pred) * s, _edges(ref) * s
    d = np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))
    ab, ba = d.min(1), d.min(0)
    return max(np.percentile(ab, 95), np.percentile(ba, 95)), float(np.concatenate([ab, ba]).mean())


def _monai(pred: np.ndarray, ref: np.ndarray, spacing=None) -> dict[str, float]:
    p = torch.as_tensor(pred[None, None], dtype=torch.float32)
    r = torch.as_tensor(ref[None, None], dtype=torch.float32)
    return {
        "dice": float(monai_metrics().compute_dice(p, r, include_background=True)[0, 0]),
        "iou": float(monai_metrics().compute_iou(p, r, include_background=True)[0, 0]),
        "hd95": float(monai_metrics().compute_hausdorff_distance(p, r, include_background=True, percentile=95, spacing=spacing)[0, 0]),
        "asd": float(monai_metrics().compute_average_surface_distance(p, r, include_background=True, symmetric=True, spacing=spacing)[0, 0]),
    }


def _ours(pred: np.ndarray, ref: np.ndarray, spacing=None) -> dict:
    m = SegmentationMetrics(2, ["bg", "fg"])
    m.update(torch.as_tensor(pred.astype(np.int64)), torch.as_tensor(ref.astype(np.int64)), spacing=spacing)
    return m.compute()


def _blobs(shape, seed):
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(float)
    out = []
    for _ in range(2):
        centre = [rng.uniform(0.3, 0.7) * n for n in shape]
        radius = [rng.uniform(0.15, 0.3) * n for n in shape]
        out.append(sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radius)) <= 1.0)
    return out


CASES = [
    ("2-D isotropic", (40, 48), None),
    ("2-D anisotropic", (40, 48), (0.7, 2.3)),
    ("3-D anisotropic", (12, 20, 18), (2.5, 0.8, 1.1)),
]


@pytest.mark.parametrize("name,shape,spacing", CASES, ids=[c[0] for c in CASES])
def test_per_image_values_equal_monai_and_the_brute_force_answer(name, shape, spacing):
    for seed in range(3):
        pred, ref = _blobs(shape, seed)
        ours, monai = _ours(pred, ref, spacing), _monai(pred, ref, spacing)
        brute_hd, brute_asd = _brute(pred, ref, spacing)
        fg = ours["per_class"]["fg"]
        assert fg["dice"] == pytest.approx(monai["dice"], abs=TOL)
        assert fg["iou"] == pytest.approx(monai["iou"], abs=TOL)
        assert fg["hd95"] == pytest.approx(monai["hd95"], abs=TOL)
        assert fg["asd"] == pytest.approx(monai["asd"], abs=TOL)
        assert hd95(pred, ref, spacing) == pytest.approx(monai["hd95"], abs=TOL)
        assert average_surface_distance(pred, ref, spacing) == pytest.approx(monai["asd"], abs=TOL)
        # MONAI computes in float32: the exact (float64) answer agrees to float32 precision
        assert monai["hd95"] == pytest.approx(brute_hd, rel=1e-6, abs=1e-5)
        assert monai["asd"] == pytest.approx(brute_asd, rel=1e-6, abs=1e-5)
        assert ours["hd95_unit"] == ("mm" if spacing else "px")


def test_single_pixels_give_their_distance_in_mm():
    pred, ref = np.zeros((9, 12), bool), np.zeros((9, 12), bool)
    pred[4, 2], ref[4, 9] = True, True  # 7 columns apart
    for spacing, expected in ((None, 7.0), ((3.0, 0.5), 3.5)):
        out = _ours(pred, ref, spacing)["per_class"]["fg"]
        assert out["hd95"] == pytest.approx(expected, abs=TOL) and out["asd"] == pytest.approx(expected, abs=TOL)
        assert _monai(pred, ref, spacing)["hd95"] == pytest.approx(expected, abs=TOL)
        assert out["dice"] == 0.0 and out["iou"] == 0.0
    same = _ours(pred, pred)["per_class"]["fg"]
    assert same["dice"] == 1.0 and same["hd95"] == 0.0 and same["asd"] == 0.0


def test_hd95_is_monai_not_the_pooled_percentile():
    """The earlier definition (95th percentile of both directions pooled) differs from MONAI's on these masks."""
    pred, ref = np.zeros((30, 50), bool), np.zeros((30, 50), bool)
    pred[10:12, 2:48] = True  # a long bar
    ref[8:14, 2:10] = True  # a short block at one end
    a, b = _edges(pred), _edges(ref)
    d = np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))
    pooled = float(np.percentile(np.concatenate([d.min(1), d.min(0)]), 95))
    monai = _monai(pred, ref)["hd95"]
    assert (pooled, monai) == (pytest.approx(35.25), pytest.approx(36.0))
    assert hd95(pred, ref) == pytest.approx(monai, abs=TOL)


def test_empty_masks_follow_the_paper_and_monai():
    ref = np.zeros((16, 16), bool)
    ref[4:9, 4:9] = True
    empty = np.zeros_like(ref)
    assert math.isnan(hd95(ref, empty)) and math.isnan(hd95(empty, ref)) and math.isnan(hd95(empty, empty))
    assert math.isnan(average_surface_distance(empty, ref))
    # both empty: MONAI's Dice is undefined (NaN with ignore_empty) and so is ours (None)
    t = torch.zeros(1, 1, 16, 16)
    assert math.isnan(float(monai_metrics().compute_dice(t, t, include_background=True)[0, 0]))
    out = _ours(empty, empty)
    assert out["dice_mean"] is None and out["hd95_mean"] is None and out["per_class"]["fg"]["hd95_images"] == 0
    # missed entirely: Dice 0 like MONAI, no HD95 (the image is left out of the HD95 mean)
    missed = _ours(empty, ref)["per_class"]["fg"]
    assert missed["dice"] == 0.0 == _monai(empty, ref)["dice"] and missed["hd95"] is None


def test_set_accumulation_is_monai_on_the_whole_set_and_hd95_the_mean_over_images():
    rng = np.random.default_rng(0)
    pairs = [_blobs((32, 32), s) for s in range(4)] + [(np.zeros((32, 32), bool), rng.random((32, 32)) > 0.9)]
    spacing = (0.6, 1.4)
    m = SegmentationMetrics(2, ["bg", "fg"])
    for p, r in pairs:
        m.update(torch.as_tensor(p.astype(np.int64)), torch.as_tensor(r.astype(np.int64)), spacing=spacing)
    out = m.compute()
    whole_p = np.stack([p for p, _ in pairs])  # the set as one volume: counts are summed over every pixel
    whole_r = np.stack([r for _, r in pairs])
    monai_whole = _monai(whole_p, whole_r)
    assert out["dice_mean"] == pytest.approx(monai_whole["dice"], abs=TOL)
    assert out["iou_mean"] == pytest.approx(monai_whole["iou"], abs=TOL)
    per_image = [_monai(p, r, spacing) for p, r in pairs if p.any() and r.any()]
    assert out["per_class"]["fg"]["hd95_images"] == len(per_image) == 4
    assert out["hd95_mm"] == pytest.approx(np.mean([v["hd95"] for v in per_image]), abs=TOL)
    assert out["asd_mean"] == pytest.approx(np.mean([v["asd"] for v in per_image]), abs=TOL)


def test_evaluate_module_reports_the_same_values():
    preds, refs = zip(*[_blobs((24, 24), s) for s in range(2)])
    direct = SegmentationMetrics(2)
    for p, r in zip(preds, refs):
        direct.update(torch.as_tensor(p.astype(np.int64)), torch.as_tensor(r.astype(np.int64)), spacing=(0.5, 2.0))
    via = load_metric().compute(predictions=[p.astype(int) for p in preds], references=[r.astype(int) for r in refs],
                                num_classes=2, spacing=[(0.5, 2.0)] * 2)
    assert via == direct.compute() and via["asd_mean"] is not None


def test_spacing_needs_one_value_per_axis():
    m = SegmentationMetrics(2)
    with pytest.raises(ValueError, match="one per axis"):
        m.update(torch.zeros(4, 4, 4, dtype=torch.long), torch.zeros(4, 4, 4, dtype=torch.long), spacing=(1.0, 1.0))


def _handwritten_probs(model, image, window, overlap=0.5, batch_size=16):
    """The hand-written sliding window that MONAI's replaced (windows every floor(window * (1 - overlap)) px, the
    last flush with the border; zero padding after the image; plain average of the windows' softmax)."""
    _, h, w = image.shape
    ph, pw = max(h, window), max(w, window)
    padded = torch.nn.functional.pad(image, (0, pw - w, 0, ph - h))
    stride = max(1, int(math.floor(window * (1.0 - overlap))))

    def starts(length):
        return [0] if length <= window else sorted(set(list(range(0, length - window, stride)) + [length - window]))

    boxes = [(y, x) for y in starts(ph) for x in starts(pw)]
    total, count = None, torch.zeros(1, ph, pw)
    with torch.no_grad():
        for i in range(0, len(boxes), batch_size):
            chunk = boxes[i : i + batch_size]
            probs = model(torch.stack([padded[:, y : y + window, x : x + window] for y, x in chunk])).float().softmax(1)
            total = torch.zeros(probs.shape[1], ph, pw) if total is None else total
            for (y, x), p in zip(chunk, probs):
                total[:, y : y + window, x : x + window] += p
                count[:, y : y + window, x : x + window] += 1
    return (total / count)[:, :h, :w]


def test_sliding_window_is_monai_and_gives_the_results_of_the_handwritten_one():
    from monai.inferers import sliding_window_inference

    from hf_transfer_seg.models.segmentation import SegmentationModel, sliding_window_probs

    torch.manual_seed(0)
    model = SegmentationModel("test_resnet", 3).eval()
    for h, w in ((64, 64), (96, 80), (130, 70), (40, 48), (20, 90)):  # the last two: smaller than the window
        image = torch.rand(3, h, w)
        ours = sliding_window_probs(model, image, 64, overlap=0.5, batch_size=4)
        assert ours.shape == (3, h, w)
        torch.testing.assert_close(ours, _handwritten_probs(model, image, 64, batch_size=4), atol=1e-6, rtol=0)
        if h >= 64 and w >= 64:  # no padding needed: exactly MONAI's call
            with torch.no_grad():
                theirs = sliding_window_inference(image[None], (64, 64), 4, lambda x: model(x).float().softmax(1), overlap=0.5,
                                                  mode="constant")[0]
            torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)


LEAN_PROBE = """
import json, sys
import numpy as np, torch
from hf_transfer_seg import _lazy
if sys.argv[1] == "lean":
    _lazy.lean_imports()  # what every command-line process does
from hf_transfer_seg.metrics import compute_segmentation  # what the fine-tuning loop calls
from hf_transfer_seg.models.segmentation import sliding_window_probs
rng = np.random.default_rng(0)
pred, ref = rng.random((40, 48)) > 0.6, rng.random((40, 48)) > 0.5
values = compute_segmentation([pred.astype(int)], [ref.astype(int)], num_classes=2)
torch.manual_seed(0)
probs = sliding_window_probs(torch.nn.Conv2d(3, 2, 3, padding=1), torch.rand(3, 50, 70), 32)
absent = [name for name in _lazy.MONAI_UNUSED + _lazy.EVALUATE_UNUSED if name in sys.modules]
import pandas, sklearn, scipy.stats  # reported absent only while MONAI / evaluate imported
print(json.dumps({"metrics": values, "probs": probs.sum().item(), "imported": absent}))
"""


def test_lean_imports_give_the_same_numbers_and_leave_the_libraries_importable():
    """A command-line process imports MONAI without its unused optional libraries: the fine-tuning loop's metrics
    and sliding window are the same numbers as with the full import, none of those libraries is imported by
    them, and each can still be imported afterwards."""
    import json
    import os
    import subprocess
    import sys

    out = {}
    for mode in ("lean", "full"):
        done = subprocess.run([sys.executable, "-c", LEAN_PROBE, mode], capture_output=True, text=True, timeout=600,
                              env={**os.environ, "PYTHONWARNINGS": "ignore"})
        assert done.returncode == 0, done.stderr[-3000:]
        out[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["lean"]["imported"] == []
    assert set(out["full"]["imported"]) & {"sklearn", "transformers", "matplotlib"}  # what the lean import avoids
    assert out["lean"]["metrics"] == out["full"]["metrics"]
    assert out["lean"]["probs"] == pytest.approx(out["full"]["probs"], abs=0)
