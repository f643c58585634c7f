"""Calibration clips: structureless or motionless stand-ins that a good statistic must catch.

Each is made from the observed clip (float (T, H, W, C) or (T, H, W) in [0, 1]) and keeps its
layout; the benchmark scores them like any method (README, "Calibration rows"). A statistic that
scores one of them as well as the real next window is *fooled* by it.

* :func:`noise`            - i.i.d. Gaussian pixels with the clip's per-channel mean and standard
  deviation: right colour statistics, no structure at all.
* :func:`phase_randomised` - the clip's 3-D Fourier amplitudes with random phases: the same
  spectrum (luma and per channel), no spatial or temporal structure beyond it.
* :func:`shuffled`         - the observed frames in a random order: perfect appearance, broken
  motion.
* :func:`frozen`           - the first observed frame repeated: perfect appearance, no motion.

Randomness comes only from the ``np.random.Generator`` passed in, so each is deterministic
given its seed.
"""
from __future__ import annotations

import numpy as np

from dyntex.errors import InputError
from dyntex.eval.baselines.lds import as_clip

__all__ = ["frozen", "noise", "phase_randomised", "shuffled"]


def noise(clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """I.i.d. Gaussian pixels with the clip's per-channel mean and standard deviation.

    Clipped to [0, 1] (the range every metric takes), which narrows the spread of a clip whose
    values come close to 0 or 1.
    """
    arr = as_clip(clip)
    mean, std = arr.mean(axis=(0, 1, 2)), arr.std(axis=(0, 1, 2))
    out = mean + std * rng.standard_normal(arr.shape)
    return np.clip(out, 0.0, 1.0).reshape(np.shape(clip))


def phase_randomised(clip: np.ndarray, rng: np.random.Generator,
                     clip_values: bool = True) -> np.ndarray:
    """The clip's 3-D (t, y, x) Fourier amplitudes, per channel, with random phases.

    One random phase field, that of the 3-D FFT of real white noise, is added to the phases of
    every channel (multivariate surrogate of Prichard & Theiler, Phys. Rev. Lett. 73, 1994):

        Y_c(k) = X_c(k) W(k) / |W(k)|,   W = FFT(white noise),  W(0) / |W(0)| := 1

    so |Y_c| = |X_c| for every channel; W is Hermitian (the noise is real), hence so is Y_c and
    its inverse FFT is real (the imaginary part, rounding only, is dropped); the phase
    differences between channels are kept, so colour correlations and the luma spectrum are
    the observed ones too; the DC term (the mean) is kept as is.

    ``clip_values=True`` clips the result to [0, 1], as the metrics need: only then do pixels
    that the random phases push past 0 or 1 change the amplitudes, slightly (the README gives
    the effect on the spectrum distance). ``clip_values=False`` returns the exact surrogate.
    """
    arr = as_clip(clip)
    W = np.fft.fftn(rng.standard_normal(arr.shape[:3]))
    phase = W / np.maximum(np.abs(W), np.finfo(float).tiny)
    phase[0, 0, 0] = 1.0                                  # keep the mean
    out = np.fft.ifftn(np.fft.fftn(arr, axes=(0, 1, 2)) * phase[..., None], axes=(0, 1, 2)).real
    if clip_values:
        out = np.clip(out, 0.0, 1.0)
    return out.reshape(np.shape(clip))


def shuffled(clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The observed frames in a random order in which no frame keeps its place.

    A frame left in place would score a perfect (capped) PSNR against itself; drawing
    permutations until none has a fixed point (on average e ~ 2.7 draws) avoids that.
    """
    arr = np.asarray(clip)
    T = arr.shape[0] if arr.ndim else 0
    if T < 2:
        raise InputError(f"shuffling needs at least 2 frames, got {T}")
    while True:
        order = rng.permutation(T)
        if (order != np.arange(T)).all():
            return arr[order].copy()


def frozen(clip: np.ndarray) -> np.ndarray:
    """The first observed frame, repeated for every frame."""
    arr = np.asarray(clip)
    if arr.ndim < 3 or arr.shape[0] < 1:
        raise InputError(f"expected a clip (T, H, W[, C]) with at least one frame, got {arr.shape}")
    return np.repeat(arr[:1], arr.shape[0], axis=0)
