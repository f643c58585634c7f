"""Langevin samplers on energies whose answer is known in closed form."""
import pytest
import torch

from dyntex.langevin import (descriptor_score, infer_latent, langevin, latent_score,
                             reference_energy, revise)
from dyntex.nets import build_nets


def _discrete_var(precision: float, step: float) -> float:
    """Stationary variance of x' = x - (d^2/2) P x + d U  (exact for the discretised chain)."""
    a = 1.0 - 0.5 * step ** 2 * precision
    return step ** 2 / (1.0 - a * a)


def _run(energy, s, step, steps=500, shape=(2500, 16), seed=0):
    g = torch.Generator().manual_seed(seed)
    return revise(energy, torch.zeros(shape, dtype=torch.float64), steps, step, s, g)


def test_zero_energy_stationary_variance_is_reference_variance():
    s, step = 1.0, 0.2
    y = _run(lambda y: torch.zeros(y.shape[0], dtype=y.dtype) + 0 * y.sum(1), s, step)
    var = y.var().item()
    assert var == pytest.approx(_discrete_var(1 / s ** 2, step), rel=0.03)
    assert var == pytest.approx(s ** 2, rel=0.04)  # discretisation bias is ~1 % at this step
    assert abs(y.mean().item()) < 0.02


def test_quadratic_energy_matches_closed_form():
    # f(y) = -(c/2)|y - mu|^2 with reference N(0, s^2): Gaussian with precision c + 1/s^2 and
    # mean c mu / (c + 1/s^2).
    s, c, mu, step = 0.5, 3.0, 0.8, 0.15
    y = _run(lambda y: -0.5 * c * (y - mu).pow(2).sum(1), s, step)
    precision = c + 1 / s ** 2
    assert y.mean().item() == pytest.approx(c * mu / precision, abs=0.01)
    assert y.var().item() == pytest.approx(_discrete_var(precision, step), rel=0.03)


def test_reference_mean_shifts_the_stationary_distribution():
    # f = 0 with reference N(mu, s^2 I), mu per column: the chain's stationary mean is mu (and its
    # variance the reference's); the paper's zero-mean reference would leave it at 0.
    s, step = 0.5, 0.1
    mu = torch.linspace(-0.8, 0.8, 16, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    y = revise(lambda y: 0 * y.sum(1), torch.zeros(2500, 16, dtype=torch.float64), 600, step, s, g,
               ref_mean=mu)
    assert torch.allclose(y.mean(0), mu, atol=0.03)
    assert y.var(0).mean().item() == pytest.approx(_discrete_var(1 / s ** 2, step), rel=0.03)


def test_colour_sigma_reference_has_its_own_variance_along_each_channels_mean():
    """colour_sigma s_c: the reference's variance is s_c^2 along each channel's clip mean and s^2
    across the rest. With f = 0 the chain's channel means have variance s_c^2 / N (N values per
    channel) and the deviations from them s^2 (1 - 1/N); the score is -grad of reference_energy."""
    s, s_c, step, n = 1.0, 0.25, 0.1, 8
    zero = lambda y: 0 * y.sum(dim=(1, 2, 3, 4))
    g = torch.Generator().manual_seed(0)
    y = revise(zero, torch.zeros(3000, 2, 2, 2, 2, dtype=torch.float64), 1500, step, s, g,
               colour_sigma=s_c)
    means = y.mean(dim=(2, 3, 4))                     # (B, C)
    assert (means.var() * n).item() == pytest.approx(s_c ** 2, rel=0.08)
    rest = y - means[:, :, None, None, None]
    assert (rest.pow(2).mean() / (1 - 1 / n)).item() == pytest.approx(s ** 2, rel=0.05)
    # the plain reference (s_c = 0) gives the channel means variance s^2 / N instead
    y0 = revise(zero, torch.zeros(3000, 2, 2, 2, 2, dtype=torch.float64), 1500, step, s,
                torch.Generator().manual_seed(0))
    assert (y0.mean(dim=(2, 3, 4)).var() * n).item() == pytest.approx(s ** 2, rel=0.08)
    # score of exp(f) q is df/dY + grad log q, with log q = -reference_energy
    x = torch.randn(3, 3, 2, 4, 4, dtype=torch.float64, generator=g)
    mu = torch.randn(1, 3, 1, 4, 4, dtype=torch.float64, generator=g)
    x.requires_grad_(True)
    (grad_q,) = torch.autograd.grad(reference_energy(x, 0.3, mu, 0.05).sum(), x)
    assert torch.allclose(descriptor_score(zero, 0.3, mu, 0.05)(x.detach()), -grad_q)


def test_chroma_sigma_reference_has_its_own_variance_along_each_pixels_chroma():
    """chroma_sigma s_h: variance s_h^2 along each pixel's chroma (its deviation from the pixel's
    mean over the C channels) and s^2 along the pixel's mean; with colour_sigma as well the score
    is still -grad of reference_energy."""
    s, s_h, step, c = 1.0, 0.25, 0.1, 3
    zero = lambda y: 0 * y.sum(dim=(1, 2, 3, 4))
    g = torch.Generator().manual_seed(1)
    y = revise(zero, torch.zeros(3000, c, 2, 2, 2, dtype=torch.float64), 1500, step, s, g,
               chroma_sigma=s_h)
    grey = y.mean(1, keepdim=True)
    # the pixel mean over channels has variance s^2 / C; the chroma s_h^2 (C - 1) / C per entry
    assert (grey.var() * c).item() == pytest.approx(s ** 2, rel=0.05)
    assert ((y - grey).pow(2).mean() * c / (c - 1)).item() == pytest.approx(s_h ** 2, rel=0.05)
    x = torch.randn(3, 3, 2, 4, 4, dtype=torch.float64, generator=g)
    mu = torch.randn(1, 3, 1, 1, 1, dtype=torch.float64, generator=g)
    x.requires_grad_(True)
    (grad_q,) = torch.autograd.grad(reference_energy(x, 0.3, mu, 0.05, 0.1).sum(), x)
    assert torch.allclose(descriptor_score(zero, 0.3, mu, 0.05, 0.1)(x.detach()), -grad_q)
    # a grey deviation (equal in every channel) costs only |d|^2 / (2 s^2) without colour_sigma
    d = torch.randn(2, 1, 2, 4, 4, dtype=torch.float64, generator=g).expand(2, 3, 2, 4, 4)
    assert torch.allclose(reference_energy(d, 0.3, 0.0, 0.0, 0.1), d.pow(2).flatten(1).sum(1) / 0.18)


def test_same_generator_same_chain_and_different_seed_differs():
    f = lambda y: -(y ** 2).sum(1)
    a = _run(f, 1.0, 0.1, steps=5, shape=(3, 4), seed=7)
    b = _run(f, 1.0, 0.1, steps=5, shape=(3, 4), seed=7)
    c = _run(f, 1.0, 0.1, steps=5, shape=(3, 4), seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_sampling_leaves_parameter_gradients_untouched():
    des, _ = build_nets("fast", 8, 16, 4)
    y0 = torch.randn(2, 3, 8, 16, 16)
    revise(des, y0, 3, 0.002, 0.016, torch.Generator().manual_seed(0))
    assert all(p.grad is None for p in des.parameters())
    for p in des.parameters():
        p.grad = torch.ones_like(p)
    revise(des, y0, 3, 0.002, 0.016, torch.Generator().manual_seed(0))
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in des.parameters())


def test_latent_inference_targets_linear_gaussian_posterior():
    # g(x) = W x: posterior of x given y is Gaussian with precision I + W^T W / sigma^2.
    torch.manual_seed(0)
    d, k, sigma, step = 6, 3, 0.7, 0.1
    W = torch.randn(d, k, dtype=torch.float64) * 0.5
    y = torch.randn(d, dtype=torch.float64)
    P = torch.eye(k, dtype=torch.float64) + W.T @ W / sigma ** 2
    mean = torch.linalg.solve(P, W.T @ y / sigma ** 2)
    n = 20000
    x = infer_latent(lambda x: x @ W.T, torch.zeros(n, k, dtype=torch.float64), y.expand(n, d),
                     400, step, sigma, torch.Generator().manual_seed(1))
    assert torch.allclose(x.mean(0), mean, atol=0.03)
    cov = torch.cov(x.T)
    assert torch.allclose(cov, torch.linalg.inv(P), atol=0.03)


def test_latent_score_given_part_of_y_is_the_score_of_that_part():
    """With ``seen``, the unseen entries of Y leave the likelihood: the score equals the one of
    the model restricted to the seen entries, whatever the unseen ones hold."""
    torch.manual_seed(0)
    d, k, sigma = 8, 3, 0.5
    W = torch.randn(d, k, dtype=torch.float64)
    y = torch.randn(2, d, dtype=torch.float64)
    seen = torch.tensor([1, 0, 1, 1, 0, 0, 1, 1], dtype=torch.bool)
    x = torch.randn(2, k, dtype=torch.float64)
    part = latent_score(lambda x: x @ W.T, y, sigma, seen)(x)
    junk = latent_score(lambda x: x @ W.T, torch.where(seen, y, 9.0), sigma, seen)(x)
    sub = latent_score(lambda x: x @ W[seen].T, y[:, seen], sigma)(x)
    torch.testing.assert_close(part, sub)
    torch.testing.assert_close(junk, sub)
    full = latent_score(lambda x: x @ W.T, y, sigma)(x)
    assert not torch.allclose(full, sub)


def test_langevin_zero_steps_is_identity():
    x = torch.randn(3, 2)
    assert torch.equal(langevin(lambda x: -x, x, 0, 0.1), x)


def test_langevin_is_pure_and_follows_the_update_rule():
    # The update is done in place on a fresh tensor: neither x0 nor what the score returns (here
    # a broadcast view of one shared number) may change, and each step is x + d^2/2 score + d U.
    x0 = torch.randn(4, 5, dtype=torch.float64)
    x0_before = x0.clone()
    drift = torch.tensor([0.5], dtype=torch.float64)
    out = langevin(lambda x: drift.expand_as(x), x0, 3, 0.2, torch.Generator().manual_seed(9))
    assert torch.equal(x0, x0_before) and drift.item() == 0.5
    noise = torch.Generator().manual_seed(9)
    expect = x0.clone()
    for _ in range(3):
        expect = expect + 0.02 * 0.5 + 0.2 * torch.randn(expect.shape, generator=noise, dtype=torch.float64)
    assert torch.allclose(out, expect, rtol=0, atol=1e-12)
