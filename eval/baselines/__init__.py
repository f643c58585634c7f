"""Classical dynamic-texture baselines, behind one registry.

``BASELINES[name]`` has ``fit(clip, stabilize=...)`` and ``sample(model, T, rng, noise=...,
start=...)`` (``start="first"``: continue from the state fitted to frame 1; ``"stationary"``: a
new sample from the fitted model's stationary distribution, :mod:`.lds`):

* ``lds``    - linear dynamical system, Doretto et al., IJCV 2003 (:mod:`.lds`)
* ``hosvd``  - higher-order SVD + LDS on the temporal factor, Costantini et al., TIP 2008
  (:mod:`.hosvd`)
* ``fftlds`` - LDS on truncated 2-D Fourier coefficients, Abraham et al. 2005 (:mod:`.fftlds`)

Clips are float (T, H, W, C) or (T, H, W) in [0, 1]; randomness comes only from the
``np.random.Generator`` passed in.
"""
from __future__ import annotations

import time
from typing import Any, Callable, NamedTuple

import numpy as np

from dyntex.errors import ConfigError
from dyntex.eval.baselines import fftlds, hosvd, lds

__all__ = ["BASELINES", "Baseline", "run", "timing"]


class Baseline(NamedTuple):
    """A baseline's entry points and a one-line description."""

    fit: Callable[..., Any]
    sample: Callable[..., np.ndarray]
    description: str


BASELINES: dict[str, Baseline] = {
    "lds": Baseline(lds.fit, lds.sample, "LDS, closed-form (Doretto et al. 2003)"),
    "hosvd": Baseline(hosvd.fit, hosvd.sample, "HOSVD + LDS (Costantini et al. 2008)"),
    "fftlds": Baseline(fftlds.fit, fftlds.sample,
                       "LDS on Fourier coefficients (Abraham et al. 2005)"),
}


def run(name: str, clip: np.ndarray, samples: int, rng: np.random.Generator,
        noise: bool = True, stabilize: bool = False, start: str = "first"
        ) -> tuple[list[np.ndarray], dict[str, float]]:
    """Fit baseline ``name`` to ``clip`` (default settings); draw ``samples`` clips of its length
    (``start``: ``"first"`` continues the clip, ``"stationary"`` draws new samples).

    The samples are drawn one after the other from ``rng``. Returns the clips and an info dict
    with ``max_abs_eig`` (of the fitted A), ``fit_seconds`` and ``sample_seconds`` (all samples).
    """
    if name not in BASELINES:
        raise ConfigError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")
    if not isinstance(samples, (int, np.integer)) or samples < 1:
        raise ConfigError(f"samples must be a positive integer, got {samples!r}")
    baseline = BASELINES[name]
    t0 = time.perf_counter()
    model = baseline.fit(clip, stabilize=stabilize)
    t1 = time.perf_counter()
    length = np.shape(clip)[0]
    out = [baseline.sample(model, length, rng, noise=noise, start=start) for _ in range(samples)]
    t2 = time.perf_counter()
    return out, {"max_abs_eig": model.max_abs_eig, "fit_seconds": t1 - t0,
                 "sample_seconds": t2 - t1}


def timing(frames: int = 64, size: int = 128) -> dict[str, float]:
    """Seconds of fit + one synthesis of the LDS and HOSVD baselines on the project's rendered
    water clip (``dyntex speed`` reports them beside the CoopNets figures)."""
    from dyntex.sample_data import render_water

    clip = render_water(frames=frames, size=size).astype(np.float32) / 255.0
    out = {}
    for name in ("lds", "hosvd"):
        _, info = run(name, clip, 1, np.random.default_rng(0))
        out[f"{name}_seconds"] = info["fit_seconds"] + info["sample_seconds"]
    return out
