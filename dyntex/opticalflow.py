"""Differentiable local optical flow, for the generator's flow-statistics term (not in the paper).

Lucas and Kanade (1981): in a window around each pixel, the flow v solves the least-squares
brightness-constancy system  (sum grad I grad I^T + lambda I) v = -sum grad I dI/dt,  with
spatial gradients of the mean of frames t and t+1 and the temporal difference between them.
Every operation is a convolution or a 2 x 2 solve, so the flow of a synthesized clip has a
gradient with respect to its pixels. One scale of central differences: a smooth pattern's
translation comes out about a sixth short (0.43 for 0.5 px per frame, 1.67 for 2), the same in
every direction and for observed and synthesized clips alike, which is all a comparison of
their distributions needs. :func:`flow_pyramid` repeats it on the clip average-pooled by 2 and 4,
where the same window follows coarser, slower structure.
"""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F

Tensor = torch.Tensor

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as the benchmark's motion statistic
WINDOW = 7                     # side of the square window the system is summed over (pixels)
RIDGE = 1e-3                   # lambda, in model-space units squared: flat regions get ~0 flow
MAX_FLOW = 4.0                 # |components| are squashed smoothly below this (px / frame)
DIRECTIONS = 8                 # projections of the flow over half a turn
STRIDE = 2                     # flow_values keeps every STRIDE-th pixel across and down: the flow
                               # is a WINDOW-pixel average, so this keeps nearly all of it, and the
                               # sorts that compare distributions cost a quarter
SCALES = (1, 2, 4)             # flow_pyramid: the clip and it average-pooled by 2 and 4 (a
                               # WINDOW-pixel window at one scale sees little of coarse, slow motion)


def luma(y: Tensor) -> Tensor:
    """(B, T, H, W) luma of clips (B, C, T, H, W); C = 1 is returned as is."""
    if y.shape[1] == 1:
        return y[:, 0]
    return torch.einsum("c,bcthw->bthw", y.new_tensor(LUMA), y)


def lucas_kanade(y: Tensor, window: int = WINDOW, ridge: float = RIDGE) -> Tensor:
    """Flow (B, 2, T-1, H, W) in pixels per frame (x right, y down) from frame t to t + 1 of
    clips (B, C, T, H, W); components squashed by ``MAX_FLOW`` tanh(v / ``MAX_FLOW``)."""
    g = luma(y)
    mid, dt = 0.5 * (g[:, 1:] + g[:, :-1]), g[:, 1:] - g[:, :-1]
    p = F.pad(mid, (1, 1, 1, 1), mode="replicate")
    dx = 0.5 * (p[..., 1:-1, 2:] - p[..., 1:-1, :-2])
    dy = 0.5 * (p[..., 2:, 1:-1] - p[..., :-2, 1:-1])
    b, t, h, w = mid.shape
    terms = torch.stack([dx * dx, dx * dy, dy * dy, dx * dt, dy * dt], 2).reshape(b * t, 5, h, w)
    sums = F.avg_pool2d(terms, window, 1, window // 2, count_include_pad=False)
    sxx, sxy, syy, sxt, syt = sums.reshape(b, t, 5, h, w).unbind(2)
    sxx, syy = sxx + ridge, syy + ridge
    det = sxx * syy - sxy * sxy                      # > 0: the matrix is positive definite
    u = (sxy * syt - syy * sxt) / det
    v = (sxy * sxt - sxx * syt) / det
    return MAX_FLOW * torch.tanh(torch.stack([u, v], 1) / MAX_FLOW)


def flow_values(y: Tensor, directions: int = DIRECTIONS, stride: int = STRIDE) -> Tensor:
    """(B, directions + 1, N): each clip's flow (at every ``stride``-th pixel) projected on
    ``directions`` unit vectors spread over half a turn, and its magnitude: 1-D views whose value
    distributions together pin down the distribution of the flow vectors (as sliced Wasserstein
    distances do)."""
    flow = lucas_kanade(y)[..., ::stride, ::stride]
    angles = torch.arange(directions, device=y.device, dtype=y.dtype) * (math.pi / directions)
    units = torch.stack([angles.cos(), angles.sin()], 1)
    proj = torch.einsum("kc,bcthw->bkthw", units, flow).flatten(2)
    mag = (flow.pow(2).sum(1) + 1e-8).sqrt().flatten(1)[:, None]
    return torch.cat([proj, mag], 1)


def flow_pyramid(y: Tensor, scales: tuple[int, ...] = SCALES) -> list[Tensor]:
    """:func:`flow_values` of the clips (B, C, T, H, W) average-pooled in space by each factor f
    of ``scales`` (every ``STRIDE``-th pixel at f = 1, every pixel below), in full-resolution
    pixels per frame (the pooled clip's flow times f)."""
    views = []
    for f in scales:
        pooled = y if f == 1 else F.avg_pool3d(y, (1, f, f))
        views.append(flow_values(pooled, stride=STRIDE if f == 1 else 1) * f)
    return views
