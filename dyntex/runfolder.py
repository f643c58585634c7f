"""A training run's folder: every file a run writes, each written atomically.

::

    config.json            the run's settings (usable again with --config)
    metrics.csv            one row per iteration: losses, energies, Langevin shift, seconds, rates
    checkpoints/step_N.pt  weights-only checkpoints (the newest ``keep_checkpoints`` are kept)
    samples/step_N.gif     preview samples from fixed latents, and a contact sheet PNG
    curves.png             the metrics drawn against the iteration

Checkpoints hold tensors and plain values only and load with ``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

import csv
import json
import math
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import CheckpointError
from .fileio import TEMP_SUFFIX, atomic_write

CHECKPOINT_FORMAT = 1
METRIC_FIELDS = ("step", "des_loss", "gen_loss", "energy_obs", "energy_syn", "langevin_rms", "seconds",
                 "lr_des", "lr_gen", "step_size", "event")
_CKPT_RE = re.compile(r"step_(\d+)\.pt$")


def checkpoint_paths(run_dir: str | Path) -> list[Path]:
    """The run's checkpoints, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    found = [(int(m.group(1)), p) for p in folder.glob("step_*.pt") if (m := _CKPT_RE.search(p.name))]
    return [p for _, p in sorted(found)]


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``) onto the CPU, or raise CheckpointError."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except pickle.UnpicklingError:
        raise CheckpointError(f"refusing to load {path}: it holds Python objects, not just tensors "
                              "(a weights-only checkpoint is required; it may be unsafe)") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable ({type(exc).__name__})") from None
    needed = {"format", "step", "config", "descriptor", "generator"}
    if not isinstance(state, dict) or not needed <= state.keys():
        raise CheckpointError(f"{path} is not a dyntex checkpoint")
    if state["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} has checkpoint format {state['format']}, this dyntex reads "
                              f"format {CHECKPOINT_FORMAT}")
    return state


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The metrics CSV as a list of dicts: numbers as floats, ``event`` as text ('' if none)."""
    path = Path(run_dir) / "metrics.csv"
    with path.open(newline="") as fh:
        return [{k: (v if k == "event" else float(v) if v else math.nan) for k, v in r.items()}
                for r in csv.DictReader(fh)]


def remove_stale_temps(run_dir: Path) -> None:
    """Delete temporary files left by writes that a crash (SIGKILL, power loss) cut short:
    ``.NAME.*.tmp`` from :func:`dyntex.fileio.atomic_path`. Only called when a run starts or
    resumes, when no other process writes to the run folder."""
    for folder in (run_dir, run_dir / "checkpoints", run_dir / "samples"):
        if folder.is_dir():
            for stale in folder.glob(f".*{TEMP_SUFFIX}"):
                stale.unlink(missing_ok=True)


def write_json(path: Path, data: Any) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(data, indent=2) + "\n"))


class RunFolder:
    """The files of one run. ``writer`` is False on the data-parallel ranks other than 0, which
    read the folder but never write it."""

    def __init__(self, path: str | Path, writer: bool = True):
        self.path, self.writer = Path(path), writer

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.csv"

    def checkpoints(self) -> list[Path]:
        return checkpoint_paths(self.path) if self.path.is_dir() else []

    def refuse_overwrite(self) -> None:
        """Raise CheckpointError if the folder already holds a trained run."""
        existing = self.checkpoints()
        if existing:
            step = _CKPT_RE.search(existing[-1].name).group(1)
            raise CheckpointError(f"{self.path} already holds a trained run (step {step}); use "
                                  "--resume to continue it or choose another --out")

    def start(self, config: dict[str, Any], step: int) -> None:
        """Clean up after a crash, write ``config.json`` and keep the metric rows up to ``step``
        (the work after the restored checkpoint was lost)."""
        if self.writer:
            remove_stale_temps(self.path)
            write_json(self.path / "config.json", config)
            self.trim_metrics(step)

    # -- metrics -------------------------------------------------------------------------------
    def trim_metrics(self, step: int) -> None:
        """Rewrite metrics.csv (atomically) with its rows up to ``step``."""
        path = self.metrics_path
        rows = []
        if path.exists():
            with path.open(newline="") as fh:
                rows = [r for r in csv.DictReader(fh)
                        if r.get("step", "").isdigit() and int(r["step"]) <= step]

        def write(p: Path) -> None:
            with p.open("w", newline="") as fh:
                w = csv.DictWriter(fh, METRIC_FIELDS)
                w.writeheader()
                w.writerows({k: r.get(k, "") for k in METRIC_FIELDS} for r in rows)

        atomic_write(path, write)

    def log(self, row: dict[str, Any]) -> None:
        """Append one row to metrics.csv."""
        if self.writer:
            with self.metrics_path.open("a", newline="") as fh:
                csv.DictWriter(fh, METRIC_FIELDS, restval="").writerow(
                    {k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})

    def elapsed_seconds(self) -> float:
        """Wall seconds already spent in this run (its last metrics row), so 'seconds' accumulates."""
        if not self.metrics_path.exists():
            return 0.0
        with self.metrics_path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        try:
            return float(rows[-1]["seconds"]) if rows else 0.0
        except (KeyError, ValueError):
            return 0.0

    # -- checkpoints, previews, curves -----------------------------------------------------------
    def save_checkpoint(self, state: dict[str, Any], keep: int) -> Path | None:
        """Write ``checkpoints/step_N.pt`` atomically and keep the newest ``keep``."""
        if not self.writer:
            return None
        path = self.path / "checkpoints" / f"step_{state['step']:06d}.pt"
        atomic_write(path, lambda p: torch.save(state, p))
        for old in checkpoint_paths(self.path)[:-keep]:
            old.unlink(missing_ok=True)
        return path

    def write_preview(self, step: int, clips: torch.Tensor, observed: torch.Tensor | None,
                      fps: float) -> None:
        """``samples/step_N.gif`` (the clips side by side) and a contact sheet PNG with the
        ``observed`` clip (model space) in its first row."""
        from .video import contact_sheet, from_model, write_png, write_video

        if not self.writer:
            return
        folder = self.path / "samples"
        frames = from_model(clips)
        write_video(folder / f"step_{step:06d}.gif", np.concatenate(list(frames), axis=2), fps)
        rows = ([from_model(observed)] if observed is not None else []) + list(frames)
        write_png(folder / f"step_{step:06d}.png", contact_sheet(rows))

    def write_curves(self, step: int, diverge_rms: float) -> None:
        """Redraw ``curves.png`` from metrics.csv."""
        from .curves import plot_curves, read_rows

        if self.writer:
            plot_curves(read_rows(self.metrics_path), self.path / "curves.png",
                        title=f"{self.path.name}, step {step}", diverge_rms=diverge_rms)
