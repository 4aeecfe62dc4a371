"""Model cards of pretraining: one per checkpoint revision, and main's summary of all checkpoints.

Revision card (branch ``epoch-NNNN``): YAML ``library_name: timm``, tags, datasets (Hub datasets only),
``hf_transfer_seg.training`` (facts of that checkpoint) and validation top-1/top-5 as model-index results;
text from ``model_cards/encoder_revision.md`` with the managed section ``training``.
Summary card (``main``): ``hf_transfer_seg.checkpoints`` (one row per pushed revision, in epoch order) and the
managed section ``checkpoints``; keys and sections other tools maintain are left alone.
Accuracies are percentages (0-100). Both carry a ``license`` (:mod:`hf_transfer_seg.cards.license`: the
``--license`` setting, else the license of a built-in training set (synthetic, digits), else ``other``/``not-set``
with a section saying what to set).
"""

from __future__ import annotations

import copy
import os
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from hf_transfer_seg.cards import get_namespace, render_card, replace_section, schema, set_namespace, upsert_eval_result
from hf_transfer_seg.cards.license import ENV as LICENSE_ENV, apply_license, choose_license

REPO_NAME_PLACEHOLDER = "<your-repo>"
REPO_PLACEHOLDER = f"<your-namespace>/{REPO_NAME_PLACEHOLDER}"
SUMMARY_ROW_KEYS = ("top1", "top5", "top1_dataset", "train_loss", "global_step", "images_seen", "wall_clock_hours")


def top1_of(facts: dict[str, Any], k: int = 1) -> Any:
    """Validation top-k (%), from ``top{k}`` (or the older ``imagenet_top{k}``)."""
    return facts.get(f"top{k}", facts.get(f"imagenet_top{k}"))


def _tags(facts: dict[str, Any]) -> list[str]:
    tags = ["timm", schema.CLASSIFICATION_TASK, "hf-transfer-seg", "pretraining-checkpoint", f"recipe-{facts['recipe']}"]
    tags.append("synthetic-data" if facts.get("synthetic") else "real-data")
    return tags


def _card_data(repo_id: str | None, facts: dict[str, Any]) -> ModelCardData:
    data = ModelCardData(
        library_name="timm",
        pipeline_tag=schema.CLASSIFICATION_TASK,
        tags=_tags(facts),
        datasets=[facts["dataset"]] if facts.get("dataset_kind") == "hub" else None,
        model_name=(repo_id or REPO_PLACEHOLDER).split("/")[-1],
    )
    return data


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{value:.2f}%"


def _lr_note(facts: dict[str, Any]) -> str:
    """Say when the LR is not the paper's linear scaling (4e-3 x batch / 4096)."""
    batch, lr = facts.get("batch_size"), facts.get("peak_lr")
    if not batch or not lr:
        return ""
    paper = 4e-3 * float(batch) / 4096
    if abs(float(lr) - paper) <= 1e-3 * paper:
        return " (the paper's linear scaling)"
    return f" (set explicitly; the paper's linear scaling 4e-3 x {batch}/4096 would give {paper:.2g})"


def training_table(facts: dict[str, Any]) -> str:
    rows = [
        ("Epoch", f"{facts['epoch']:g}"),
        ("Optimizer steps", facts["global_step"]),
        ("Images seen", facts["images_seen"]),
        (f"Validation top-1 ({facts.get('top1_dataset') or facts.get('dataset')})", _pct(top1_of(facts))),
        ("Validation top-5", _pct(top1_of(facts, 5))),
        ("Train loss (since previous checkpoint)", "n/a" if facts.get("train_loss") is None else f"{facts['train_loss']:.4f}"),
        ("Recipe", facts["recipe"]),
        ("Dataset", f"{facts['dataset']} ({'synthetic' if facts.get('synthetic') else 'real'})"),
        ("Unreadable images skipped", facts.get("skipped_images", 0)),
        ("Global batch / peak LR", f"{facts.get('batch_size')} / {facts.get('peak_lr', 0):.3g}{_lr_note(facts)}"),
        ("Processes", facts.get("num_processes")),
        ("Wall-clock hours", f"{facts.get('wall_clock_hours', 0):.3f}"),
        ("Code version", facts.get("code_version")),
    ]
    lines = ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


def accuracy_results(facts: dict[str, Any]) -> list[EvalResult]:
    results = []
    for k, name in ((1, "top-1"), (5, "top-5")):
        if top1_of(facts, k) is None:
            continue
        results.append(schema.accuracy_result(facts["dataset"], name, top1_of(facts, k)))
    return results


def revision_card(repo_id: str | None, revision: str, facts: dict[str, Any]) -> ModelCard:
    """The card of one checkpoint revision (``facts`` become ``hf_transfer_seg.training``)."""
    data = _card_data(repo_id, facts)
    set_namespace(data, schema.TRAINING, copy.deepcopy(facts))
    for result in accuracy_results(facts):
        upsert_eval_result(data, result, model_name=data.model_name)
    mean, std = facts.get("mean"), facts.get("std")
    card = render_card(
        "encoder_revision.md",
        data,
        repo_id=repo_id or REPO_PLACEHOLDER,
        repo_name=(repo_id or REPO_PLACEHOLDER).split("/")[-1],
        revision=revision,
        epoch_label=f"{facts['epoch']:g}",
        synthetic=bool(facts.get("synthetic")),
        dataset=facts["dataset"],
        encoder=facts["encoder"],
        recipe=facts["recipe"],
        global_step=facts["global_step"],
        images_seen=facts["images_seen"],
        mean=list(mean or ()),
        std=list(std or ()),
        normalization_note="the paper's choice: divide by 255 only" if facts.get("normalize") == "none" else "ImageNet statistics",
        image_size=facts.get("image_size"),
        training_table=training_table(facts),
    )
    return apply_license(card, card_license(facts))


CARD_FAILED_TAG = "card-failed"
# What push-pending and main's summary row read from a revision card's facts; a fallback card always has them.
_FALLBACK_KEYS = ("epoch", "global_step", "images_seen", "recipe", "dataset", "dataset_kind", "encoder", "synthetic")


def checked_text(card: ModelCard, where: str) -> str:
    """The card as it will be written, proved readable the way ``push-pending`` reads it (safe YAML): a value the
    card cannot hold (an object, a numpy scalar from a callback) fails here, not at the push."""
    from hf_transfer_seg.safe_yaml import load_card

    where_bad = _not_plain(card.data.to_dict())
    if where_bad is not None:
        path, value = where_bad
        raise ValueError(f"{where}: the metadata value {path} is a {type(value).__module__}.{type(value).__qualname__}, "
                         "not plain data (text, number, true/false, list or mapping)")
    text = str(card)
    load_card(text, where=where)
    return text


def _not_plain(value: Any, path: str = "") -> tuple[str, Any] | None:
    """The dotted path and value of the first value in card metadata that YAML cannot write as plain data."""
    if isinstance(value, dict):
        for key, item in value.items():
            found = _not_plain(key, path) or _not_plain(item, f"{path}.{key}".lstrip("."))
            if found is not None:
                return found
        return None
    if isinstance(value, (list, tuple)):
        return next((f for i, item in enumerate(value) if (f := _not_plain(item, f"{path}[{i}]")) is not None), None)
    return None if value is None or type(value) in (str, int, float, bool) else (path or "(a key)", value)


def _plain(value: Any) -> Any:
    """``value`` with only JSON types (anything else as its text): what a fallback card can always hold."""
    import json

    return json.loads(json.dumps(value, default=str))


def fallback_card(repo_id: str | None, revision: str, facts: dict[str, Any], failure: str) -> str:
    """A minimal, valid card for a checkpoint whose card failed to build (text, checked like any card).

    It states the failure (``failure``: one line, tokens and local paths already removed) and keeps the training
    facts that are plain data (the summary row and ``push-pending`` read them); never the callbacks' extras."""
    safe = {k: facts.get(k) for k in _FALLBACK_KEYS}
    safe["epoch"] = float(facts.get("epoch") or 0)
    for key in ("recipe", "dataset", "encoder"):
        safe[key] = str(safe[key] or "unknown")
    name = (repo_id or REPO_PLACEHOLDER).split("/")[-1]
    said = failure.replace("`", "'")  # shown as code: no Markdown or HTML of the message is rendered
    text = (
        f"# {name} @ `{revision}`\n\n**The full card of this checkpoint could not be built:** `{said}`\n\n"
        "Its weights (`model.safetensors`) and `config.json` are complete, in timm's format. This minimal card keeps its "
        "training facts under `hf_transfer_seg.training`; the table, accuracy results and callback metadata of the "
        "full card are missing.\n"
    )
    try:  # every fact when they are plain data, else only the few the push needs
        return _minimal_card(name, revision, _plain({**facts, **safe}), text, facts)
    except Exception:  # noqa: BLE001
        return _minimal_card(name, revision, _plain(safe), text, facts)


def _minimal_card(name: str, revision: str, training: dict[str, Any], text: str, facts: dict[str, Any]) -> str:
    data = ModelCardData(library_name="timm", pipeline_tag=schema.CLASSIFICATION_TASK, model_name=name,
                         tags=["timm", "hf-transfer-seg", "pretraining-checkpoint", CARD_FAILED_TAG])
    set_namespace(data, schema.TRAINING, training)
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n{text}")
    try:
        card = apply_license(card, card_license(facts))
    except Exception:  # noqa: BLE001 - the license was checked at start; a card without one is still valid
        pass
    return checked_text(card, f"the fallback card of {revision}")


BUILT_IN_KINDS = ("synthetic", "bundled")  # data.classification: generated, or shipped inside a package (digits)


def card_license(facts: dict[str, Any]):
    """The license of a checkpoint's cards: the setting, else its built-in training set's, else the stated default."""
    builtin = facts.get("dataset") if facts.get("dataset_kind") in BUILT_IN_KINDS else None
    return choose_license(data=builtin)


def _deep_merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_extra(card: ModelCard, extra: dict[str, Any]) -> ModelCard:
    """Merge what ``on_checkpoint`` callbacks returned into a revision card; return the card.

    ``eval_results`` (EvalResult list) are upserted into model-index, ``sections`` (name -> Markdown) replace
    managed sections, ``card_edit`` callables edit the card last, every other key is deep-merged into the
    ``hf_transfer_seg`` mapping.
    """
    extra = dict(extra)
    edits = extra.pop("card_edit", None) or []
    for result in extra.pop("eval_results", None) or []:
        upsert_eval_result(card.data, result)
    for name, markdown in (extra.pop("sections", None) or {}).items():
        card.text = replace_section(card.text, name, markdown)
    for key, value in extra.items():
        current = get_namespace(card.data, key)
        merged = _deep_merge(current, value) if isinstance(current, dict) and isinstance(value, dict) else value
        set_namespace(card.data, key, merged)
    for edit in edits if isinstance(edits, (list, tuple)) else [edits]:
        card = edit(card) or card
    return card


def set_repo_id(card_text: str, repo_id: str) -> str:
    """Fill the repository id into a card written before it was known (a run without --repo-id)."""
    return card_text.replace(REPO_PLACEHOLDER, repo_id).replace(REPO_NAME_PLACEHOLDER, repo_id.split("/")[-1])


def summary_row(revision: str, sha: str, facts: dict[str, Any]) -> dict[str, Any]:
    row = {"revision": revision, "epoch": facts["epoch"], "sha": sha}
    row.update({k: facts.get(k) for k in SUMMARY_ROW_KEYS})
    return row


def checkpoints_table(rows: list[dict[str, Any]], repo_id: str, latest: str | None = None) -> str:
    if not rows:
        return "No checkpoint pushed yet."
    lines = [f"`main` holds the weights of `{latest}`.", ""] if latest else []
    lines += [
        "| Revision | Epoch | Steps | Images seen | Val top-1 | Val top-5 | Train loss | Commit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        loss = "n/a" if r.get("train_loss") is None else f"{r['train_loss']:.4f}"
        lines.append(
            f"| [`{r['revision']}`](https://huggingface.co/{repo_id}/tree/{r['revision']}) | {r['epoch']:g} | "
            f"{r.get('global_step')} | {r.get('images_seen')} | {_pct(top1_of(r))} | "
            f"{_pct(top1_of(r, 5))} | {loss} | `{str(r['sha'])[:10]}` |"
        )
    return "\n".join(lines)


def edit_summary(card: ModelCard, row: dict[str, Any], facts: dict[str, Any], repo_id: str, *, latest: bool) -> ModelCard:
    """Main's card with ``row`` upserted into ``hf_transfer_seg.checkpoints`` (a pure function of ``card``)."""
    ours = get_namespace(card.data)
    fresh = not card.text.strip() or card.data.library_name is None
    if fresh:
        # first checkpoint of the repo: start from the template, keeping any metadata already there
        data = _card_data(repo_id, facts)
        for key, value in ours.items():
            set_namespace(data, key, value)
        card = render_card(
            "encoder_summary.md",
            data,
            repo_id=repo_id,
            repo_name=repo_id.split("/")[-1],
            synthetic=bool(facts.get("synthetic")),
            dataset=facts["dataset"],
            encoder=facts["encoder"],
            recipe=facts["recipe"],
        )
    rows = [r for r in get_namespace(card.data, schema.CHECKPOINTS, []) or [] if r.get("revision") != row["revision"]]
    rows = sorted(rows + [row], key=lambda r: float(r["epoch"]))
    set_namespace(card.data, schema.CHECKPOINTS, rows)
    if latest:
        set_namespace(card.data, schema.LATEST_REVISION, row["revision"])
    if facts.get("synthetic") and "synthetic-data" not in (card.data.tags or []):
        card.data.tags = list(card.data.tags or []) + ["synthetic-data"]
    if fresh or card.data.license is None or os.environ.get(LICENSE_ENV):  # a license set by hand stays
        card = apply_license(card, card_license(facts))
    latest_name = get_namespace(card.data, schema.LATEST_REVISION)
    card.text = replace_section(card.text, schema.SECTION_CHECKPOINTS, checkpoints_table(rows, repo_id, latest_name))
    return card
