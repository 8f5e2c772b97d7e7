"""The learning-rate schedule and the budgets that end a training run: wall seconds (a GPU lease) and this
process's CPU seconds (a shared CPU), whichever is further on."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .spec import TrainSpec


def lr_at(step: int, spec: TrainSpec, time_fraction: float = 0.0) -> float:
    """Linear warm-up, then cosine from ``lr`` down to ``lr_min`` at the last step.

    ``time_fraction``: the share of a run's time limit already spent. A run that stops at a time limit
    long before ``optim.steps`` anneals over its time instead (the cosine follows whichever of the two is
    further on), so the weights it saves last are taken at a low learning rate, not mid-schedule.
    """
    o = spec.optim
    if step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    t = max((step - o.warmup_steps) / max(1, o.steps - o.warmup_steps), time_fraction)
    return o.lr_min + 0.5 * (o.lr - o.lr_min) * (1 + math.cos(math.pi * min(1.0, t)))


@dataclass
class Budget:
    """When :func:`fit` saves and stops: its wall and CPU budgets, and its timed saves (one process only)."""

    t_start: float
    time_limit_s: float | None
    cpu_limit_s: float | None
    save_every_s: float | None
    save_every_cpu_s: float | None
    timed: bool
    last_save: float = 0.0
    last_save_cpu: float = 0.0

    def fraction(self, now: float, cpu_s: float) -> float:
        """The share of the further-on budget spent (the cosine anneals over it; 1: stop)."""
        fractions = [(now - self.t_start) / self.time_limit_s] if self.time_limit_s else []
        fractions += [cpu_s / self.cpu_limit_s] if self.cpu_limit_s else []
        return max(fractions, default=0.0)

    def save_due(self, now: float, cpu_s: float) -> bool:
        return self.timed and (
            (self.save_every_s is not None and now - self.last_save >= self.save_every_s)
            or (self.save_every_cpu_s is not None and cpu_s - self.last_save_cpu >= self.save_every_cpu_s)
        )

    def saved(self, now: float, cpu_s: float) -> None:
        self.last_save, self.last_save_cpu = now, cpu_s
