"""Main's card: ``hf_transfer_seg.downstream_summary`` and the managed section ``downstream``.

Rows are rebuilt from the revision cards (the source of truth), so any number of sweeps may run; the
last writer's summary holds every revision recorded so far. The Dice-vs-epoch plot is committed as
``plots/downstream_<target>.png`` (:func:`hf_transfer_seg.cards.schema.plot_path`) in the same commit and embedded in the section.
"""

from __future__ import annotations

import logging
from typing import Any

from huggingface_hub import ModelCard

from hf_transfer_seg.cards import get_namespace, replace_section, schema, set_namespace
from hf_transfer_seg.cards.schema import downstream_key, number
from hf_transfer_seg.plotting import new_figure, png_bytes
from hf_transfer_seg.report.table import table_from_cards

log = logging.getLogger(__name__)

SECTION = schema.SECTION_DOWNSTREAM


def summary_entry(df, key: str) -> dict[str, Any]:
    """downstream_summary entry from an analysis table built from the cards."""
    rows = []
    for _, r in df.sort_values("epoch").iterrows():
        row = {"revision": r["revision"], "epoch": float(r["epoch"]), "sha": r["sha"],
               "dice_mean": number(r.get("dice")), "dice_std": number(r.get("dice_std"))}
        for extra in ("logme", "linear_probe_dice", "trivial_dice"):
            if extra in r and number(r[extra]) is not None:
                row[extra] = number(r[extra])
        if isinstance(r.get("trivial_baseline"), str):
            row["trivial_baseline"] = r["trivial_baseline"]
        rows.append(row)
    scored = [r for r in rows if r["dice_mean"] is not None]
    best = max(scored, key=lambda r: r["dice_mean"]) if scored else None
    return {
        "frozen": key.endswith(schema.FROZEN_SUFFIX),
        "rows": rows,
        "best_revision": best["revision"] if best else None,
        "best_sha": best["sha"] if best else None,
        "best_dice": best["dice_mean"] if best else None,
        "synthetic": bool(df["target_synthetic"].fillna(False).any()) if "target_synthetic" in df else None,
        "pretraining_synthetic": bool(df["pretrain_synthetic"].fillna(False).any()) if "pretrain_synthetic" in df else None,
    }


def main_section(summary: dict[str, Any]) -> str:
    lines = ["## Downstream segmentation", "",
             "Dice of U-Nets fine-tuned from each checkpoint revision (mean ± std over seeds, validation split)."]
    for key, entry in sorted(summary.items()):
        pre = {True: "SYNTHETIC", False: "real"}.get(entry.get("pretraining_synthetic"), "not recorded")
        lines += ["", f"### Target `{key}` ({'frozen' if entry.get('frozen') else 'fine-tuned'} encoder)", "",
                  f"Target data: {'SYNTHETIC' if entry.get('synthetic') else 'real'}; pretraining data: {pre}.", "",
                  "| revision | epoch | Dice | ± | best trivial Dice | commit (short) |", "|---|---|---|---|---|---|"]
        for r in entry.get("rows") or []:
            dice = "n/a" if r.get("dice_mean") is None else f"{r['dice_mean']:.4f}"
            std = "" if not r.get("dice_std") else f"{r['dice_std']:.4f}"
            lines.append(f"| {r['revision']} | {r['epoch']:g} | {dice} | {std} | {_trivial_cell(r)} | `{(r.get('sha') or '')[:10]}` |")
        if entry.get("best_revision"):
            lines += ["", f"Best Dice: **{entry['best_revision']}** ({entry['best_dice']:.4f})."]
            best = next((r for r in entry.get("rows") or [] if r["revision"] == entry["best_revision"]), {})
            if best.get("trivial_dice") is not None and entry["best_dice"] <= best["trivial_dice"]:
                lines += ["", f"**Warning:** Dice here is not evidence of learning: the best Dice ({entry['best_dice']:.4f}) does not "
                          f"beat a constant prediction on the same images ({_trivial_cell(best)})."]
        lines += ["", f"![Dice vs epoch on {key}]({schema.plot_path(schema.DOWNSTREAM, key)})"]
    return "\n".join(lines)


def _trivial_cell(row: dict[str, Any]) -> str:
    """``0.8730 (all-foreground)``: a row's best constant prediction on the same images, ``n/a`` when not recorded."""
    if row.get("trivial_dice") is None:
        return "n/a"
    name = row.get("trivial_baseline")
    return f"{row['trivial_dice']:.4f}" + (f" ({name.replace('_', '-')})" if name else "")


def plot_png(df, key: str) -> bytes:
    fig, ax = new_figure((6, 3.5))
    g = df.dropna(subset=["dice"]).sort_values("epoch")
    ax.errorbar(g["epoch"], g["dice"], yerr=g["dice_std"] if "dice_std" in g else None, marker="o", capsize=3)
    if len(g) and g["epoch"].max() > 20:
        ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("pretraining epoch")
    ax.set_ylabel("Dice (validation)")
    ax.set_title(f"Downstream Dice on {key}", fontsize=10)
    ax.grid(alpha=0.3)
    return png_bytes(fig)


def update_main_summary(repo_id: str, target_key: str, *, frozen: bool = False) -> dict[str, Any]:
    """Rebuild ``downstream_summary[key]`` of main's card from the revision cards; commit it with its plot."""
    from hf_transfer_seg import hub

    key = downstream_key(target_key, frozen)
    df = table_from_cards([repo_id], target_key, frozen=frozen)
    entry = summary_entry(df, key)
    png = plot_png(df, key)

    def edit(card: ModelCard) -> ModelCard:
        summary = get_namespace(card.data, schema.DOWNSTREAM_SUMMARY, {}) or {}
        summary[key] = entry
        set_namespace(card.data, schema.DOWNSTREAM_SUMMARY, summary)
        card.text = replace_section(card.text or f"# {repo_id}\n", SECTION, main_section(summary))
        return card

    hub.update_card(repo_id, "main", edit, commit_message=f"Downstream summary on {key}: best {entry['best_revision']}",
                    extra_files={schema.plot_path(schema.DOWNSTREAM, key): png})
    return entry
