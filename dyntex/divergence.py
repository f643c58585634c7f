"""Divergence: which iterations count as diverged, how many recoveries a run may make, and the
rates each recovery lowers. The trainer does the rollback itself (it owns the state)."""
from __future__ import annotations

import math

from .config import Config
from .errors import DivergenceError


class DivergenceGuard:
    """Watches a run's iterations against its settings ``base`` (``diverge_*``).

    ``recoveries`` counts the rollbacks so far (kept in checkpoints); :meth:`config` is ``base``
    with ``diverge_lower`` (``lr_des``, ``step_size`` or ``both``) multiplied by
    ``diverge_factor`` once per recovery.
    """

    def __init__(self, base: Config, recoveries: int = 0):
        self.base, self.recoveries = base, recoveries

    def problem(self, stats: dict[str, float]) -> str | None:
        """Why an iteration with these stats diverged, or None: non-finite numbers, or Langevin
        revisions that moved the clips by more than ``diverge_rms`` (RMS)."""
        bad = [k for k, v in stats.items() if not math.isfinite(v)]
        if bad:
            return f"non-finite {', '.join(bad)}"
        if stats["langevin_rms"] > self.base.diverge_rms:
            return f"Langevin revisions exploded (RMS shift {stats['langevin_rms']:.3g})"
        return None

    def count(self, problem: str, failed_step: int) -> None:
        """Count one more recovery; raise DivergenceError when that is more than allowed."""
        self.recoveries += 1
        if self.recoveries > self.base.diverge_retries:
            raise DivergenceError(
                f"training diverged at step {failed_step} ({problem}) and did not recover after "
                f"{self.base.diverge_retries} retries; try a lower --lr-des or --step-size")

    def config(self) -> Config:
        """The settings in force after the recoveries so far."""
        base = self.base
        scale = base.diverge_factor ** self.recoveries
        lower = base.diverge_lower
        return base.replace(
            lr_des=base.lr_des * (scale if lower in ("lr_des", "both") else 1.0),
            step_size=base.step_size * (scale if lower in ("step_size", "both") else 1.0))

    def event(self, failed_step: int, problem: str, step: int) -> str:
        """The line logged (metrics.csv ``event``, and on screen) for a recovery."""
        cfg = self.config()
        return (f"diverged at step {failed_step} ({problem}); rolled back to step {step}, "
                f"lr_des {cfg.lr_des:.3g}, step_size {cfg.step_size:.3g} "
                f"(recovery {self.recoveries} of {self.base.diverge_retries})")
