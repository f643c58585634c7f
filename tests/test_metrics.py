"""Tests of dyntex.eval.metrics."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from dyntex.errors import InputError
from dyntex.eval.calibration import frozen, noise, phase_randomised, shuffled
from dyntex.eval.metrics import (METRIC_DOCS, PSStats, color_distance, diversity, luma, memorisation,
                          motion_distance, ps_appearance, ps_distance, ps_dynamics, ps_setting,
                          ps_statistics, psnr, spectrum_distance, ssim)


def texture(T: int = 12, size: int = 48, speed: int = 1, seed: int = 0) -> np.ndarray:
    """An RGB clip of a smooth random pattern translating ``speed`` px/frame to the right.

    The pattern is drawn at 48 px and resized to ``size``, so clips of different sizes show the
    same scene (and the same motion relative to the frame) at different resolutions.
    """
    base = cv2.GaussianBlur(np.random.default_rng(seed).random((48, 48)), (0, 0), 2)
    base = cv2.resize((base - base.min()) / (base.max() - base.min()), (size, size),
                      interpolation=cv2.INTER_CUBIC).clip(0, 1)
    g = np.stack([np.roll(base, speed * t, axis=1) for t in range(T)])
    return 0.05 + 0.8 * np.stack([g, 0.9 * g, 0.7 * g + 0.1], axis=-1)


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return texture()


def test_luma_bt601() -> None:
    rgb = np.zeros((1, 1, 3, 3))
    rgb[0, 0] = np.eye(3)
    np.testing.assert_allclose(luma(rgb)[0, 0], [0.299, 0.587, 0.114])
    gray = np.random.default_rng(0).random((2, 4, 4))
    np.testing.assert_array_equal(luma(gray), gray)
    np.testing.assert_array_equal(luma(gray[..., None]), gray)


def test_psnr(clip: np.ndarray) -> None:
    assert psnr(clip, clip) == 100.0
    assert psnr(clip, clip, cap=60.0) == 60.0
    # per frame it is scikit-image's PSNR, averaged over frames
    noisy = np.clip(clip + np.random.default_rng(1).normal(0, 0.05, clip.shape), 0, 1)
    expected = np.mean([peak_signal_noise_ratio(a, b, data_range=1.0)
                        for a, b in zip(luma(noisy), luma(clip))])
    assert psnr(noisy, clip) == pytest.approx(expected, rel=1e-12)
    assert psnr(noisy, clip, gray=False) != pytest.approx(psnr(noisy, clip))


def test_psnr_constant_offset_is_20db() -> None:
    obs = np.full((4, 8, 8, 3), 0.3)
    assert psnr(obs + 0.1, obs) == pytest.approx(20.0)
    assert psnr(obs + 0.1, obs, gray=False) == pytest.approx(20.0)


def test_ssim(clip: np.ndarray) -> None:
    assert ssim(clip, clip) == pytest.approx(1.0)
    assert ssim(clip, clip, gray=False) == pytest.approx(1.0)
    assert ssim(clip[::-1], clip) < 0.9
    with pytest.raises(InputError, match="11x11"):
        ssim(clip[:, :9, :9], clip[:, :9, :9])
    with pytest.raises(InputError, match="7x7"):
        ssim(clip[:, :5, :5], clip[:, :5, :5], gaussian=False)


def test_ssim_as_published_vs_scikit_image_default(clip: np.ndarray) -> None:
    """Default: Gaussian sigma 1.5, population covariances; gaussian=False: skimage's defaults."""
    noisy = np.clip(clip + np.random.default_rng(1).normal(0, 0.05, clip.shape), 0, 1)
    a, b = luma(noisy), luma(clip)
    published = np.mean([structural_similarity(x, y, data_range=1.0, gaussian_weights=True,
                                               sigma=1.5, use_sample_covariance=False)
                         for x, y in zip(a, b)])
    default = np.mean([structural_similarity(x, y, data_range=1.0) for x, y in zip(a, b)])
    assert ssim(noisy, clip) == pytest.approx(published, rel=1e-12)
    assert ssim(noisy, clip, gaussian=False) == pytest.approx(default, rel=1e-12)
    assert abs(published - default) > 0.01                        # the choice matters


def test_shape_mismatch_and_bad_values(clip: np.ndarray) -> None:
    with pytest.raises(InputError, match="same shape"):
        psnr(clip[:5], clip)
    with pytest.raises(InputError, match=r"\[0,1\]"):
        psnr(clip * 255, clip)


def test_spectrum_distance(clip: np.ndarray) -> None:
    assert spectrum_distance(clip, clip) == 0.0
    shuffled = clip[np.random.default_rng(2).permutation(len(clip))]
    assert spectrum_distance(shuffled, clip) > 0.1
    # amplitude spectra ignore phase: a circular time shift or time reversal leaves them as is
    assert spectrum_distance(np.roll(clip, 3, axis=0), clip) == pytest.approx(0.0, abs=1e-9)
    assert spectrum_distance(clip[::-1], clip) == pytest.approx(0.0, abs=1e-9)
    assert spectrum_distance(texture(speed=2), clip) > 0.1


def test_motion_distance(clip: np.ndarray) -> None:
    assert motion_distance(clip, clip) == 0.0
    shuffled = clip[np.random.default_rng(3).permutation(len(clip))]
    still = np.repeat(clip[:1], len(clip), axis=0)
    backwards = clip[::-1]
    for other in (shuffled, still, backwards):
        assert 0.1 < motion_distance(other, clip) <= 1.0
    assert motion_distance(clip, clip, stride=3) == 0.0
    # flow is measured relative to the frame size: the same scene at twice the resolution
    assert motion_distance(texture(size=96, speed=2), clip) < 0.2


def test_color_distance(clip: np.ndarray) -> None:
    assert color_distance(clip, clip) == 0.0
    assert color_distance(clip[::-1], clip) == 0.0          # order does not matter
    shifted = np.clip(clip + 0.2, 0, 1)
    assert 0.3 < color_distance(shifted, clip) <= 1.0
    assert color_distance(np.zeros((2, 4, 4, 3)), np.ones((2, 4, 4, 3))) == 1.0
    with pytest.raises(InputError, match="channel"):
        color_distance(clip, luma(clip))


def test_diversity(clip: np.ndarray) -> None:
    assert diversity([clip, clip, clip]) == 0.0
    assert diversity([clip, np.clip(clip + 0.1, 0, 1)]) > 0.05
    assert diversity([np.zeros((2, 4, 4)), np.ones((2, 4, 4)), np.ones((2, 4, 4))]) \
        == pytest.approx(2 / 3)
    with pytest.raises(InputError, match="at least 2"):
        diversity([clip])


def test_memorisation_finds_copied_window() -> None:
    video = np.random.default_rng(4).random((40, 16, 16, 3))
    assert memorisation(video[15:25], video) == 100.0
    fresh = np.random.default_rng(5).random((10, 16, 16, 3))
    assert memorisation(fresh, video) < 20.0
    shuffled = video[[15, 16, 17, 30, 19, 20, 21, 22, 23, 24]]   # one frame swapped
    assert 80.0 < memorisation(shuffled, video) < 100.0
    with pytest.raises(InputError, match="at least as many frames"):
        memorisation(video, video[:5])


def test_metric_docs_cover_every_metric() -> None:
    assert set(METRIC_DOCS) == {"psnr", "ssim", "spectrum_distance", "motion_distance",
                                "color_distance", "ps_appearance", "ps_dynamics", "diversity",
                                "diversity_ratio", "memorisation"}
    for text in METRIC_DOCS.values():
        assert "better" in text and "\n" not in text


# --------------------------------------------------------------------------- Portilla-Simoncelli


def drifting_grating(T: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """Gray (T, size, size): two sinusoid gratings drifting at different speeds plus pixel noise
    (a stationary dynamic texture: every T-window has the same statistics)."""
    rng = np.random.default_rng(seed)
    t, y, x = np.meshgrid(np.arange(T), np.arange(size), np.arange(size), indexing="ij")
    g = 0.5 * np.sin(2 * np.pi * (4 * x + 2 * y) / size - 0.5 * t) \
        + 0.3 * np.sin(2 * np.pi * (-3 * x + 5 * y) / size + 0.3 * t)
    return np.clip(0.5 + 0.25 * g + 0.05 * rng.standard_normal(g.shape), 0.0, 1.0)


@pytest.fixture(scope="module")
def grating_windows() -> tuple[np.ndarray, np.ndarray]:
    video = drifting_grating(32)
    return video[:16], video[16:]                                   # observed, next window


def test_ps_setting_rule() -> None:
    assert ps_setting(64, 64) == (3, 64, 64)
    assert ps_setting(128, 128) == (4, 128, 128)
    assert ps_setting(256, 256) == (4, 256, 256)                    # the paper's 4 at most
    assert ps_setting(16, 16) == (1, 16, 16)
    assert ps_setting(30, 45) == (2, 28, 44)                        # cropped to multiples of 4
    with pytest.raises(InputError, match="at least 14x14"):
        ps_setting(13, 64)


def test_ps_distance_formula() -> None:
    """z-scores against the observed spread, RMS per kind, then over kinds; spreads floored."""
    kinds = np.array([0, 1, 1, 1])
    obs = np.array([[1.0, 0.0, 10.0, 5.0], [3.0, 2.0, 14.0, 5.0]])  # sd 1, 1, 2, 0 (floored)
    syn = PSStats(np.array([[4.0, 3.0, 16.0, 5.0]]), kinds, (8, 8))
    # kind 0: z = 2; kind 1: z = 2, 2, 0 -> mean square 8/3; result sqrt((4 + 8/3) / 2)
    assert ps_distance(syn, PSStats(obs, kinds, (8, 8))) == pytest.approx(np.sqrt((4 + 8 / 3) / 2))
    off = syn.values.copy()
    off[0, 3] = 5.2                        # sd 0 floored to 0.1 * median(1, 2, 0) = 0.1: z = 2
    assert ps_distance(PSStats(off, kinds, (8, 8)), PSStats(obs, kinds, (8, 8))) == \
        pytest.approx(np.sqrt((4 + 12 / 3) / 2))
    assert ps_distance(PSStats(obs, kinds, (8, 8)), PSStats(obs, kinds, (8, 8))) == 0.0
    with pytest.raises(InputError, match="same frame size"):
        ps_distance(PSStats(obs, kinds, (8, 8)), PSStats(obs, kinds, (16, 16)))


def test_ps_appearance_ranks_next_window_before_noise(grating_windows) -> None:
    obs, nxt = grating_windows
    near = ps_appearance(nxt, obs)
    assert ps_appearance(obs, obs) == 0.0
    assert near < 2.0
    assert ps_appearance(noise(obs, np.random.default_rng(0)), obs) > 5 * near
    assert ps_appearance(phase_randomised(obs, np.random.default_rng(0)), obs) > 2 * near
    # order of frames does not matter to appearance, only to dynamics
    assert ps_appearance(obs[::-1], obs) == pytest.approx(0.0, abs=1e-9)


def test_ps_dynamics_catches_frozen_and_noise(grating_windows) -> None:
    obs, nxt = grating_windows
    near = ps_dynamics(nxt, obs)
    still = ps_dynamics(frozen(obs), obs)
    assert np.isfinite(still) and still > 5 * near
    assert ps_dynamics(noise(obs, np.random.default_rng(0)), obs) > 5 * near
    # shuffled frames: the same frames, other differences
    assert ps_appearance(shuffled(obs, np.random.default_rng(0)), obs) == pytest.approx(0, abs=1e-9)
    assert ps_dynamics(shuffled(obs, np.random.default_rng(0)), obs) > 2 * near


def test_ps_statistics_are_deterministic_and_finite(grating_windows) -> None:
    obs, _ = grating_windows
    a, b = ps_statistics(obs), ps_statistics(obs.copy())
    np.testing.assert_array_equal(a.values, b.values)
    assert a.values.shape[0] == len(obs) and a.kinds.shape == a.values.shape[1:]
    assert ps_appearance(obs[:8], obs) == ps_appearance(obs[:8], obs)
    assert ps_dynamics(obs[:8], obs) == ps_dynamics(obs[:8], obs)
    d = ps_statistics(frozen(obs), temporal=True)
    assert d.values.shape[0] == len(obs) - 1 and np.isfinite(d.values).all()
    rgb = np.repeat(obs[..., None], 3, axis=-1)                     # luma of gray RGB is gray
    np.testing.assert_allclose(ps_statistics(rgb).values, a.values, atol=1e-12)
    with pytest.raises(InputError, match="at least 14x14"):
        ps_appearance(obs[:, :12, :12], obs[:, :12, :12])
    with pytest.raises(InputError, match="same frame size"):
        ps_appearance(obs[:, :16, :16], obs)
