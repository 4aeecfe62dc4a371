"""The stopping question in one sentence: does any online rule beat the fixed stop that saves as much?

Read from the corrected selection table (:mod:`hf_transfer_seg.report.compare`): every online rule of a
declared predictor has, beside it, the fixed stop saving the same mean share of epochs and the paired
per-series difference (rule's loss - fixed stop's loss, over cluster means). A rule "beats" the fixed
stop only where the corrected interval of that difference lies below 0; otherwise the sentence names the
best rule (the smallest difference), its estimate and in how many of the K clusters it was worse. Rules
tuned in-sample (a threshold on top-1) and rules that never stopped a series early (nothing saved: their
"fixed stop" is the last checkpoint) are left out of that comparison. Under
``--max-loss`` the sentence adds the out-of-sample savings and loss of the best rule tuned to the cap
(the one saving most while within the cap out of sample, else the one losing least) and of the fixed stop
tuned the same way.
"""

from __future__ import annotations

from typing import Any

from hf_transfer_seg.report.rules import CLUSTER_FOLDS

PERCENT_SCALE = 1.0  # a table whose |Dice| never exceeds this is in fractions: amounts also shown in points (x 100)


def dice_amount(value: float | None, scale: float, *, signed: bool = True) -> str:
    """'+0.30 points' for a table in points; '+0.0030 Dice (+0.30 points)' for a table in fractions
    (``signed=False``: no sign, for a magnitude)."""
    if value is None:
        return "n/a"
    sign = "+" if signed else ""
    if scale <= PERCENT_SCALE:
        return f"{value:{sign}.4f} Dice ({100 * value:{sign}.2f} points)"
    return f"{value:{sign}.2f} points"


def share(x: float) -> str:
    """'47%'; one decimal near the ends, so 99.8 % never reads as 100 % (nor 0.2 % as 0 %)."""
    return f"{x:.1%}" if (0 < x < 0.005 or 0.995 < x < 1) else f"{x:.0%}"


def short_label(r: dict[str, Any], *, params: bool = True) -> str:
    """'patience-2 on top1', 'threshold 70 on top1', 'fixed stop at epoch 150' (``params=False``: 'patience on top1')."""
    p = r.get("params") or {}
    if not params and r["rule"] != "fixed_fraction":
        text = r["rule"].replace("_", " ")
    elif r["rule"] == "patience":
        text = f"patience-{p.get('patience')}"
    elif r["rule"] == "threshold":
        text = f"threshold {p.get('threshold'):g}"
    elif r["rule"] == "fixed_fraction":
        return f"fixed stop at epoch {p['epoch']:g}" if "epoch" in p else f"fixed stop at {p.get('fraction', 0):.0%}"
    elif r["rule"] == "last":
        return "the last checkpoint"
    else:
        text = r["rule"].replace("_", " ")
    return f"{text} on {r['predictor']}"


def _unit(settings: dict[str, Any]) -> str:
    return "runs" if settings.get("cluster_by") else "series"


def _beats_part(table: list[dict[str, Any]], scale: float, unit: str) -> str:
    rows = [r for r in table if r.get("online") and r["predictor"] != "epoch" and r.get("equal_savings")
            and r["equal_savings"].get("difference") is not None and not r.get("tuned_in_sample")]
    if not rows:
        return "No online rule could be compared with the fixed stop that saves as much (no declared predictor has an online rule here)"
    savers = [r for r in rows if (r.get("epochs_saved") or 0) > 0]
    if not savers:
        return f"No online rule stopped any series early ({len(rows)} rule(s) ran every series to its end), so none saves epochs"
    rows = savers
    winners = [r for r in rows if r["equal_savings"].get("rule_vs_fixed") == "rule beats the fixed stop"]
    best = min(winners or rows, key=lambda r: r["equal_savings"]["difference"])
    e = best["equal_savings"]
    k = e.get("n_clusters") or 0
    saved = f"saving {share(e['epochs_saved'])} of the epochs"
    if winners:
        ci = e.get("difference_ci_corrected")
        ci_text = f", corrected interval [{dice_amount(ci[0], scale)}, {dice_amount(ci[1], scale)}]" if ci else ""
        return (f"Yes, an online rule beats the fixed stop that saves as much: {short_label(best)} ({saved}), "
                f"{dice_amount(e['difference'], scale)} lost vs that stop (rule − fixed{ci_text}; better in "
                f"{e.get('n_clusters_rule_better')} of {k} {unit})")
    worse = e["difference"] > 0
    if worse:
        why = f"worse in {e.get('n_clusters_rule_worse')} of {k} {unit}"
    else:
        why = f"better in {e.get('n_clusters_rule_better')} of {k} {unit}, not shown at the corrected level"
    info = e.get("corrected_attainable") or {}
    if info and not info.get("attainable"):
        why += (f"; with {k} {unit} no corrected comparison is attainable: a two-sided signed-rank test cannot go below "
                f"2/2^{k} = {info['smallest_p']:.2g}, above the {info['needed_p']:.2g} needed")
    amount = dice_amount(e["difference"], scale) if worse else dice_amount(abs(e["difference"]), scale, signed=False)
    return (f"No online rule beats the fixed stop that saves as much: best, {short_label(best)} ({saved}), "
            f"{amount} {'worse' if worse else 'better'} ({why})")


def _cap_part(table: list[dict[str, Any]], max_loss: float, scale: float) -> str:
    tuned = [r for r in table if r.get("online") and r.get("cross_validated") and r["cross_validated"].get("max_loss") is not None
             and r["cross_validated"].get("epochs_saved") is not None]
    rules = [r for r in tuned if r["predictor"] != "epoch"]
    fixed = next((r for r in tuned if r["predictor"] == "epoch"), None)
    cap = f"{max_loss:g}" + (f" = {100 * max_loss:.2f} points" if scale <= PERCENT_SCALE else " points")
    if not rules:
        return f"; under --max-loss {cap} no online rule could be tuned out of sample"
    within = [r for r in rules if r["cross_validated"]["within_cap"]]
    best = (max(within, key=lambda r: (r["cross_validated"]["epochs_saved"], -r["cross_validated"]["dice_lost_vs_last"]))
            if within else min(rules, key=lambda r: r["cross_validated"]["dice_lost_vs_last"]))
    c = best["cross_validated"]
    folds = "leave-one-cluster-out, one pretraining run at a time" if c["group_by"] == CLUSTER_FOLDS else f"leave-one-{c['group_by']}-out"
    if any(str(g).startswith("fold ") for g in c.get("params_per_group", {})):
        folds = f"{len(c['params_per_group'])} folds of whole {'clusters' if c['group_by'] == CLUSTER_FOLDS else c['group_by'] + ' groups'}"
    if c.get("trains_on_held_out_runs"):
        folds += f", training on the held-out runs' other-{c['group_by']} series"
    text = (f"; under --max-loss {cap}, out of sample ({folds}), the best rule, "
            f"{short_label(best, params=False)} tuned to the cap, saves {share(c['epochs_saved'])} of the epochs at a loss of "
            f"{dice_amount(c['dice_lost_vs_last'], scale)} ({'within' if c['within_cap'] else 'over'} the cap)")
    if fixed is not None:
        f = fixed["cross_validated"]
        text += (f", the fixed stop tuned the same way {share(f['epochs_saved'])} at {dice_amount(f['dice_lost_vs_last'], scale)}"
                 f" ({'within' if f['within_cap'] else 'over'} the cap)")
    return text


def stopping_sentence(table: list[dict[str, Any]], settings: dict[str, Any], *, scale: float) -> str:
    """One sentence answering the stopping question (see the module docstring); ``scale`` is the table's
    largest |Dice| (fractions or points)."""
    text = _beats_part(table, scale, _unit(settings))
    if settings.get("max_loss") is not None:
        text += _cap_part(table, float(settings["max_loss"]), scale)
    return text + "."
