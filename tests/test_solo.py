"""Each network trained alone (dyntex.solo): the descriptor with persistent Langevin chains
(STGConvNet), the generator by alternating back-propagation."""
import copy

import pytest
import torch

from dyntex import solo
from dyntex.config import make_config
from dyntex.coop import CoopNets
from dyntex.errors import DivergenceError
from dyntex.langevin import infer_latent, revise
from dyntex.trainer import lr_factor


def _stripes(frames=8, size=16):
    t = torch.arange(frames).view(frames, 1, 1).float()
    x = torch.arange(size).view(1, 1, size).float()
    y = torch.sin(2 * torch.pi * (x - t) / 6).expand(frames, size, size)
    return torch.stack([0.6 * y, 0.3 * y, -0.5 * y])[None]          # (1, 3, T, S, S)


def _model(**kw):
    torch.manual_seed(0)
    model = CoopNets(make_config("tiny", **kw))
    obs = _stripes()
    model.init_from_data(obs[0].mean(dim=1) + 0.1)                  # a non-zero reference mean
    return model, obs


def _sgd(monkeypatch):
    """Plain SGD in place of Adam, so the written-out reference can match to rounding."""
    monkeypatch.setattr(solo, "_optimizer", lambda params, lr, beta1: torch.optim.SGD(params, lr=lr))
    return lambda params, lr: torch.optim.SGD(params, lr=lr)


def test_descriptor_alone_is_persistent_chains_and_eq9(monkeypatch):
    """Two iterations equal the scheme written out: chains start at mu, are revised by l steps
    on the current descriptor, and theta ascends mean f(observed) - mean f(chains)."""
    sgd = _sgd(monkeypatch)
    model, obs = _model(iters=2, lr_des=0.5)
    ref, start = copy.deepcopy(model), copy.deepcopy(model)
    cfg = model.config
    chains = solo.train_descriptor(model, obs, chains=3, generator=torch.Generator().manual_seed(5))

    g = torch.Generator().manual_seed(5)
    opt = sgd(ref.descriptor.parameters(), cfg.lr_des)
    y = ref.ref_mean.expand(3, -1, cfg.frames, -1, -1).clone()
    for _ in range(2):
        y = revise(ref.descriptor, y, cfg.langevin_steps, cfg.step_size, cfg.ref_sigma, g,
                   ref.ref_mean)
        opt.zero_grad()
        (ref.descriptor(y).mean() - ref.descriptor(obs).mean()).backward()
        opt.step()
    assert chains.shape == (3, 3, cfg.frames, cfg.size, cfg.size)
    torch.testing.assert_close(chains, y, rtol=1e-4, atol=1e-5)
    assert _moved(model, start, ref) < 1e-4
    # the chains moved away from their start, and the generator was not touched
    assert (chains - model.ref_mean).abs().mean() > 0.1 * cfg.step_size
    for p, q in zip(model.generator.parameters(), CoopNets(cfg).generator.parameters()):
        assert p.shape == q.shape


def test_descriptor_alone_learns_to_prefer_observed_clips():
    model, obs = _model(iters=30)
    chains = solo.train_descriptor(model, obs, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        gap = model.descriptor(obs).mean() - model.descriptor(chains).mean()
    assert gap > 0.1, float(gap)


def test_generator_alone_fits_the_observed_clip():
    """Alternating back-propagation: after training, g of the inferred latent reconstructs the
    observed clip far better than at the start (fails if either half does nothing)."""
    model, obs = _model(iters=60, lr_gen=3e-3, infer_step_size=0.05, gen_sigma=0.3)
    g = torch.Generator().manual_seed(0)
    z0 = model.draw_latents(1, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = (model.generator(z0) - obs).pow(2).mean()
    z = solo.train_generator(model, obs, generator=g)
    with torch.no_grad():
        after = (model.generator(z) - obs).pow(2).mean()
    assert after < 0.5 * before, (float(before), float(after))
    assert not torch.equal(z, z0)                                   # the latent was inferred


def test_generator_alone_one_iteration_is_inference_then_regression(monkeypatch):
    sgd = _sgd(monkeypatch)
    model, obs = _model(iters=1, infer_steps=2, lr_gen=1e-3)
    ref, start = copy.deepcopy(model), copy.deepcopy(model)
    cfg = model.config
    solo.train_generator(model, obs, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    z = ref.draw_latents(1, generator=g)
    z = infer_latent(ref.generator, z, obs, 2, cfg.infer_step_size, cfg.gen_sigma, g)
    opt = sgd(ref.generator.parameters(), cfg.lr_gen)
    ((obs - ref.generator(z)).pow(2).sum() / (2 * cfg.gen_sigma ** 2)).backward()
    opt.step()
    assert _moved(model, start, ref) < 1e-4


def _moved(model, start, ref) -> float:
    """Relative difference of how far ``model``'s and ``ref``'s parameters moved from ``start``
    up to rounding)."""
    moved, expected = [], []
    for p, p0, q in zip(model.parameters(), start.parameters(), ref.parameters()):
        moved.append((p - p0).detach().flatten())
        expected.append((q - p0).detach().flatten())
    moved, expected = torch.cat(moved), torch.cat(expected)
    assert expected.norm() > 0
    return float((moved - expected).norm() / expected.norm())


def test_descriptor_alone_stops_on_non_finite_chains():
    model, obs = _model(iters=3, step_size=1e12)
    with pytest.raises(DivergenceError, match="non-finite"):
        solo.train_descriptor(model, obs, generator=torch.Generator().manual_seed(0))


def test_cosine_schedule_factor():
    assert lr_factor("constant", 5, 10) == 1.0
    assert lr_factor("cosine", 0, 10) == pytest.approx(1.0)
    assert lr_factor("cosine", 9, 10) == pytest.approx(0.1)
    values = [lr_factor("cosine", s, 10) for s in range(10)]
    assert all(a > b for a, b in zip(values, values[1:]))
