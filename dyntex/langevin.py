"""Langevin dynamics as pure functions: tensors and a ``torch.Generator`` in, tensors out.

All samplers here are the discretised Langevin equation (paper Eq. 8 and Eq. 16)

    x_{k+1} = x_k + (delta^2 / 2) * grad_x log p(x_k) + delta * U_k,    U_k ~ N(0, I).

They take only input gradients (``torch.autograd.grad`` with respect to x), so sampling never
touches the ``.grad`` of any network parameter.
"""
from __future__ import annotations

from typing import Callable

import torch

Tensor = torch.Tensor


def langevin(grad_log_p: Callable[[Tensor], Tensor], x0: Tensor, steps: int, step_size: float,
             generator: torch.Generator | None = None, free: Tensor | None = None) -> Tensor:
    """Run ``steps`` Langevin steps from ``x0`` on the density whose score is ``grad_log_p``.

    ``free`` (a boolean mask broadcasting against x): only those entries move; the others stay
    at their ``x0`` values after every step (sampling the conditional density of the free
    entries given the clamped ones, as in STGConvNet's recovery)."""
    x = x0.detach()
    for _ in range(steps):
        # x + d^2/2 * score + d * U as one fresh tensor updated in place (never x0). U is drawn
        # after the score, which draws nothing, so it is not held during the score's backward pass.
        x = torch.add(x, grad_log_p(x), alpha=0.5 * step_size ** 2)
        x.add_(torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype),
               alpha=step_size)
        if free is not None:
            x = torch.where(free, x, x0.detach())
    return x


def _input_grad(fn: Callable[[Tensor], Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
    """(fn(x), d sum(fn(x)) / dx) without building parameter gradients."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        out = fn(x)
        (grad,) = torch.autograd.grad(out.sum(), x)
    return out.detach(), grad


def _anisotropic(d: Tensor, ref_sigma: float, colour_sigma: float, chroma_sigma: float
                 ) -> Tensor | None:
    """(Lambda - I / s^2) d for the reference precision Lambda = I / s^2 + a P_c + b P_h, where
    P_c d is each channel's clip mean of d (over frames and pixels) and P_h d = d minus its mean
    over the channels at each pixel (the chroma of d), a = 1/s_c^2 - 1/s^2 and b = 1/s_h^2 - 1/s^2
    (a term is off when its sigma is 0). P_c and P_h are commuting orthogonal projections, so the
    clip mean of the chroma gets both terms. ``None`` when both are off."""
    inv_var = 1.0 / ref_sigma ** 2
    out = None
    if colour_sigma:
        out = (1.0 / colour_sigma ** 2 - inv_var) * d.mean(dim=tuple(range(2, d.ndim)), keepdim=True)
    if chroma_sigma:
        h = (1.0 / chroma_sigma ** 2 - inv_var) * (d - d.mean(dim=1, keepdim=True))
        out = h if out is None else out + h
    return out


def descriptor_score(energy: Callable[[Tensor], Tensor], ref_sigma: float,
                     ref_mean: Tensor | float = 0.0, colour_sigma: float = 0.0,
                     chroma_sigma: float = 0.0) -> Callable[[Tensor], Tensor]:
    """Score of p(Y) ∝ exp(f(Y)) q(Y) for the Gaussian reference q (paper Eq. 1, 8):

        grad log p = df/dY - Lambda (Y - mu),    Lambda = I / s^2 (+ the terms of ``_anisotropic``).

    With ``colour_sigma`` s_c = 0 and ``chroma_sigma`` s_h = 0 q is N(mu, s^2 I), as published
    (mu = 0 there; ``ref_mean`` broadcasts against Y, e.g. a colour per channel); otherwise q has
    variance s_c^2 along each channel's clip mean and s_h^2 along the chroma of each pixel
    (its deviation from the pixel's mean over channels) and s^2 across the rest
    (:func:`reference_energy`)."""
    inv_var = 1.0 / ref_sigma ** 2

    def score(y: Tensor) -> Tensor:
        d = y - ref_mean
        g = torch.add(_input_grad(energy, y)[1], d, alpha=-inv_var)
        extra = _anisotropic(d, ref_sigma, colour_sigma, chroma_sigma)
        return g if extra is None else g.sub_(extra)

    return score


def reference_energy(y: Tensor, ref_sigma: float, ref_mean: Tensor | float = 0.0,
                     colour_sigma: float = 0.0, chroma_sigma: float = 0.0) -> Tensor:
    """-log q(Y) per clip up to a constant, (B,): (Y - mu)^T Lambda (Y - mu) / 2, which is
    |Y - mu|^2 / (2 s^2) for the isotropic reference (see :func:`descriptor_score`)."""
    d = y - ref_mean
    q = d.pow(2).flatten(1).sum(1) / (2 * ref_sigma ** 2)
    extra = _anisotropic(d, ref_sigma, colour_sigma, chroma_sigma)
    return q if extra is None else q + (d * extra).flatten(1).sum(1) / 2


def revise(energy: Callable[[Tensor], Tensor], y0: Tensor, steps: int, step_size: float,
           ref_sigma: float, generator: torch.Generator | None = None,
           ref_mean: Tensor | float = 0.0, free: Tensor | None = None,
           colour_sigma: float = 0.0, chroma_sigma: float = 0.0) -> Tensor:
    """Descriptor revision (Alg. 1, step D1): Y <- Y - d^2/2 ((Y - mu)/s^2 - df/dY) + d U,
    ``steps`` times (only the ``free`` entries, when given: see :func:`langevin`; with
    ``colour_sigma`` or ``chroma_sigma`` the reference is anisotropic: :func:`descriptor_score`).

    ``energy`` maps a batch (B, ...) to f per clip (B,); the clips are revised independently.
    """
    return langevin(descriptor_score(energy, ref_sigma, ref_mean, colour_sigma, chroma_sigma),
                    y0, steps, step_size, generator, free)


def latent_score(render: Callable[[Tensor], Tensor], target: Tensor, sigma: float,
                 seen: Tensor | None = None) -> Callable[[Tensor], Tensor]:
    """Score of the generator posterior p(X | Y) ∝ N(X; 0, I) N(Y; g(X), sigma^2 I) (paper Eq. 16):

        grad_X log p = -X + (1 / sigma^2) (dg/dX)^T (Y - g(X)).

    ``seen`` (a mask broadcasting against Y): only those entries of Y are observed, so only they
    enter the likelihood (the posterior given part of a clip, as alternating back-propagation
    learns from incomplete images)."""
    inv_var = 1.0 / sigma ** 2

    def log_lik(x: Tensor) -> Tensor:
        residual = target - render(x)
        if seen is not None:
            residual = residual * seen
        return -0.5 * inv_var * residual.pow(2).flatten(1).sum(1)

    def score(x: Tensor) -> Tensor:
        return _input_grad(log_lik, x)[1] - x

    return score


def infer_latent(render: Callable[[Tensor], Tensor], x0: Tensor, target: Tensor, steps: int,
                 step_size: float, sigma: float, generator: torch.Generator | None = None,
                 seen: Tensor | None = None) -> Tensor:
    """Latent inference (Alg. 1, step G1): X <- X - d'^2/2 (X - (dg/dX)^T (Y - g(X)) / sigma^2) + d' U
    (given only the ``seen`` entries of Y, when given: see :func:`latent_score`)."""
    return langevin(latent_score(render, target.detach(), sigma, seen), x0, steps, step_size,
                    generator)
