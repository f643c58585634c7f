"""Tests of dyntex.eval.calibration: the clips that show what each statistic misses."""
from __future__ import annotations

import numpy as np
import pytest

from dyntex.errors import InputError
from dyntex.eval.calibration import frozen, noise, phase_randomised, shuffled
from dyntex.eval.metrics import luma, spectrum_distance


def grating(T: int = 16, size: int = 32, contrast: float = 0.08, seed: int = 0) -> np.ndarray:
    """RGB (T, size, size, 3): two drifting sinusoid gratings plus a little pixel noise.

    The channels are different mixtures of the two gratings, so they are correlated but not
    proportional (luma mixes them). Values stay well inside [0, 1] for a small contrast.
    """
    rng = np.random.default_rng(seed)
    t, y, x = np.meshgrid(np.arange(T), np.arange(size), np.arange(size), indexing="ij")
    a = np.sin(2 * np.pi * (3 * x / size + 2 * y / size - 0.11 * t))
    b = np.sin(2 * np.pi * (-1 * x / size + 4 * y / size + 0.07 * t))
    g = np.stack([a + 0.3 * b, 0.5 * a + b, b - 0.4 * a], axis=-1)
    g += 0.3 * rng.standard_normal(g.shape)
    return np.clip(0.5 + contrast * g / g.std(), 0.0, 1.0)


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return grating()


def test_phase_randomised_keeps_every_channel_spectrum_and_is_real(clip: np.ndarray) -> None:
    out = phase_randomised(clip, np.random.default_rng(0), clip_values=False)
    assert out.shape == clip.shape and np.isrealobj(out)
    for c in range(3):
        np.testing.assert_allclose(np.abs(np.fft.fftn(out[..., c])),
                                   np.abs(np.fft.fftn(clip[..., c])), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), clip.mean(axis=(0, 1, 2)), atol=1e-12)
    assert np.abs(out - clip).mean() > 0.5 * np.abs(clip - clip.mean()).mean()   # a new clip
    # the luma spectrum is the observed one too (one phase field shared by the channels)
    lo = np.abs(np.fft.fftn(luma(out)))
    np.testing.assert_allclose(lo, np.abs(np.fft.fftn(luma(clip))), rtol=1e-9, atol=1e-9)


def test_phase_randomised_clip_has_the_observed_spectrum(clip: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    out = phase_randomised(clip, rng)
    assert 0.0 <= out.min() and out.max() <= 1.0
    np.testing.assert_allclose(out, phase_randomised(clip, np.random.default_rng(1),
                                                     clip_values=False))   # nothing clipped
    assert spectrum_distance(out, clip) < 1e-9
    assert spectrum_distance(noise(clip, np.random.default_rng(1)), clip) > 0.3


def test_phase_randomised_clips_only_when_it_must() -> None:
    """At full contrast some pixels leave [0, 1]: clipped, the spectrum moves a little."""
    strong = grating(contrast=0.25)
    raw = phase_randomised(strong, np.random.default_rng(2), clip_values=False)
    out = phase_randomised(strong, np.random.default_rng(2))
    assert raw.min() < 0.0 or raw.max() > 1.0
    np.testing.assert_array_equal(out, np.clip(raw, 0.0, 1.0))
    assert 0.0 < spectrum_distance(out, strong) < 0.1


def test_noise_matches_channel_moments(clip: np.ndarray) -> None:
    out = noise(clip, np.random.default_rng(3))
    np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), clip.mean(axis=(0, 1, 2)), atol=2e-3)
    np.testing.assert_allclose(out.std(axis=(0, 1, 2)), clip.std(axis=(0, 1, 2)), rtol=0.02)
    np.testing.assert_array_equal(out, noise(clip, np.random.default_rng(3)))


def test_shuffled_moves_every_frame() -> None:
    T = 10
    clip = np.arange(T, dtype=float)[:, None, None, None] * np.ones((T, 2, 2, 3)) / T
    for seed in range(20):
        out = shuffled(clip, np.random.default_rng(seed))
        order = out[:, 0, 0, 0] * T
        assert sorted(np.round(order).astype(int)) == list(range(T))
        assert (np.round(order) != np.arange(T)).all()
    np.testing.assert_array_equal(shuffled(clip, np.random.default_rng(5)),
                                  shuffled(clip, np.random.default_rng(5)))
    with pytest.raises(InputError, match="at least 2 frames"):
        shuffled(clip[:1], np.random.default_rng(0))


def test_frozen_repeats_the_first_frame(clip: np.ndarray) -> None:
    out = frozen(clip)
    assert out.shape == clip.shape
    assert (out == clip[0]).all()
