"""Rank any Hub encoders on the target's images: the score grid, label-free and label-aware predictors.

One plan (image subset, draws of jittered views and negatives, bootstrap) is drawn once from the seed and
shared by every model (common random numbers), at one resolution for every model: ``--image-size``, else
the size chosen from the target (:func:`~hf_transfer_seg.scoring.plan.default_image_size`), never a
model's pretraining size; only a model that refuses it (a fixed-size ViT) gets the views resized
(antialiased) to the one size it accepts, flagged in the output. Each model normalises with its own
mean/std (timm ``pretrained_cfg`` or the transformers image processor settings). A model whose deepest
feature map is below 2 x 2 at that size, or whose embeddings collapse, is flagged and never ranked. While one model runs
its forward passes, the next one is downloaded and built in a background thread.

From the same two forward passes per batch: the whole robustness grid with bootstrap intervals, the
deepest level's pooled view-1 embeddings for RankMe and alpha-ReQ (``hf_transfer_seg.baselines.
label_free``), and the headline's per-image values for the paired tie analysis. When the target has
masks, LogME and the linear-probe Dice (label-aware; their own passes over the segmentation images,
resized to the model's input size) are added.

A model that cannot be resolved or loaded is recorded as ``failed`` and the run goes on; a repository
without safetensors weights is ``skipped`` with the reason (nothing is unpickled).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from hf_transfer_seg.baselines.label_free import PREDICTORS as LABEL_FREE, label_free
from hf_transfer_seg.errors import ConfigError, DataError, HfTransferSegError, NothingScored, WeightsError
from hf_transfer_seg.hub import redact
from hf_transfer_seg.models.hub_encoder import (
    ModelSpec, describe, download_spec, family_of, input_side, load_any_encoder, parse_spec,
    resolve_spec, unusable_reason,
)
from hf_transfer_seg.cards.schema import HEADLINE
from hf_transfer_seg.scoring.configs import parse_config
from hf_transfer_seg.scoring.features import plan_distances, to_nchw
from hf_transfer_seg.scoring.grid import ConfigScore, grid_scores
from hf_transfer_seg.scoring.plan import VIEW_DRAWS, ScoringPlan, build_plan
from hf_transfer_seg.scoring.ties import ties_with_best

log = logging.getLogger(__name__)

LABEL_AWARE = {"logme": False, "linear_probe_dice": False}  # name -> lower is better?


def short_reason(exc: BaseException | str, limit: int = 300) -> str:
    """One line (the first one that says something), at most ``limit`` characters, tokens redacted."""
    text = exc if isinstance(exc, str) else (f"{type(exc).__name__}: {exc}" if not isinstance(exc, HfTransferSegError) else str(exc))
    lines = [ln.strip() for ln in redact(text).splitlines() if ln.strip()]
    line = lines[0] if lines else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


@dataclass
class ModelResult:
    spec: ModelSpec
    status: str = "ok"  # ok / collapsed (embeddings ignore the input) / degenerate (deepest map < 2x2) / failed / skipped
    reason: str | None = None
    size_source: str | None = None  # why the model was scored at ``input_size`` (see ``SIZE_SOURCES``)
    family: str | None = None
    description: str | None = None
    input_size: int | None = None
    num_levels: int = 0
    scores: dict[str, ConfigScore] = field(default_factory=dict)
    predictors: dict[str, float] = field(default_factory=dict)  # label-free and label-aware
    headline_values: torch.Tensor | None = None  # per image, mean over the view draws
    headline_draws: torch.Tensor | None = None  # [draws, M], for the tie test
    deepest: tuple[int, int] | None = None  # spatial size of the deepest feature map at ``input_size``
    tie: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def scored(self) -> bool:
        """Scores were computed (ok, collapsed or degenerate: kept, flagged, never ranked); failed and skipped have none."""
        return self.status in ("ok", "collapsed", "degenerate")


# Why a model was scored at its input size (recorded per model; printed and written to the results card).
SIZE_SOURCES = {
    "flag": "--image-size",
    "target": "the size chosen from the target (median shorter side, rounded down to a multiple of 32, within 64-224 px)",
    "model": "this model accepts only the input size its config records (fixed-size position embeddings)",
}
MIN_DEEPEST = 2  # a deepest feature map smaller than 2 x 2 cannot localise anything: the model is flagged, not ranked
COLLAPSE_RANKME = 1.05  # effective rank of the embeddings at or below this: one direction, whatever the image


def collapse_reason(result: "ModelResult") -> str | None:
    """Why a scored model's embeddings do not depend on its input (None when they do).

    A collapsed encoder maps every image to (nearly) the same point: each positive and negative distance is
    the same, every per-image value equals the margin, the bootstrap interval has zero width and RankMe is 1.
    Its score is not a measurement of robustness and must not be ranked as one.
    """
    values = result.headline_values
    reasons = []
    if values is not None and values.numel() and float(values.max() - values.min()) <= 1e-9:
        reasons.append(f"every image has the same score {float(values[0]):.4f} (interval of zero width)")
    rankme = result.predictors.get("rankme")
    if rankme is not None and rankme <= COLLAPSE_RANKME:
        reasons.append(f"RankMe {rankme:.2f} (the embeddings span one direction)")
    if not reasons:
        return None
    return (" and ".join(reasons) + "; the encoder's output does not depend on the image "
            "(untrained, diverged or broken weights), so it is not ranked")


@dataclass
class Loaded:
    spec: ModelSpec
    model: torch.nn.Module | None = None
    error: BaseException | None = None
    skipped: str | None = None
    family: str | None = None


def _resolve(text: str) -> tuple[ModelSpec, str | None, BaseException | None, Any]:
    """(spec, skip reason, error, config folder) without downloading weights."""
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    spec = parse_spec(text)
    try:
        try:
            resolve_spec(spec)
        except RevisionNotFoundError:
            return spec, None, WeightsError(f"revision {spec.revision!r} not found in {spec.repo_id}"), None
        except RepositoryNotFoundError:
            return spec, None, WeightsError(f"repository {spec.repo_id} not found (or not visible with this token)"), None
        reason = unusable_reason(spec)
        if reason:
            return spec, reason, None, None
        from hf_transfer_seg.hub import download_revision

        folder = download_revision(spec.repo_id, spec.sha, allow_patterns=["config.json", "preprocessor_config.json"])
        family_of(folder)
        return spec, None, None, folder
    except Exception as exc:  # noqa: BLE001 - recorded per model; the run goes on
        return spec, None, exc, None


def _load(spec: ModelSpec) -> Loaded:
    folder = None
    try:
        folder = download_spec(spec)
        return Loaded(spec, model=load_any_encoder(folder), family=family_of(folder))
    except Exception as exc:  # noqa: BLE001 - recorded per model; the run goes on
        if folder is not None:  # name the model, not this machine's cache path (the reason goes into a card)
            text = short_reason(exc).replace(str(folder).rstrip("/"), f"{spec.repo_id}@{(spec.sha or '')[:10]}")
            exc = WeightsError(text)
        return Loaded(spec, error=exc)


def resized_views(plan: ScoringPlan, side: int, cache: dict[int, ScoringPlan]) -> ScoringPlan:
    """``plan`` (every draw of views) with both views resized to ``side`` (antialiased bilinear; cached per size)."""
    if side not in cache:
        resize = lambda v: F.interpolate(v, size=(side, side), mode="bilinear", antialias=True, align_corners=False).clamp_(0, 1)  # noqa: E731
        cache[side] = plan.resized(side, resize)
    return cache[side]


def accepted_side(model: torch.nn.Module, side: int) -> tuple[int, str]:
    """``(side, "target")`` when the model takes images of ``side`` px, else its own config size and ``"model"``
    (a fixed-size ViT refuses other sizes: it is scored at the one size it accepts, and the output says so)."""
    from hf_transfer_seg.scoring.features import feature_levels

    try:
        with torch.inference_mode():
            feature_levels(model, torch.zeros(1, 3, side, side))
        return side, "target"
    except Exception:  # noqa: BLE001 - any refusal of the size: fall back to the model's own size
        native = input_side(model, 0)
        if not native or native == side:
            raise
        return native, "model"


def trivial_probe_dice(seg: tuple | None) -> float | None:
    """The linear-probe Dice that a constant prediction (every pixel one class) reaches on the validation masks:
    the best of all-background (0) and all-class-j, ``2 n_j / (n_j + N)`` averaged over the foreground classes.
    A probe at or below it has learnt nothing from the encoder."""
    if seg is None:
        return None
    val = seg[1]
    counts = torch.zeros(val.num_classes, dtype=torch.float64)
    for s in val.samples:
        mask = s.mask if s.valid is None else s.mask[s.valid.bool()]
        counts += torch.bincount(mask.flatten(), minlength=val.num_classes)[: val.num_classes].double()
    total = float(counts.sum())
    present = [j for j in range(1, val.num_classes) if counts[j] > 0]
    if not total or not present:
        return None
    return max(2 * float(counts[j]) / (float(counts[j]) + total) for j in present) / len(present)


class EmbeddingTap:
    """Forward hook keeping the deepest level, globally average-pooled, of view 1 of every batch (and its map size)."""

    def __init__(self, model: torch.nn.Module):
        self.rows: list[torch.Tensor] = []
        self.fmt = getattr(model, "output_fmt", "NCHW")
        self.deepest: tuple[int, int] | None = None
        self.handle = model.register_forward_hook(self)

    def __call__(self, module, inputs, output) -> None:
        deepest = to_nchw(output[-1] if isinstance(output, (list, tuple)) else output, self.fmt)
        self.deepest = (int(deepest.shape[-2]), int(deepest.shape[-1]))
        pooled = deepest.float().mean(dim=(2, 3))
        self.rows.append(pooled[: pooled.shape[0] // 2].cpu())  # [view1; view2] batches: keep view 1

    def matrix(self, m: int) -> torch.Tensor:
        """The first ``m`` rows: view 1 of the first draw of views (the later draws see the same images again)."""
        self.handle.remove()
        return torch.cat(self.rows)[:m].double()


def label_aware(model: torch.nn.Module, seg: tuple | None, side: int, seed: int, pixels_per_class: int) -> dict[str, float]:
    """LogME and linear-probe Dice on the masked target, images resized to the model's input size."""
    if seg is None:
        return {}
    from hf_transfer_seg.baselines import transferability as T
    from hf_transfer_seg.data.segmentation import SegSample

    def resized(target):
        out = []
        for s in target.samples:
            image = F.interpolate(s.image[None], size=(side, side), mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)
            mask = F.interpolate(s.mask[None, None].float(), size=(side, side), mode="nearest")[0, 0].long()
            valid = None if s.valid is None else F.interpolate(s.valid[None, None].float(), size=(side, side), mode="nearest")[0, 0].bool()
            out.append(SegSample(s.name, image, mask, valid))
        return dataclasses.replace(target, samples=out)

    train, val = (resized(t) for t in seg)
    cfg = model.pretrained_cfg
    mean = torch.tensor(cfg.get("mean", (0.0, 0.0, 0.0)), dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(cfg.get("std", (1.0, 1.0, 1.0)), dtype=torch.float32).view(1, -1, 1, 1)
    feats, labels = T.sampled_features(model, train.samples, train.num_classes, per_class=pixels_per_class, level=-1, mean=mean, std=std, seed=seed)
    probe = T.fit_linear_probe(feats, labels, train.num_classes)
    dice = T.probe_dice(model, probe, val.samples, val, level=-1, mean=mean, std=std)["dice_mean"]
    return {"logme": T.logme(feats, labels), "linear_probe_dice": dice}


def _segmentation_split(target: str, seed: int, num_images: int):
    """(train, val) of the target when it has masks, else None (the label-aware predictors are left out)."""
    from hf_transfer_seg.data.segmentation import split_target
    from hf_transfer_seg.data.registry import load_target

    try:
        seg = load_target(target, limit=num_images)
        train, val, _ = split_target(seg, seed=seed)
        return train, val
    except (DataError, ConfigError, OSError, ValueError) as exc:
        log.info("target %s has no usable masks (%s): label-aware predictors left out", target, redact(exc))
        return None


def score_one(loaded: Loaded, plan: ScoringPlan, cache: dict, *, headline: str, seg, seed: int, pixels_per_class: int,
              size_source: str = "target", **kwargs) -> ModelResult:
    """Grid, label-free and label-aware predictors of one loaded model; failures recorded, not raised.

    Every model sees the plan's views at the plan's size (``--image-size``, else chosen from the target); a model
    that refuses that size (fixed-size position embeddings) at the one size it accepts, flagged ``model``."""
    result = ModelResult(loaded.spec, family=loaded.family)
    start = time.perf_counter()
    try:
        if loaded.error is not None:
            raise loaded.error
        model = loaded.model
        result.description = describe(model)
        side, how = accepted_side(model, plan.image_size)
        result.size_source = size_source if how == "target" else how
        result.input_size = side
        tap = EmbeddingTap(model)
        distances = plan_distances(model, resized_views(plan, side, cache), **kwargs)
        embeddings = tap.matrix(plan.num_images)
        result.deepest = tap.deepest
        parse_config(headline, distances.num_levels)
        result.num_levels = distances.num_levels
        result.scores = grid_scores(distances, plan.weights)
        result.headline_draws = distances.draw_values(parse_config(headline))
        result.headline_values = result.headline_draws.mean(dim=0)
        result.predictors.update(label_free(embeddings))
        try:
            result.predictors.update(label_aware(model.cpu(), seg, side, seed, pixels_per_class))
        except Exception as exc:  # noqa: BLE001 - a label-aware failure does not lose the score
            log.warning("%s: label-aware predictors failed: %s", loaded.spec.spec, redact(exc))
        collapsed = collapse_reason(result)
        if collapsed:
            result.status, result.reason = "collapsed", collapsed
        elif result.deepest and min(result.deepest) < MIN_DEEPEST:
            h, w = result.deepest
            result.status, result.reason = "degenerate", (
                f"its deepest feature map is {h}x{w} at {side} px (below {MIN_DEEPEST}x{MIN_DEEPEST}): the flat score "
                "compares one vector per image and the probe cannot localise, so it is not ranked; pass a larger "
                "--image-size")
    except Exception as exc:  # noqa: BLE001 - any load/forward error of one model: recorded, the run goes on
        result.status, result.reason = "failed", short_reason(exc)
    if result.status in ("collapsed", "degenerate"):
        log.warning("%s: %s", loaded.spec.spec, result.reason)
    elif not result.ok:
        log.warning("%s failed: %s", loaded.spec.spec, result.reason)
    result.seconds = time.perf_counter() - start
    return result


@dataclass
class RankOutcome:
    plan: ScoringPlan
    target: str
    headline: str
    results: list[ModelResult]
    label_aware: bool
    image_size: int | None = None  # --image-size (every model at this size), None: the size chosen from the target
    probe_baseline: float | None = None  # linear-probe Dice of a constant prediction on the validation masks
    table: Any = None  # the rows written (pandas DataFrame)
    results_sha: str | None = None
    card_notes: list[str] = field(default_factory=list)


def run_rank(
    models: list[str],
    target: str,
    *,
    num_images: int = 256,
    seed: int = 0,
    batch_size: int = 32,
    headline: str = HEADLINE,
    image_size: int | None = None,
    device: str | None = None,
    precision: str | None = None,
    split: str = "train",
    image_column: str | None = None,
    use_masks: bool = True,
    pixels_per_class: int = 500,
    progress: bool = True,
    view_draws: int = VIEW_DRAWS,
) -> RankOutcome:
    """Rank ``models`` (SPECs) on ``target``; see the module docstring. Writes nothing."""
    from hf_transfer_seg.data.registry import resolve_target
    from hf_transfer_seg.scoring.runner import default_device

    parse_config(headline)
    specs = list(dict.fromkeys(str(m).strip() for m in models if str(m).strip()))
    if not specs:
        raise ConfigError("--models needs at least one Hub repo id (owner/name or owner/name@revision)")
    for text in specs:
        parse_spec(text)  # a malformed SPEC is the user's to fix before any download
    resolved = [_resolve(text) for text in tqdm(specs, desc="resolve models", unit="model", disable=not progress)]
    results: dict[str, ModelResult] = {}
    usable: list[ModelSpec] = []
    for spec, skip, error, folder in resolved:
        if skip:
            results[spec.spec] = ModelResult(spec, status="skipped", reason=skip)
            log.warning("%s skipped: %s", spec.spec, skip)
        elif error is not None:
            results[spec.spec] = ModelResult(spec, status="failed", reason=short_reason(error))
            log.warning("%s failed: %s", spec.spec, results[spec.spec].reason)
        else:
            usable.append(spec)
    if not usable:  # nothing to score: say which models and why, before loading any image
        raise NothingScored(_nothing_scored(list(results.values())))
    plan = build_plan(  # one resolution for every model, chosen from the target unless --image-size: never a model's
        resolve_target(target, split=split, image_column=image_column), num_images=num_images, seed=seed,
        image_size=image_size, jitter="image", jitter_batch_size=batch_size, progress=progress, view_draws=view_draws,
    )
    seg = _segmentation_split(target, seed, num_images) if use_masks else None
    run_device = torch.device(device) if device else default_device()
    precision = precision or ("bf16" if run_device.type == "cuda" else "fp32")
    cache: dict = {}
    bar = tqdm(usable, desc=f"rank on {plan.target_key}", unit="model", disable=not progress)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as pool:
        upcoming: Future | None = pool.submit(_load, usable[0]) if usable else None
        for i, spec in enumerate(bar):
            loaded = upcoming.result()
            upcoming = pool.submit(_load, usable[i + 1]) if i + 1 < len(usable) else None
            bar.set_postfix_str(spec.spec)
            results[spec.spec] = score_one(
                loaded, plan, cache, headline=headline, seg=seg, seed=seed, pixels_per_class=pixels_per_class,
                batch_size=batch_size, device=run_device, precision=precision, size_source="flag" if image_size else "target",
            )
            del loaded
    ordered = [results[t] for t in specs if t in results]
    if not any(r.scored for r in ordered):
        raise NothingScored(_nothing_scored(ordered))
    ties = model_ties(ordered, plan, seed)
    for r in ordered:
        r.tie = ties.get(r.spec.spec, {})
    return RankOutcome(plan=plan, target=plan.target_key, headline=headline, results=ordered, label_aware=seg is not None,
                       image_size=image_size, probe_baseline=trivial_probe_dice(seg))


def _nothing_scored(results: list[ModelResult]) -> str:
    lines = "; ".join(f"{r.spec.spec}: {r.status} ({r.reason})" for r in results)
    return (f"no model could be scored ({len(results)} given): {lines}. Fix the repo ids / revisions named (or give "
            "a model with safetensors weights) and run the command again; no results were written.")


def model_ties(results: list[ModelResult], plan: ScoringPlan, seed: int) -> dict[str, dict[str, Any]]:
    """Per scored model: ``rank`` by the headline, ``tie`` (best / tied / worse) from the paired analysis of
    :mod:`~hf_transfer_seg.scoring.ties` (all models share the plan's images, views and negatives), ``difference``."""
    scored = [r for r in results if r.ok and r.headline_values is not None]
    if not scored:
        return {}
    key = plan.key()  # one plan, resized per model
    rows = [{"revision": r.spec.spec, "score": float(r.headline_values.mean())} for r in scored]
    per_image = {r.spec.spec: {"plan": key, "values": r.headline_values.tolist(), "draws": r.headline_draws.tolist(),
                               "units": plan.units} for r in scored}
    best = min(rows, key=lambda row: row["score"])
    ties = ties_with_best(rows, best, per_image, seed=seed)
    order = sorted(rows, key=lambda row: row["score"])
    out = {}
    for rank, row in enumerate(order, start=1):
        name, tie = row["revision"], ties[row["revision"]]
        label = "best" if row is best else ("tied" if tie["tied"] else "worse")
        out[name] = {"rank": rank, "tie": label, "difference": tie["difference"]}
    return out


def directions() -> dict[str, bool]:
    """Lower-is-better flag of every predictor ``rank`` writes (robustness configurations: lower)."""
    return {**LABEL_FREE, **LABEL_AWARE}

