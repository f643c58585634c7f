"""Metrics for synthesized dynamic textures.

Clips are float (T, H, W, C) with C in {1, 3}, or (T, H, W), values in [0, 1].

Frame-wise fidelity (``psnr``, ``ssim``) compares synthesized frame t with observed frame t
and averages over frames; by default both are taken on luma (ITU-R BT.601), with
scikit-image and data_range = 1. A dynamic texture is a random process, so these only say how
close a sample stays to the one observed realisation; the texture statistics
(``spectrum_distance``, ``motion_distance``, ``color_distance``) compare distributions instead
and do not care about frame alignment; ``ps_appearance`` and ``ps_dynamics`` compare the
Portilla-Simoncelli texture statistics of frames and of temporal differences. ``diversity`` and
``memorisation`` detect mode collapse and copying. See :data:`METRIC_DOCS` for one line per
metric.

The Portilla-Simoncelli statistics come from plenoptic (PyTorch), imported on first use only,
so the numpy metrics stay light.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import cv2
import numpy as np
from skimage.metrics import structural_similarity

from dyntex.errors import InputError
from dyntex.eval.baselines.lds import as_clip

__all__ = ["METRIC_DOCS", "PSStats", "color_distance", "diversity", "luma", "memorisation",
           "motion_distance", "ps_appearance", "ps_distance", "ps_dynamics", "ps_setting",
           "ps_statistics", "psnr", "spectrum_distance", "ssim"]

METRIC_DOCS: dict[str, str] = {
    "psnr": "mean over frames of the PSNR (dB, luma by default, capped at 100) of synthesized "
            "frame t vs observed frame t; higher is better",
    "ssim": "mean over frames of the SSIM as published (Wang et al. 2004: Gaussian window "
            "sigma 1.5, population covariances; scikit-image, luma by default) of synthesized "
            "frame t vs observed frame t, in [-1, 1]; higher is better",
    "spectrum_distance": "RMS difference of the orientation-averaged 3-D log-amplitude spectra "
                         "(per temporal frequency and spatial radius) of the luma clips; "
                         "lower is better",
    "motion_distance": "mean total-variation distance of the Farneback optical-flow magnitude "
                       "and direction histograms, in [0, 1]; lower is better",
    "color_distance": "mean over channels of the total-variation distance between 32-bin value "
                      "histograms, in [0, 1]; lower is better",
    "ps_appearance": "distance of the mean Portilla-Simoncelli texture statistics of the luma "
                     "frames from the observed ones, each statistic in units of its spread over "
                     "the observed frames (RMS within each kind of statistic, then over the kinds); "
                     "0 = the observed statistics; lower is better",
    "ps_dynamics": "the same distance on the temporal differences (frame t+1 - frame t) of the "
                   "luma clips: texture of the motion; a clip without motion scores badly; "
                   "lower is better",
    "diversity": "mean pairwise RMS distance between samples of one model (0 = mode collapse); "
                 "higher is better, up to the variability of the texture itself",
    "diversity_ratio": "diversity divided by the same distance between K real T-frame windows "
                       "of the clip's video (frames 1..T, T+1..2T, ...): how much of the "
                       "texture's own variation the samples show (1 = as much; near 0 = mode "
                       "collapse); higher is better, up to 1; the next window's row shows the "
                       "real windows' diversity",
    "memorisation": "highest mean luma PSNR (dB, capped) of a synthesized clip against any "
                    "window of the training video; lower is better (high = copied frames)",
}

#: ITU-R BT.601 luma weights for R, G, B.
BT601 = np.array([0.299, 0.587, 0.114])

_FLOW_SIDE = 64                   # flow runs on frames downscaled to at most this longer side
_MAG_EDGES = np.linspace(0.0, 4.0, 17)   # px/frame on a 64-px frame; larger go to the last bin
_DIR_BINS = 16
_COLOR_BINS = 32


def luma(clip: np.ndarray) -> np.ndarray:
    """Luma (T, H, W) of a clip: 0.299 R + 0.587 G + 0.114 B (BT.601); 1-channel clips as is."""
    arr = as_clip(clip)
    return arr[..., 0] if arr.shape[-1] == 1 else arr @ BT601


def _pair(syn: np.ndarray, obs: np.ndarray, gray: bool) -> tuple[np.ndarray, np.ndarray]:
    """Validated, same-shape (luma or full-colour) versions of a synthesized/observed pair."""
    s, o = (luma(syn), luma(obs)) if gray else (as_clip(syn, "syn"), as_clip(obs, "obs"))
    if s.shape != o.shape:
        raise InputError(f"synthesized clip {np.shape(syn)} and observed clip {np.shape(obs)} "
                         "must have the same shape")
    return s, o


def _psnr_from_mse(mse: np.ndarray, cap: float) -> np.ndarray:
    """10 log10(1 / mse) for data range 1, capped at ``cap`` (so mse = 0 gives ``cap``)."""
    with np.errstate(divide="ignore"):
        return np.minimum(cap, -10.0 * np.log10(np.maximum(mse, 0.0)))


def psnr(syn: np.ndarray, obs: np.ndarray, gray: bool = True, cap: float = 100.0) -> float:
    """Mean over frames of PSNR(syn[t], obs[t]) in dB with data range 1.

    Each frame's PSNR is capped at ``cap`` before averaging, so identical frames (MSE 0, an
    infinite PSNR) count as ``cap``. ``gray=True`` compares BT.601 luma, else all channels.
    Per frame this equals ``skimage.metrics.peak_signal_noise_ratio(..., data_range=1)``.
    """
    s, o = _pair(syn, obs, gray)
    mse = ((s - o) ** 2).reshape(s.shape[0], -1).mean(axis=1)
    return float(_psnr_from_mse(mse, cap).mean())


def ssim(syn: np.ndarray, obs: np.ndarray, gray: bool = True, gaussian: bool = True) -> float:
    """Mean over frames of ``skimage.metrics.structural_similarity`` (data_range 1).

    ``gaussian=True`` (the default) is SSIM as published (Wang et al., IEEE TIP 13(4), 2004) and
    used by most papers: an 11 x 11 Gaussian window of sigma 1.5 and population covariances
    (``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``); frames must then be at
    least 11 x 11. ``gaussian=False`` is scikit-image's default (a 7 x 7 uniform window, sample
    covariances), which the shared reference figures use; frames of at least 7 x 7.
    ``gray=True`` compares BT.601 luma; otherwise SSIM is averaged over the colour channels.
    """
    s, o = _pair(syn, obs, gray)
    side = 11 if gaussian else 7
    if min(s.shape[1:3]) < side:
        raise InputError(f"SSIM needs frames of at least {side}x{side} pixels, got {s.shape[1:3]}")
    kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False) if gaussian else {}
    channel_axis = None if gray else -1
    return float(np.mean([structural_similarity(a, b, data_range=1.0, channel_axis=channel_axis,
                                                **kw) for a, b in zip(s, o)]))


def _spectrum_profile(g: np.ndarray) -> np.ndarray:
    """Mean log-amplitude of the 3-D FFT of a luma clip, per (|temporal freq|, spatial radius).

    The spatial radius is in units of 1/min(H, W) cycles per pixel, rounded, up to the Nyquist
    circle (corners beyond it are dropped); averaging over each ring averages over orientation.
    """
    T, H, W = g.shape
    logamp = np.log(np.abs(np.fft.fftn(g, norm="ortho")) + 1e-6)
    ft = np.abs(np.fft.fftfreq(T) * T).round().astype(int)                 # 0 .. T//2
    radius = np.hypot(*np.meshgrid(np.fft.fftfreq(H), np.fft.fftfreq(W), indexing="ij"))
    rbin = np.round(radius * min(H, W)).astype(int)
    nr = min(H, W) // 2 + 1
    idx = ft[:, None, None] * nr + rbin[None]
    valid = np.broadcast_to(rbin < nr, idx.shape)
    size = (T // 2 + 1) * nr
    sums = np.bincount(idx[valid], weights=logamp[valid], minlength=size)
    counts = np.bincount(idx[valid], minlength=size)
    return sums / np.maximum(counts, 1)


def spectrum_distance(syn: np.ndarray, obs: np.ndarray) -> float:
    """RMS difference (L2 / sqrt(#bins)) of the spectral profiles of the two luma clips.

    The profile is the log-amplitude of the 3-D FFT (orthonormal scaling), averaged over
    spatial orientation for each temporal frequency and spatial radius. 0 for identical clips;
    the clips must have the same (T, H, W).
    """
    s, o = _pair(syn, obs, gray=True)
    return float(np.sqrt(np.mean((_spectrum_profile(s) - _spectrum_profile(o)) ** 2)))


def flow_histograms(g: np.ndarray, stride: int = 1, select: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Normalised histograms of Farneback flow magnitude and (magnitude-weighted) direction.

    Frames are downscaled (INTER_AREA) so the longer side is at most 64 px and quantised to
    uint8; flow is computed between frames t and t + 1 for t = 0, stride, 2 stride, ...
    Magnitudes are expressed in pixels per frame of a frame whose longer side is 64 px, so they
    do not depend on the clip's resolution. An all-static clip gets a uniform direction histogram.
    ``select`` (T - 1, H, W), optional: count only these pixels of the flow from frame t (resized
    as the frames are, nearest); a selection with no pixels gives empty (all-zero) magnitudes.
    """
    T, H, W = g.shape
    if T < 2:
        raise InputError(f"motion needs at least 2 frames, got {T}")
    scale = min(1.0, _FLOW_SIDE / max(H, W))
    size = (max(1, round(W * scale)), max(1, round(H * scale)))
    frames = [cv2.resize(np.round(f * 255).astype(np.uint8), size, interpolation=cv2.INTER_AREA)
              if scale < 1 else np.round(f * 255).astype(np.uint8) for f in g]
    unit = _FLOW_SIDE / max(size)
    mags, angs = [], []
    for t in range(0, T - 1, stride):
        flow = cv2.calcOpticalFlowFarneback(frames[t], frames[t + 1], None,
                                            0.5, 3, 9, 3, 5, 1.1, 0)
        mag, ang = cv2.cartToPolar(flow[..., 0], flow[..., 1])
        keep = np.ones(mag.shape, bool)
        if select is not None:
            keep = (cv2.resize(select[t].astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
                    > 0) if scale < 1 else select[t]
        mags.append(mag[keep])
        angs.append(ang[keep])
    mag = np.concatenate(mags).astype(np.float64) * unit
    ang = np.concatenate(angs).astype(np.float64)
    hmag = np.histogram(np.minimum(mag, _MAG_EDGES[-1] - 1e-9), bins=_MAG_EDGES)[0].astype(float)
    hdir = np.histogram(ang, bins=_DIR_BINS, range=(0.0, 2 * np.pi), weights=mag)[0]
    hdir = hdir / hdir.sum() if hdir.sum() > 0 else np.full(_DIR_BINS, 1.0 / _DIR_BINS)
    return hmag / max(hmag.sum(), 1.0), hdir


def motion_distance(syn: np.ndarray, obs: np.ndarray, stride: int = 1) -> float:
    """Distance between the optical-flow statistics of two clips, in [0, 1].

    Dense Farneback flow (OpenCV) on luma frames downscaled to at most 64 px; the mean of the
    total-variation distances (half L1) between the normalised histograms of flow magnitude
    (16 bins on 0-4 px/frame at a 64-px scale, larger values in the last bin) and of flow
    direction (16 bins, weighted by magnitude). ``stride`` > 1 uses only every stride-th frame
    pair. The clips may differ in length and size.
    """
    if stride < 1:
        raise InputError(f"stride must be >= 1, got {stride}")
    ms, ds = flow_histograms(luma(syn), stride)
    mo, do = flow_histograms(luma(obs), stride)
    return float(0.25 * (np.abs(ms - mo).sum() + np.abs(ds - do).sum()))


def color_distance(syn: np.ndarray, obs: np.ndarray) -> float:
    """Mean over channels of the total-variation distance (half L1) of 32-bin histograms on [0, 1].

    In [0, 1]: 0 for identical value distributions, 1 for disjoint ones. The clips must have the
    same number of channels and may differ in length and size.
    """
    s, o = as_clip(syn, "syn"), as_clip(obs, "obs")
    if s.shape[-1] != o.shape[-1]:
        raise InputError(f"channel counts differ: {s.shape[-1]} vs {o.shape[-1]}")

    def hist(x: np.ndarray) -> np.ndarray:
        h = np.stack([np.histogram(x[..., c], bins=_COLOR_BINS, range=(0.0, 1.0))[0]
                      for c in range(x.shape[-1])]).astype(float)
        return h / h.sum(axis=1, keepdims=True)

    return float(0.5 * np.abs(hist(s) - hist(o)).sum(axis=1).mean())


def diversity(samples: Sequence[np.ndarray]) -> float:
    """Mean pairwise RMS distance between K >= 2 same-shape samples (0 = all identical)."""
    clips = [as_clip(c, f"samples[{i}]") for i, c in enumerate(samples)]
    if len(clips) < 2:
        raise InputError(f"diversity needs at least 2 samples, got {len(clips)}")
    if len({c.shape for c in clips}) > 1:
        raise InputError(f"samples must share one shape, got {sorted({c.shape for c in clips})}")
    return float(np.mean([np.sqrt(np.mean((a - b) ** 2)) for a, b in combinations(clips, 2)]))


def memorisation(syn: np.ndarray, video: np.ndarray, cap: float = 100.0) -> float:
    """Highest mean luma PSNR of ``syn`` (T frames) against any T-frame window of ``video``.

    Window s scores mean_t PSNR(syn[t], video[s + t]) with the same per-frame cap as
    :func:`psnr`; the maximum over all windows is returned, so a copied window gives ``cap``.
    ``video`` must have at least T frames and the same frame size.
    """
    s, v = luma(syn), luma(video)
    T, L = s.shape[0], v.shape[0]
    if s.shape[1:] != v.shape[1:] or L < T:
        raise InputError(f"video {np.shape(video)} must have the frame size of syn "
                         f"{np.shape(syn)} and at least as many frames")
    a, b = s.reshape(T, -1), v.reshape(L, -1)
    # mse[t, u] = |a_t - b_u|^2 / N for all frame pairs, via one matrix product.
    mse = ((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T) / a.shape[1]
    t = np.arange(T)
    per_frame = _psnr_from_mse(mse[t[None, :], np.arange(L - T + 1)[:, None] + t[None, :]], cap)
    return float(per_frame.mean(axis=1).max())


# --------------------------------------------------------------------------- Portilla-Simoncelli

PS_WIDTH = 7            # spatial_corr_width: the paper's 7 x 7 neighbourhood (plenoptic's default)
PS_MAX_SCALES = 4       # the paper's 4 pyramid scales
PS_ORIENTATIONS = 4     # the paper's 4 orientations
PS_SPREAD_FLOOR = 0.1   # a spread below 10 % of the median spread of its kind is raised to that
PS_MIN_SPREAD = 1e-6    # and every spread to at least this (frames whose statistics never vary)
_PS_BATCH = 64          # frames per plenoptic call: overhead amortised, memory bounded


@dataclass(frozen=True)
class PSStats:
    """Portilla-Simoncelli statistics of N frames: ``values`` (N, P); ``kinds`` (P,) numbers the
    kind of each statistic (plenoptic's groups: pixel moments, magnitude autocorrelations, ...);
    ``frame_shape`` is the (cropped) frame size they were measured on."""

    values: np.ndarray
    kinds: np.ndarray
    frame_shape: tuple[int, int]


def ps_setting(height: int, width: int) -> tuple[int, int, int]:
    """(n_scales, h, w): pyramid scales and centre-crop size for PS statistics of H x W frames.

    Rule: the most scales, up to the paper's 4, whose coarsest band (side // 2^n_scales) still
    holds the 7 x 7 correlation window (plenoptic raises "output_size is bigger than image
    height/width" otherwise); frames are centre-cropped to a multiple of 2^n_scales, as the
    pyramid halves them n_scales times (fewer than 2^n_scales rows or columns dropped).
    64 px: 3 scales, 128 px: 4, 32 px: 2, 16 px: 1. Below 14 px there is no such scale.
    """
    side = min(height, width)
    n = max((k for k in range(1, PS_MAX_SCALES + 1) if side // 2 ** k >= PS_WIDTH), default=0)
    if n == 0:
        raise InputError(f"Portilla-Simoncelli statistics need frames of at least "
                         f"{2 * PS_WIDTH}x{2 * PS_WIDTH} pixels, got {height}x{width}")
    m = 2 ** n
    return n, height - height % m, width - width % m


@functools.lru_cache(maxsize=4)
def _ps_model(h: int, w: int, n_scales: int):
    """plenoptic's PortillaSimoncelli for h x w frames (float64) and the kind of each statistic."""
    import torch
    from plenoptic.models import PortillaSimoncelli

    model = PortillaSimoncelli((h, w), n_scales=n_scales, n_orientations=PS_ORIENTATIONS,
                               spatial_corr_width=PS_WIDTH).to(torch.float64)
    with torch.no_grad():
        P = model(torch.zeros((1, 1, h, w), dtype=torch.float64)).shape[-1]
        # Statistic i holds the value i: the dict says which kind each position belongs to.
        groups = model.convert_to_dict(torch.arange(P, dtype=torch.float64).reshape(1, 1, P))
    kinds = np.full(P, -1)
    for k, v in enumerate(groups.values()):
        kinds[v[~torch.isnan(v)].long().numpy()] = k
    assert (kinds >= 0).all(), "plenoptic's statistics groups do not cover its representation"
    return model, kinds


def ps_statistics(clip: np.ndarray, temporal: bool = False) -> PSStats:
    """Portilla-Simoncelli statistics of each luma frame (``temporal``: of each difference
    frame t+1 - frame t) of a clip in [0, 1].

    plenoptic's ``PortillaSimoncelli`` (Portilla & Simoncelli, IJCV 40(1), 2000), 4
    orientations, 7 x 7 correlations, scales and crop by :func:`ps_setting`, in float64.
    Normalised moments and correlations of a constant frame (a zero difference) are 0/0 and
    count as 0, so a frozen clip gets finite statistics.
    """
    g = luma(clip)
    if temporal:
        if len(g) < 2:
            raise InputError(f"temporal differences need at least 2 frames, got {len(g)}")
        g = np.diff(g, axis=0)
    T, H, W = g.shape
    n, h, w = ps_setting(H, W)
    top, left = (H - h) // 2, (W - w) // 2
    g = np.ascontiguousarray(g[:, top:top + h, left:left + w])
    model, kinds = _ps_model(h, w, n)
    import torch

    # One thread: the many small FFTs run 3-10x faster than on two (measured on 2 cores).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            x = torch.from_numpy(g)[:, None]
            values = torch.cat([model(x[i:i + _PS_BATCH]) for i in range(0, T, _PS_BATCH)])
    finally:
        torch.set_num_threads(threads)
    values = values[:, 0].numpy()
    values[~np.isfinite(values)] = 0.0
    return PSStats(values=values, kinds=kinds, frame_shape=(h, w))


def ps_distance(syn: PSStats, obs: PSStats) -> float:
    """Distance of the mean statistics of ``syn`` from those of ``obs``, in units of their spread.

    Each statistic j: z_j = (mean over syn frames - mean over obs frames) / s_j, where s_j is
    its standard deviation over the observed frames, raised to at least PS_SPREAD_FLOOR times
    the median spread of its kind and to PS_MIN_SPREAD. The result is sqrt(mean over kinds of
    mean_j z_j^2), so each kind of statistic weighs the same however many it has (hundreds of
    autocorrelations, six pixel moments). 0 when the means agree; about 1 means the
    synthesized frames are, on average, one observed frame-to-frame spread away.
    """
    if syn.frame_shape != obs.frame_shape:
        raise InputError(f"PS statistics of {syn.frame_shape} and {obs.frame_shape} frames "
                         "cannot be compared; use clips of the same frame size")
    if len(obs.values) < 2 or len(syn.values) < 1:
        raise InputError("the PS distance needs at least 2 observed frames (3 for differences) "
                         "to measure their spread, and 1 synthesized")
    mu, sd = obs.values.mean(axis=0), obs.values.std(axis=0)
    kinds = np.unique(obs.kinds)
    spread = sd.copy()
    for k in kinds:
        sel = obs.kinds == k
        spread[sel] = np.maximum(sd[sel], PS_SPREAD_FLOOR * np.median(sd[sel]))
    spread = np.maximum(spread, PS_MIN_SPREAD)
    z2 = ((syn.values.mean(axis=0) - mu) / spread) ** 2
    return float(np.sqrt(np.mean([z2[obs.kinds == k].mean() for k in kinds])))


def ps_appearance(syn: np.ndarray, obs: np.ndarray) -> float:
    """:func:`ps_distance` of the luma frames' PS statistics (same frame size, any lengths)."""
    return ps_distance(ps_statistics(syn), ps_statistics(obs))


def ps_dynamics(syn: np.ndarray, obs: np.ndarray) -> float:
    """:func:`ps_distance` of the PS statistics of the luma temporal differences."""
    return ps_distance(ps_statistics(syn, temporal=True), ps_statistics(obs, temporal=True))
