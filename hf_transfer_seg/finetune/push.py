"""Push segmentation models with their cards; record downstream Dice in the encoder revision's card.

A pushed segmentation model is ``config.json`` + ``model.safetensors`` (written by
:func:`hf_transfer_seg.models.segmentation.save_segmentation_model`, which also loads it back) + a card.
"""

from __future__ import annotations

import logging
import math
import tempfile
from typing import Any

import numpy as np
from huggingface_hub import ModelCard, ModelCardData

from hf_transfer_seg import __version__
from hf_transfer_seg.cards import drop_results, get_namespace, render_card, replace_section, set_namespace, upsert_eval_result
from hf_transfer_seg.cards import schema
from hf_transfer_seg.cards.license import apply_license, choose_license
from hf_transfer_seg.cards.schema import downstream_key, metric_config
from hf_transfer_seg.models.segmentation import save_segmentation_model

log = logging.getLogger(__name__)

TEMPLATE = "segmentation_model.md"


# ----------------------------------------------------------------------------------- card rendering


def _fmt(value: Any, digits: int = 4) -> str:
    return schema.fmt(value, digits, missing="n/a")


def data_statement(target: dict[str, Any]) -> str:
    kind = "SYNTHETIC" if target.get("synthetic") else "real"
    return f"{kind} images: {target.get('description') or target.get('source')}"


def results_markdown(metrics: dict[str, Any]) -> str:
    unit = metrics.get("distance_unit") or metrics.get("hd95_unit", "px")
    lines = [
        "## Validation results",
        "",
        f"Mean over foreground classes: Dice **{_fmt(metrics.get('dice_mean'))}**, IoU {_fmt(metrics.get('iou_mean'))}, "
        f"HD95 {_fmt(metrics.get('hd95_mean'), 2)} {unit}, average surface distance "
        f"{_fmt(metrics.get('asd_mean'), 2)} {unit} ({metrics.get('num_images', 0)} images; "
        "MONAI's definitions, see below).",
        "",
        f"| class | Dice | IoU | HD95 ({unit}) | ASD | images with HD95 |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in (metrics.get("per_class") or {}).items():
        lines.append(f"| {name} | {_fmt(row.get('dice'))} | {_fmt(row.get('iou'))} | {_fmt(row.get('hd95'), 2)} | "
                     f"{_fmt(row.get('asd'), 2)} | {row.get('hd95_images', 0)} |")
    return "\n".join(lines + baselines_markdown(metrics))


def baselines_markdown(metrics: dict[str, Any]) -> list[str]:
    """The trivial predictions on the same validation images, and the warnings they raise."""
    b = metrics.get("baselines")
    if not b:
        return []
    fractions = ", ".join(f"{name} {fraction:.1%}" for name, fraction in (b.get("class_fraction") or {}).items())
    lines = [
        "",
        f"Trivial predictions on the same validation images (pixel shares: {fractions}); a model must beat them. "
        f"{b.get('hd95_note', '')}.",
        "",
        "| prediction | Dice | IoU |",
        "|---|---|---|",
        f"| this model | {_fmt(metrics.get('dice_mean'))} | {_fmt(metrics.get('iou_mean'))} |",
        f"| all background | {_fmt(b['all_background'].get('dice_mean'))} | {_fmt(b['all_background'].get('iou_mean'))} |",
        f"| all foreground ({b['all_foreground'].get('what', 'every pixel foreground')}) | "
        f"{_fmt(b['all_foreground'].get('dice_mean'))} | {_fmt(b['all_foreground'].get('iou_mean'))} |",
        f"| majority class ({b['majority_class'].get('class')}) | {_fmt(b['majority_class'].get('dice_mean'))} | "
        f"{_fmt(b['majority_class'].get('iou_mean'))} |",
    ]
    lines += [f"\n**Warning:** {w}." for w in metrics.get("warnings") or []]
    return lines


def recipe_markdown(recipe: dict[str, Any]) -> str:
    return "\n".join(f"- {k}: `{v}`" for k, v in recipe.items())


def segmentation_card(result, repo_id: str, *, revision: str | None = None) -> ModelCard:
    """The card of a pushed segmentation model (``model_cards/segmentation_model.md``)."""
    from hf_transfer_seg.finetune.loop import FinetuneResult

    assert isinstance(result, FinetuneResult)
    enc, target, metrics = result.encoder, result.target, result.metrics
    frozen = result.config.freeze_encoder
    key = target["key"]
    data = ModelCardData(
        base_model=enc.get("repo") or None,
        tags=[schema.SEGMENTATION_TASK, "medical-imaging", "unet", "segmentation-models-pytorch", "timm", "hf-transfer-seg"]
        + (["synthetic-data"] if target.get("synthetic") else []),
        pipeline_tag=schema.SEGMENTATION_TASK,
        library_name="segmentation-models-pytorch",
        datasets=[target["source"].split(":", 1)[1].split("@")[0]] if target["source"].startswith("hub-dataset:") else None,
        model_name=repo_id.split("/")[-1],
    )
    for metric_type, value in (("dice", metrics.get("dice_mean")), ("iou", metrics.get("iou_mean")), (f"hd95_{metrics.get('hd95_unit', 'px')}", metrics.get("hd95_mean"))):
        if value is not None:
            upsert_eval_result(data, schema.segmentation_result(key, metric_type, value, frozen=frozen))
    set_namespace(data, schema.BASE, {"repo": enc.get("repo"), "revision": enc.get("revision"), "sha": enc.get("sha"), "architecture": enc.get("architecture")})
    set_namespace(data, schema.TARGET, target)
    set_namespace(data, schema.RECIPE, result.config.recipe())
    set_namespace(data, schema.SEED, result.config.seed)
    set_namespace(data, schema.METRICS, metrics)
    set_namespace(data, schema.SPLIT, result.split)
    set_namespace(data, schema.SYNTHETIC, bool(target.get("synthetic")))
    set_namespace(data, schema.CODE_VERSION, __version__)
    from hf_transfer_seg.redact import redact

    endpoint = redact(_endpoint())
    card = render_card(
        TEMPLATE, data,
        title=f"U-Net for {key} on {enc.get('repo') or enc.get('architecture')}@{enc.get('revision') or 'local'}",
        target_key=key, num_classes=target["num_classes"], class_names=target["class_names"],
        base_model=enc.get("repo") or "(local checkpoint)", base_url=f"{endpoint}/{enc.get('repo')}" if enc.get("repo") else "#",
        base_revision=enc.get("revision"), base_sha=enc.get("sha"), architecture=enc.get("architecture"),
        data_statement=data_statement(target), repo_id=repo_id, revision=revision,
        mean=[round(v, 4) for v in result.model.mean.flatten().tolist()], std=[round(v, 4) for v in result.model.std.flatten().tolist()],
        image_size=result.config.image_size, results_markdown=results_markdown(metrics),
        recipe_markdown=recipe_markdown(result.config.recipe()), num_val=len(result.split["val"]),
        num_images=len(result.split["val"]) + len(result.split["train"]), split_seed=result.split["seed"],
        seed=result.config.seed, code_version=__version__,
    )
    return apply_license(card, choose_license(**base_license(enc)))


def base_license(enc: dict[str, Any]) -> dict[str, str | None]:
    """``base``/``base_name`` of :func:`choose_license`: the license of the encoder revision's card, when readable."""
    if not enc.get("repo") or not enc.get("sha"):
        return {}
    from hf_transfer_seg import hub

    try:
        data = hub.card_at_sha(enc["repo"], enc["sha"]).data
    except Exception as exc:  # noqa: BLE001 - an unreadable base card only loses the inherited license
        log.info("license of %s@%s not readable (%s); using the default", enc["repo"], str(enc["sha"])[:10], exc)
        return {}
    lic = data.license if isinstance(data.license, str) else None
    return {"base": lic, "base_name": getattr(data, "license_name", None)} if lic else {}


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT.rstrip("/")


def check_push_target(repo_id: str) -> None:
    """Prove now, before training, that ``repo_id`` can be written, without leaving an empty repo behind.

    The only check that works on the Hub and on the local hub alike creates the repo and a scratch branch
    (:func:`hf_transfer_seg.hub.check_write_access`); a repo that did not exist before is deleted again, so an
    interrupted fine-tune leaves nothing. :func:`push_segmentation_model` creates it when there is a model to push.
    """
    from huggingface_hub import HfApi

    from hf_transfer_seg import hub

    api = HfApi()
    existed = hub.with_retries(lambda: api.repo_exists(repo_id), what=f"look up {repo_id}")
    hub.check_write_access(repo_id, api=api)
    if not existed:
        from huggingface_hub.errors import HfHubHTTPError

        try:
            api.delete_repo(repo_id, missing_ok=True)
        except HfHubHTTPError as exc:  # a token that may create but not delete: the empty repo stays, said once
            from hf_transfer_seg.redact import redact

            log.warning("could not remove the empty repo %s that the write check created (%s); it receives the model "
                        "when training ends, or delete it if the run is abandoned", repo_id, redact(exc))


def push_segmentation_model(result, repo_id: str, *, revision: str | None = None) -> dict[str, str]:
    """Push the model of ``result`` with its card to ``repo_id`` (branch ``revision``, default main)."""
    from huggingface_hub import HfApi

    from hf_transfer_seg import hub

    api = HfApi()
    hub.ensure_repo(repo_id, api=api)
    if revision and revision != "main":
        hub.with_retries(lambda: api.create_branch(repo_id, branch=revision, exist_ok=True), what=f"create branch {revision}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_segmentation_model(
            result.model, tmp,
            extra={"base_model": result.encoder.get("repo"), "base_revision": result.encoder.get("revision"),
                   "base_sha": result.encoder.get("sha"), "target": result.target["key"], "seed": result.config.seed},
        )
        segmentation_card(result, repo_id, revision=revision).save(folder / "README.md")
        hub.with_retries(
            lambda: api.upload_folder(
                repo_id=repo_id, folder_path=folder, revision=revision,
                commit_message=f"U-Net for {result.target['key']} from {result.encoder.get('repo')}@{result.encoder.get('revision')} (seed {result.config.seed})",
            ),
            what=f"upload segmentation model to {repo_id}",
        )
    sha = hub.branch_sha(repo_id, revision or "main")
    log.info("pushed segmentation model %s@%s (commit %s)", repo_id, revision or "main", sha)
    return {"repo": repo_id, "revision": revision or "main", "sha": sha}


# ------------------------------------------------------------------------ the encoder revision's card


def run_record(result, seg_push: dict[str, str] | None = None) -> dict[str, Any]:
    """One fine-tuning run, as stored in the encoder card's downstream entry."""
    per_class = {name: row.get("dice") for name, row in (result.metrics.get("per_class") or {}).items()}
    record = {
        "seed": int(result.config.seed),
        "dice": result.metrics.get("dice_mean"),
        "iou": result.metrics.get("iou_mean"),
        "hd95": result.metrics.get("hd95_mean"),
        "hd95_unit": result.metrics.get("hd95_unit", "px"),
        "dice_per_class": per_class,
        **({"distance_unit": result.metrics["distance_unit"]} if result.metrics.get("distance_unit") else {}),
        **({"baselines": baseline_dice(result.metrics)} if result.metrics.get("baselines") else {}),
    }
    if seg_push:
        record["seg_repo"] = f"{seg_push['repo']}@{seg_push['revision']}"
    return record


def baseline_dice(metrics: dict[str, Any]) -> dict[str, Any]:
    """The trivial predictions' mean Dice (and the majority class's name), as stored beside each run's Dice."""
    b = metrics["baselines"]
    return {
        "all_background": b["all_background"].get("dice_mean"), "all_foreground": b["all_foreground"].get("dice_mean"),
        "majority_class": b["majority_class"].get("dice_mean"), "majority_class_name": b["majority_class"].get("class"),
    }


def _mean(values: list[float | None]) -> float | None:
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(values)) if values else None


def merge_run(entry: dict[str, Any] | None, run: dict[str, Any], *, recipe: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    """Downstream entry with ``run`` added (replacing the same seed); a different recipe starts afresh."""
    runs = []
    if entry and entry.get("recipe") == recipe:
        runs = [r for r in entry.get("runs") or [] if int(r.get("seed", -1)) != run["seed"]]
    elif entry:
        log.warning("downstream entry for %s had another recipe; replacing it", target.get("key"))
    runs = sorted(runs + [run], key=lambda r: r["seed"])
    dice = [r["dice"] for r in runs if r.get("dice") is not None]
    classes = list(dict.fromkeys(c for r in runs for c in (r.get("dice_per_class") or {})))
    entry = {
        "dice_mean": _mean(dice),
        "dice_std": float(np.std(dice, ddof=1)) if len(dice) > 1 else 0.0 if dice else None,
        "iou_mean": _mean([r.get("iou") for r in runs]),
        "hd95_mean": _mean([r.get("hd95") for r in runs]),
        "hd95_unit": runs[-1].get("hd95_unit", "px"),
        "dice_per_class": {c: _mean([(r.get("dice_per_class") or {}).get(c) for r in runs]) for c in classes},
        "seeds": [r["seed"] for r in runs],
        "frozen": bool(recipe.get("frozen")),
        "epochs": recipe.get("epochs"),
        "recipe": recipe,
        "target": {k: target.get(k) for k in ("key", "source", "num_classes", "class_names", "synthetic")},
        "synthetic": bool(target.get("synthetic")),
        "runs": runs,
        "code_version": __version__,
    }
    seg = [r["seg_repo"] for r in runs if r.get("seg_repo")]
    if seg:
        entry["seg_repo"] = seg[-1]
    if runs[-1].get("distance_unit"):
        entry["distance_unit"] = runs[-1]["distance_unit"]
    if runs[-1].get("baselines"):  # the validation images are fixed by split_seed: one floor for every seed
        entry["baselines"] = runs[-1]["baselines"]
    return entry


def downstream_markdown(namespace: dict[str, Any]) -> str:
    """The managed ``downstream`` section of a revision card, from its ``hf_transfer_seg`` mapping."""
    downstream = namespace.get(schema.DOWNSTREAM) or {}
    lines = [
        "## Downstream: U-Nets fine-tuned from this checkpoint",
        "",
        "Results of U-Nets fine-tuned from this checkpoint (hf-transfer-seg finetune/sweep), not of this encoder itself; "
        "Dice over foreground classes on the validation split, mean ± std over seeds. Each U-Net's own card holds its "
        "figures (and its model-index entry when the data is a Hub dataset); here they are under "
        "`hf_transfer_seg.downstream`, not in this card's model-index.",
        "",
        "| target | encoder | data | seeds | Dice | best trivial Dice | IoU | HD95 | epochs | model |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, e in sorted(downstream.items()):
        std = e.get("dice_std")
        lines.append(
            f"| {key.split('@')[0]} | {'frozen' if e.get('frozen') else 'fine-tuned'} | "
            f"{'SYNTHETIC' if e.get('synthetic') else 'real'} | {len(e.get('seeds') or [])} | "
            f"{_fmt(e.get('dice_mean'))}{' ± ' + _fmt(std) if std else ''} | {_trivial(e.get('baselines'))} | {_fmt(e.get('iou_mean'))} | "
            f"{_fmt(e.get('hd95_mean'), 2)} {e.get('distance_unit') or e.get('hd95_unit', 'px')} | {e.get('epochs')} | {e.get('seg_repo') or ''} |"
        )
    transfer = namespace.get(schema.TRANSFERABILITY) or {}
    if transfer:
        lines += [
            "",
            "Label-aware transferability of the frozen features (class-balanced sampled pixels; higher is better):",
            "",
            "| target | LogME | linear-probe Dice | level | pixels |",
            "|---|---|---|---|---|",
        ]
        for key, t in sorted(transfer.items()):
            lines.append(f"| {key} | {_fmt(t.get('logme'))} | {_fmt(t.get('linear_probe_dice'))} | {t.get('level')} | {t.get('pixels')} |")
    return "\n".join(lines)


def _trivial(baselines: dict[str, Any] | None) -> str:
    """The strongest constant prediction of a downstream entry, e.g. ``0.873 (all foreground)``."""
    from hf_transfer_seg.metrics.baselines import best_baseline

    name, value = best_baseline(baselines)
    return "n/a" if value is None else f"{_fmt(value)} ({name.replace('_', ' ')})"


def apply_downstream(card: ModelCard, key: str, entry: dict[str, Any], *, model_name: str) -> ModelCard:
    """``card`` with downstream entry ``key`` set and the managed ``downstream`` section (no model-index entry)."""
    downstream = get_namespace(card.data, schema.DOWNSTREAM, {}) or {}
    downstream[key] = entry
    set_namespace(card.data, schema.DOWNSTREAM, downstream)
    # A Dice measures the U-Net fine-tuned from this encoder, not the encoder: it belongs to the segmentation
    # model's card. Here it stays in ``hf_transfer_seg.downstream`` and the Downstream section; entries older
    # versions wrote into this card's model-index are removed.
    drop_results(card.data, lambda r: r.task_type != schema.SEGMENTATION_TASK)
    card.text = replace_section(card.text or "", schema.SECTION_DOWNSTREAM, downstream_markdown(get_namespace(card.data)))
    return card


def apply_transferability(card: ModelCard, target_key: str, values: dict[str, Any]) -> ModelCard:
    """``card`` with ``hf_transfer_seg.transferability[target_key]`` set and the ``downstream`` section redrawn."""
    transfer = get_namespace(card.data, schema.TRANSFERABILITY, {}) or {}
    transfer[target_key] = {**values, "code_version": __version__}
    set_namespace(card.data, schema.TRANSFERABILITY, transfer)
    card.text = replace_section(card.text or "", schema.SECTION_DOWNSTREAM, downstream_markdown(get_namespace(card.data)))
    return card


def seeds_done(card: ModelCard, key: str, recipe: dict[str, Any]) -> set[int]:
    """Seeds already recorded in the card's downstream entry ``key`` with this exact recipe."""
    entry = (get_namespace(card.data, schema.DOWNSTREAM, {}) or {}).get(key) or {}
    if entry.get("recipe") != recipe:
        return set()
    return {int(r["seed"]) for r in entry.get("runs") or [] if r.get("dice") is not None}


def record_downstream(result, *, seg_push: dict[str, str] | None = None) -> str | None:
    """Add this run's Dice to ``hf_transfer_seg.downstream`` of the encoder revision's card; return the commit sha."""
    from hf_transfer_seg import hub

    repo, revision = result.encoder.get("repo"), result.encoder.get("revision")
    if not repo:
        return None
    run = run_record(result, seg_push)
    key = downstream_key(result.target["key"], result.config.freeze_encoder)
    recipe = result.config.recipe()

    def edit(card: ModelCard) -> ModelCard:
        entry = merge_run((get_namespace(card.data, schema.DOWNSTREAM, {}) or {}).get(key), run, recipe=recipe, target=result.target)
        return apply_downstream(card, key, entry, model_name=repo.split("/")[-1])

    return hub.update_card(
        repo, revision, edit,
        commit_message=f"Downstream Dice on {result.target['key']} ({metric_config(result.config.freeze_encoder)}, seed {result.config.seed})",
    )
