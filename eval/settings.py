"""The benchmark's settings, row names, table columns and versions, and its small file helpers
(every file written atomically through :mod:`dyntex.fileio`)."""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from dyntex.eval.baselines import hosvd
from dyntex.config import DEFAULT_PRESET
from dyntex.fileio import atomic_write, save_npy

NEW = "-new"                    # row key suffix: the baseline's new-sample (stationary start) row
BASELINE_METHODS = ("lds", "lds-new", "hosvd", "hosvd-new", "fftlds", "fftlds-new")
# CoopNets (its generator's samples, and the same after l descriptor Langevin steps), each of
# its networks trained alone (dyntex.solo), with the same networks, settings and budget, and one
# class-conditional CoopNets model over all the clips (each clip a class)
NEURAL_METHODS = ("coop", "coop+langevin", "descriptor", "generator", "coop-conditional")
METHODS = NEURAL_METHODS + BASELINE_METHODS
# what `dyntex benchmark` runs unless told: the single-network ablations each cost a training
DEFAULT_METHODS = ("coop", "coop+langevin") + BASELINE_METHODS
CALIBRATION = ("noise", "phase-randomised", "shuffled", "frozen")
REFERENCES = ("meanframe", "nextwindow") + CALIBRATION
LABELS = {"coop": "CoopNets", "coop+langevin": "CoopNets + Langevin",
          "descriptor": "descriptor alone", "generator": "generator alone",
          "coop-conditional": "CoopNets conditional", "lds": "LDS", "hosvd": "HOSVD", "fftlds": "FFT-LDS",
          "lds-new": "LDS", "hosvd-new": "HOSVD", "fftlds-new": "FFT-LDS",
          "meanframe": "mean frame", "nextwindow": "next window", "noise": "noise",
          "phase-randomised": "phase-randomised", "shuffled": "shuffled", "frozen": "frozen",
          "observed": "observed"}
MIN_FRAMES = 8
MIN_SIZE = 14                   # metrics.ps_setting: one pyramid scale holding a 7 x 7 window
PSNR_CAP = 100.0
CACHE_VERSION = 2  # 2: the memorisation frames are loaded by the same rule as the observed ones
# Scores cached under another version are redone: 2 added the Portilla-Simoncelli statistics,
# 3 made SSIM the published one (Gaussian window).
METRICS_VERSION = 3
DASH = "–"

# (key, column title, format, legend name) of the statistics, in table order.
COLUMNS = (("psnr", "PSNR (dB) ↑", "{:.2f}", "PSNR"), ("ssim", "SSIM ↑", "{:.3f}", "SSIM"),
           ("spectrum", "spectrum ↓", "{:.3f}", "spectrum"),
           ("motion", "motion ↓", "{:.3f}", "motion"), ("color", "colour ↓", "{:.3f}", "colour"),
           ("ps_appearance", "PS appearance ↓", "{:.2f}", "PS appearance"),
           ("ps_dynamics", "PS dynamics ↓", "{:.2f}", "PS dynamics"),
           ("diversity", "diversity", "{:.3f}", "diversity"),
           ("diversity_ratio", "diversity / real", "{:.2f}", "diversity / real"),
           ("memorisation", "memorisation (dB) ↓", "{:.2f}", "memorisation"))
_DOC_KEYS = {"psnr": "psnr", "ssim": "ssim", "spectrum": "spectrum_distance",
             "motion": "motion_distance", "color": "color_distance",
             "ps_appearance": "ps_appearance", "ps_dynamics": "ps_dynamics",
             "diversity": "diversity", "diversity_ratio": "diversity_ratio",
             "memorisation": "memorisation"}


@dataclass
class Settings:
    """Everything that decides the benchmark's numbers (and ``progress``, which does not)."""

    methods: tuple[str, ...] = DEFAULT_METHODS
    clips: tuple[str, ...] | None = None        # clip names to run (None: all)
    frames: int = 32                            # T
    size: int = 64                              # S
    samples: int = 3                            # K
    seed: int = 0
    preset: str = DEFAULT_PRESET                # CoopNets preset
    iters: int | None = None                    # CoopNets iterations (None: the preset's)
    device: str | None = None                   # CoopNets device (None: the preset's, "auto")
    coop_settings: dict[str, Any] = field(default_factory=dict)  # CoopNets settings on top of
                                                # the preset (--config; not T, S, iters, seed)
    noise: bool = True                          # False: deterministic baseline rollouts
    stabilize: bool = False                     # reflect unstable eigenvalues of A
    rgb: bool = False                           # PSNR/SSIM on RGB instead of luma
    hosvd_energy: float = hosvd.ENERGY          # spatial energy HOSVD's ranks keep (1: full)
    memo_frames: int | None = None              # frames searched for copies (None: 8 T)
    motion_stride: int = 2                      # flow on every stride-th frame pair
    ps: bool = True                             # False: skip the Portilla-Simoncelli statistics
    progress: bool = True

    @property
    def memo(self) -> int:
        return self.memo_frames if self.memo_frames is not None else 8 * self.frames


# CoopNets settings the benchmark's protocol fixes (its own options set them), so --config may not
COOP_PROTOCOL_KEYS = ("preset", "frames", "size", "window", "iters", "seed", "device")


@dataclass
class Report:
    """What a benchmark run produced."""

    text: str                          # summary table, per-clip table and legend (printed)
    markdown: str                      # ``table.md``: the text plus a detailed per-clip table
    results: dict[str, Any]            # ``results.json``
    paths: dict[str, Path]
    wall_seconds: float


def parse_list(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``"a, b,a"`` -> ``("a", "b")`` (order kept, duplicates dropped); ``None`` stays ``None``."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(dict.fromkeys(s.strip() for s in items if s.strip()))


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return DASH
    return spec.format(value)


@contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """Run numpy's BLAS on one thread inside the block (restored afterwards).

    The baselines and metrics multiply small matrices, where BLAS threads mostly wait for each
    other (and for any other busy process): on two cores one thread is several times faster.
    """
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


_write_npy = save_npy


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _write_json(path: Path, data: Any) -> None:
    _write_text(path, json.dumps(data, indent=2, default=_json_default, allow_nan=False) + "\n")


def _clean(obj: Any) -> Any:
    """NaN/inf -> None, recursively (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


