"""The demo's plan: its stages with their sizes and an ETA per stage, refined from measured times as stages finish.

Each stage has a size in work units (pretraining and fine-tuning: optimizer steps; scoring: revision x image
forward pairs; report and Space: one) and an estimate ``start-up + units x seconds per unit``. The first
estimates use the rates of the reference run (the README's: a quiet 2-core CPU, default settings); when a stage
finishes, its measured seconds per unit replace the rate of its kind, and the stages of kinds not measured yet
are scaled by how much slower or faster this machine has been so far. A reused stage (finished in an earlier
run) costs nothing and teaches nothing.
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass, field

# Reference run (README: quiet 2-core CPU, default demo): pretrain 39 s for 94 steps, score 16 s
# for 6 revisions x 64 images, one fine-tune 68.5 s for 112 steps, report 4 s, Space deploy 4 s. Start-up is the
# cost of starting one command (Python, torch, the model) before its first unit of work.
STARTUP = {"pretrain": 12.0, "score": 8.0, "finetune": 10.0, "report": 4.0, "space": 4.0}
PER_UNIT = {"pretrain": 0.29, "score": 0.021, "finetune": 0.52, "report": 0.0, "space": 0.0}


@dataclass
class PlannedStage:
    key: str
    kind: str  # pretrain | score | finetune | report | space
    title: str
    units: float
    unit: str  # what a unit is, for the plan's line
    seconds: float | None = None  # measured, when finished
    reused: bool = False
    note: str = ""


@dataclass
class Plan:
    stages: list[PlannedStage] = field(default_factory=list)
    rates: dict[str, float] = field(default_factory=lambda: dict(PER_UNIT))
    measured: set[str] = field(default_factory=set)
    speed: float = 1.0  # this machine's measured time / the reference's, over the stages measured so far
    _ratios: list[tuple[float, float]] = field(default_factory=list)

    def add(self, key: str, kind: str, title: str, units: float, unit: str, note: str = "") -> None:
        self.stages.append(PlannedStage(key, kind, title, units, unit, note=note))

    def estimate(self, stage: PlannedStage) -> float:
        if stage.seconds is not None:
            return stage.seconds
        if stage.kind in self.measured:  # this kind's own measured rate (start-up scaled like the rest)
            return STARTUP[stage.kind] * self.speed + stage.units * self.rates[stage.kind]
        return (STARTUP[stage.kind] + stage.units * PER_UNIT[stage.kind]) * self.speed

    def finish(self, key: str, seconds: float, *, reused: bool = False) -> PlannedStage:
        """Record a finished stage; its rate refines the estimates of the stages still to come."""
        stage = self.get(key)
        stage.seconds, stage.reused = seconds, reused
        if reused:
            return stage
        reference = STARTUP[stage.kind] + stage.units * PER_UNIT[stage.kind]
        self._ratios.append((seconds, reference))
        self.speed = sum(s for s, _ in self._ratios) / sum(r for _, r in self._ratios)
        if stage.units and PER_UNIT[stage.kind]:
            self.rates[stage.kind] = max(0.0, seconds - STARTUP[stage.kind] * self.speed) / stage.units
            self.measured.add(stage.kind)
        return stage

    def get(self, key: str) -> PlannedStage:
        return next(s for s in self.stages if s.key == key)

    def remaining(self) -> float:
        return sum(self.estimate(s) for s in self.stages if s.seconds is None)

    def lines(self, now: _dt.datetime | None = None) -> list[str]:
        """The plan as printed: one line per stage (done / to do, estimate), then the total and the finish time."""
        out = []
        for i, s in enumerate(self.stages, 1):
            if s.seconds is not None:
                state = "reused" if s.reused else f"done in {_fmt(s.seconds)}"
            else:
                state = f"~{_fmt(self.estimate(s))}"
            size = f"{_count(s.units)} {s.unit}" if s.unit else ""
            out.append(f"  {i}. {s.title:<44} {size:<26} {state}{('  ' + s.note) if s.note else ''}")
        left = self.remaining()
        finish = (now or _dt.datetime.now()) + _dt.timedelta(seconds=left)
        basis = ("reference timings (a quiet 2-core CPU)" if not self._ratios else
                 f"times measured so far (this machine: {self.speed:.1f}x the reference)")
        out.append(f"  remaining ~{_fmt(left)}, done at about {finish:%H:%M} (from {basis})")
        return out


def _fmt(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _count(units: float) -> str:
    return f"{units:,.0f}" if units >= 1 or units == 0 else f"{units:.2f}"


def pretrain_steps(train_images: int, batch_size: int, epochs: float) -> int:
    """Optimizer steps of the demo's pretraining (``batch_size`` images per step, over all processes)."""
    return max(1, math.ceil(epochs * train_images / batch_size))
