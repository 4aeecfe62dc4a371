"""``pretrain --early-stop RULE``: stop a run with the same rule objects the report evaluates.

The rule (:func:`hf_transfer_seg.selection.parse_rule`) watches one predictor at every checkpoint:
``top1`` (validation top-1 of this run), ``robustness`` (the live score, needs ``--score-target``) or
``epoch`` (a fixed fraction of the schedule). It runs as the last ``on_checkpoint`` callback, after live
scoring, and reads the checkpoint's facts and the other callbacks' metadata. Each revision card records
the rule under ``hf_transfer_seg.early_stop``; the card of the checkpoint where it fired says that this
rule stopped the run. The values seen so far are kept in ``<output-dir>/early_stop.json`` so a resumed
run decides exactly as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hf_transfer_seg.errors import ConfigError
from hf_transfer_seg.selection import EarlyStop, parse_rule

log = logging.getLogger(__name__)


class EarlyStopCallback:
    """An ``on_checkpoint`` callback taking ``facts`` and ``merged`` (what earlier callbacks returned)."""

    __name__ = "early stop"
    wants_context = True

    def __init__(self, spec: str, schedule: list[float], output_dir: str | Path, *, score_config: str | None = None):
        self.stop: EarlyStop = parse_rule(spec)
        self.schedule = [float(e) for e in schedule]
        self.score_config = score_config
        self.path = Path(output_dir) / "early_stop.json"
        self.seen: list[tuple[float, float | None]] = []
        if self.path.is_file():
            saved = json.loads(self.path.read_text())
            if saved.get("spec") == self.stop.spec:
                self.seen = [(float(e), v) for e, v in saved.get("seen", [])]

    def value(self, facts: dict[str, Any], merged: dict[str, Any]) -> float | None:
        if self.stop.predictor == "top1":
            return facts.get("top1")
        if self.stop.predictor == "epoch":
            return facts.get("epoch")
        scores = merged.get("robustness") or {}
        for entries in scores.values():
            entry = (entries or {}).get(self.score_config) or {}
            if entry.get("status", "ok") == "ok" and entry.get("score") is not None:
                return float(entry["score"])
        return None

    def __call__(self, folder, epoch: float, revision: str, *, facts: dict[str, Any] | None = None,
                 merged: dict[str, Any] | None = None) -> dict[str, Any]:
        value = self.value(facts or {}, merged or {})
        self.seen = [(e, v) for e, v in self.seen if e < float(epoch)] + [(float(epoch), value)]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"spec": self.stop.spec, "seen": self.seen}))
        epochs, values = [e for e, _ in self.seen], [v for _, v in self.seen]
        record = {"rule": self.stop.rule.name, "predictor": self.stop.predictor, "spec": self.stop.spec,
                  "params": dict(self.stop.rule.params), "value": value, "stopped_here": False}
        if self.stop.predictor == "top1" and "threshold" in record["params"]:
            record["params"]["threshold"] = -record["params"]["threshold"]
        fired = self.stop.stop_now(epochs, values, self.schedule) and float(epoch) < self.schedule[-1]
        out: dict[str, Any] = {"early_stop": record}
        if fired:
            record["stopped_here"] = True
            record["reason"] = (f"early stop rule {self.stop.describe()} (--early-stop {self.stop.spec}) fired at epoch {epoch:g} "
                                f"({self.stop.predictor} = {value if value is not None else 'n/a'})")
            out.update(stop=True, stop_reason=record["reason"])
            log.warning(record["reason"])
        return out


def make_early_stop(spec: str | None, config, args=None) -> list:
    """The callback for ``--early-stop``, or [] without one; a bad spec fails before training."""
    if not spec:
        return []
    stop = parse_rule(spec)
    score_config = getattr(args, "score_config", None)
    if stop.predictor == "robustness" and not getattr(args, "score_target", None):
        raise ConfigError(f"--early-stop {spec}: the robustness predictor needs live scoring; add --score-target TARGET "
                          "(or watch top-1: --early-stop top1:threshold=70)")
    return [EarlyStopCallback(spec, config.schedule, config.output_dir, score_config=score_config)]
