"""One cooperative iteration against Algorithm 1 written out, and synthesis."""
import math

import pytest
import torch

from dyntex.config import make_config
from dyntex.coop import CoopNets, Optimizers, train_step
from dyntex.opticalflow import flow_values


def _stripes(frames=8, size=16):
    """A simple dynamic texture: vertical stripes drifting right, in [-1, 1]."""
    t = torch.arange(frames).view(frames, 1, 1)
    x = torch.arange(size).view(1, 1, size)
    img = torch.sin(2 * math.pi * (x - 2 * t) / 8).expand(frames, size, size)
    return torch.stack([img, 0.5 * img, -img]).unsqueeze(0) * 0.8  # (1, 3, T, S, S)


def _model(**kw):
    torch.manual_seed(0)
    return CoopNets(make_config("tiny", **kw))


def _rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def _input_grad(fn, x):
    x = x.detach().requires_grad_(True)
    return torch.autograd.grad(fn(x).sum(), x)[0]


def _algorithm_1(model, observed, seed, lr_des, lr_gen):
    """One iteration of Algorithm 1 (Xie et al., TPAMI) written out from the paper's equations,
    with plain SGD, on ``model`` in place. Returns (descriptor loss, generator loss)."""
    cfg = model.config
    des, gen = model.descriptor, model.generator
    g = torch.Generator().manual_seed(seed)
    # G0: X ~ N(0, I), Y^ = g(X)
    z = torch.randn((cfg.chains, *gen.latent_shape()), generator=g)
    y_gen = gen(z)
    # D1 (Eq. 8): Y <- Y + d^2/2 (df/dY - (Y - mu)/s^2) + d U, l times from Y^
    d, s = cfg.step_size, cfg.ref_sigma

    def eq8(y):
        for _ in range(cfg.langevin_steps):
            y = y + d ** 2 / 2 * (_input_grad(des, y) - (y - model.ref_mean) / s ** 2)
            y = y + d * torch.randn(y.shape, generator=g)
        return y

    y = eq8(y_gen.detach())
    # persistent chains: l more steps of Eq. 8 from their last state, synthesized clips too
    chains = eq8(model.chain_states.clone()) if cfg.persistent else y[:0]
    model.chain_states.copy_(chains)
    # G1 (Eq. 16): X <- X + d'^2/2 (-X + (dg/dX)^T (Y~ - g(X)) / sigma^2) + d' U
    d1, sigma = cfg.infer_step_size, cfg.gen_sigma
    for _ in range(cfg.infer_steps):
        fit = _input_grad(lambda x: -0.5 * (y - gen(x)).pow(2).flatten(1).sum(1) / sigma ** 2, z)
        z = z + d1 ** 2 / 2 * (fit - z)
        z = z + d1 * torch.randn(z.shape, generator=g)
    y_fit = gen(z) if cfg.infer_steps else y_gen
    # marginal_weight: each clip's and channel's sorted values against the observed values at the
    # same ranks (the observed clips pooled, before any data noise)
    marginal = 0.0
    for i in range(cfg.chains if cfg.marginal_weight else 0):
        for c in range(y_fit.shape[1]):
            mine, theirs = y_fit[i, c].flatten().sort().values, observed[:, c].flatten().sort().values
            ranks = torch.linspace(0, len(theirs) - 1, len(mine)).round().long()
            marginal = marginal + ((mine - theirs[ranks]) ** 2).sum()
    # flow_weight: the same on each clip's local-flow views (projections, magnitude) at full
    # resolution (every second pixel) and on f x f block means (f = 2, 4; every pixel, the flow
    # times f), each scale's sum over f^2, all averaged over the views
    flow = 0.0
    for f in (1, 2, 4) if cfg.flow_weight else ():
        def pooled(v):
            b, c, t, h, w = v.shape
            return v.reshape(b, c, t, h // f, f, w // f, f).mean(dim=(4, 6))
        theirs_all = flow_values(pooled(observed), stride=2 if f == 1 else 1) * f
        for i in range(cfg.chains):
            mine_all = flow_values(pooled(y_fit[i:i + 1]), stride=2 if f == 1 else 1)[0] * f
            for k in range(len(mine_all)):
                mine, theirs = mine_all[k].sort().values, theirs_all[:, k].flatten().sort().values
                ranks = torch.linspace(0, len(theirs) - 1, len(mine)).round().long()
                flow = flow + ((mine - theirs[ranks]) ** 2).sum() / len(mine_all) / f ** 2
    # data_noise: the observed clips the descriptor sees get fresh N(0, data_noise^2) noise
    if cfg.data_noise:
        observed = observed + cfg.data_noise * torch.randn(observed.shape, generator=g)
    # D2 (Eq. 9): descend mean f(Y~) - mean f(Y) (each set through the descriptor on its own)
    des_loss = des(torch.cat([y, chains])).mean() - des(observed).mean()
    d_grads = torch.autograd.grad(des_loss, list(des.parameters()))
    # G2 (Eq. 17): descend mean_i |Y~_i - g(X_i)|^2 / (2 sigma^2)
    gen_loss = (sum(((y[i] - y_fit[i]) ** 2).sum() for i in range(cfg.chains))
                + cfg.marginal_weight * marginal + cfg.flow_weight * flow) / cfg.chains \
        / (2 * sigma ** 2)
    g_grads = torch.autograd.grad(gen_loss, list(gen.parameters()))
    with torch.no_grad():
        for params, grads, lr in ((des.parameters(), d_grads, lr_des), (gen.parameters(), g_grads, lr_gen)):
            for p, grad in zip(params, grads):
                p -= lr * grad
    return des_loss.item(), gen_loss.item()


# the standard preset's networks: multi-scale, layout map, frame bias, motion branch, and the
# reference distribution centred on the observed mean frame
MULTISCALE = dict(arch="multiscale", layout_channels=2, frame_bias="mean", motion_channels=4,
                  ref_mean="frame")


@pytest.mark.parametrize("arch,frames,size,infer_steps,extra", [
    ("fast", 8, 16, 0, {}), ("fast", 8, 16, 2, {}), ("paper", 28, 16, 0, {}),
    ("multiscale", 16, 16, 0, MULTISCALE), ("multiscale", 16, 16, 2, MULTISCALE),
    ("multiscale", 16, 16, 0, {**MULTISCALE, "persistent": 2}),
    ("multiscale", 16, 16, 2, {**MULTISCALE, "data_noise": 0.05}),
    ("multiscale", 16, 16, 0, {**MULTISCALE, "marginal_weight": 0.5, "chains": 2}),
    ("multiscale", 16, 16, 0, {**MULTISCALE, "flow_weight": 0.5, "chains": 2})])
def test_train_step_is_algorithm_1(arch, frames, size, infer_steps, extra):
    """train_step (fast formulations, steps inside the backward pass) against the written-out
    iteration: both losses and every network's update (SGD, so the update is the gradient)."""
    cfg_kw = dict(extra, arch=arch, frames=frames, size=size, infer_steps=infer_steps,
                  langevin_steps=3)
    model, ref = _model(**cfg_kw), _model(**cfg_kw)
    for m in (model, ref):
        m.init_from_data(_stripes(frames, size)[0].mean(1))
    with torch.no_grad():  # weights large enough that the energies and revisions matter
        for a, b in zip(model.descriptor.parameters(), ref.descriptor.parameters()):
            a.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(a.numel()))
            b.copy_(a)
    observed = _stripes(frames, size)
    lr_des, lr_gen = 1e-3, 1e-2
    before = [p.detach().clone() for p in model.parameters()]
    opts = Optimizers(torch.optim.SGD(model.descriptor.parameters(), lr=lr_des),
                      torch.optim.SGD(model.generator.parameters(), lr=lr_gen))
    stats = train_step(model, opts, observed, torch.Generator().manual_seed(7))
    des_loss, gen_loss = _algorithm_1(ref, observed, 7, lr_des, lr_gen)
    assert stats["des_loss"] == pytest.approx(des_loss, rel=1e-4, abs=1e-6)
    assert stats["gen_loss"] == pytest.approx(gen_loss, rel=1e-4)
    assert stats["langevin_rms"] > 0
    if model.config.persistent:     # the chains moved from mu, and as written out
        assert (model.chain_states - model.ref_mean).abs().max() > 1e-4
        assert _rel(model.chain_states, ref.chain_states) < 1e-4
    for net, ref_net in ((model.descriptor, ref.descriptor), (model.generator, ref.generator)):
        start = dict(zip((id(p) for p in model.parameters()), before))
        moved = torch.cat([(p.detach() - start[id(p)]).flatten() for p in net.parameters()])
        expected = torch.cat([(q.detach() - start[id(p)]).flatten()
                              for p, q in zip(net.parameters(), ref_net.parameters())])
        assert expected.norm() > 0 and _rel(moved, expected) < 1e-4


def test_marginal_loss_is_the_sorted_value_distance_and_matches_histograms():
    """marginal_loss: zero for the reference's values in any order, T H W c^2 per channel for a
    shift by c, and descending it moves a clip's value histograms onto the reference's."""
    from dyntex.coop import marginal_loss, sorted_values
    from dyntex.eval.metrics import color_distance

    g = torch.Generator().manual_seed(0)
    ref = torch.rand(1, 3, 4, 8, 8, generator=g) * 2 - 1
    ref_sorted = sorted_values(ref)
    shuffled = ref.flatten(2)[:, :, torch.randperm(256, generator=g)].view_as(ref)
    assert marginal_loss(shuffled, ref_sorted).item() == pytest.approx(0.0, abs=1e-9)
    assert marginal_loss(ref + 0.1, ref_sorted).item() == pytest.approx(3 * 256 * 0.01, rel=1e-4)
    # a two-clip batch against a longer reference: the mean over clips, at matching ranks
    assert marginal_loss(torch.cat([ref, ref + 0.2]), sorted_values(torch.cat([ref, ref]))).item() \
        == pytest.approx(3 * 256 * 0.04 / 2, rel=1e-4)
    y = (0.3 * torch.randn(2, 3, 4, 8, 8, generator=g)).requires_grad_(True)
    to_unit = lambda c: ((c[0].detach().permute(1, 2, 3, 0) + 1) / 2).clamp(0, 1).numpy()
    before = color_distance(to_unit(y), to_unit(ref))
    for _ in range(20):
        loss = marginal_loss(y, ref_sorted)
        (grad,) = torch.autograd.grad(loss, y)
        with torch.no_grad():
            y -= 0.2 * grad
    assert before > 0.3 and color_distance(to_unit(y), to_unit(ref)) < 0.1 * before


def test_marginal_term_compares_each_class_with_its_own_observed_clips():
    """A class-conditional model: each chain's values against the observed clips of its class
    in the batch; a class the batch lacks gets no term (and no gradient)."""
    from dyntex.coop import marginal_loss, marginal_term, sorted_values

    g = torch.Generator().manual_seed(1)
    obs = torch.rand(3, 3, 4, 8, 8, generator=g) * 2 - 1
    obs_labels = torch.tensor([0, 2, 0])
    y = torch.randn(6, 3, 4, 8, 8, generator=g).requires_grad_(True)
    y_labels = torch.tensor([0, 0, 1, 1, 2, 2])
    term = marginal_term(y, obs, y_labels, obs_labels)
    expected = (2 * marginal_loss(y[:2], sorted_values(obs[[0, 2]]))
                + 2 * marginal_loss(y[4:], sorted_values(obs[[1]]))) / 6
    assert term.item() == pytest.approx(expected.item(), rel=1e-6)
    (grad,) = torch.autograd.grad(term, y)
    assert grad[2:4].abs().max() == 0 and grad[:2].abs().min() > 0 and grad[4:].abs().min() > 0
    # unconditional: the observed clips pooled, as marginal_loss
    assert marginal_term(y, obs).item() == pytest.approx(
        marginal_loss(y, sorted_values(obs)).item(), rel=1e-6)


def test_descriptor_learns_to_prefer_observed_clips():
    model = _model()
    opts = Optimizers.for_model(model)
    obs, g = _stripes(), torch.Generator().manual_seed(0)
    gaps = [s["energy_obs"] - s["energy_syn"] for s in (train_step(model, opts, obs, g) for _ in range(6))]
    assert gaps[0] < 1e-2  # weights start at N(0, 0.001^2): both energies are ~0
    assert all(gap > 0 for gap in gaps[1:]) and max(gaps) > 1.0


def test_synthesize_renders_latents_in_groups_of_the_chain_count():
    """n = 3 clips with 2 chains: latents drawn as one (4, ...) batch from the generator,
    rendered as two batches of 2 (BatchNorm sees the training batch size), the 4th dropped."""
    model = _model(chains=2)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    clips = model.synthesize(3, generator=torch.Generator().manual_seed(5))
    assert clips.shape == (3, 3, 8, 16, 16) and clips.abs().max() <= 1
    z = torch.randn((4, *model.generator.latent_shape()), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = torch.cat([model.generator(z[:2]), model.generator(z[2:])])[:3]
        ungrouped = model.generator(z[:3])                     # one batch of 3: other statistics
    assert torch.allclose(clips, expected, atol=1e-6)
    assert (ungrouped - expected).abs().max() > 1e-3
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    # different latents give different clips; same seed reproduces
    assert torch.equal(clips, model.synthesize(3, generator=torch.Generator().manual_seed(5)))
    assert (clips[0] - clips[1]).abs().mean() > 1e-4


def test_synthesize_longer_and_refined():
    model = _model()
    long = model.synthesize(2, frames=20, generator=torch.Generator().manual_seed(0))
    assert long.shape == (2, 3, 20, 16, 16)
    base = model.synthesize(2, generator=torch.Generator().manual_seed(0))
    refined = model.synthesize(2, langevin_steps=3, generator=torch.Generator().manual_seed(0))
    assert refined.shape == base.shape and not torch.equal(refined, base)


def test_steps_in_backward_give_the_same_iteration():
    # Without `sync` every parameter is stepped inside the backward pass as its gradient completes
    # (the spatially fully-connected weights slice by slice: fastops.step_in_backward); with one
    # (here the identity) both updates follow both whole gradients. The iteration is the same
    # either way (to rounding: the sliced weight gradient sums its taps in another order).
    runs = []
    for sync in (None, lambda _model, stats: stats):
        model = _model(arch="paper", frames=28, size=8)
        opts = Optimizers.for_model(model)
        stats = [train_step(model, opts, _stripes(28, 8), torch.Generator().manual_seed(0), sync)
                 for _ in range(2)]
        runs.append((model, stats))
        if sync is None:
            assert all(p.grad is None for p in model.parameters())  # stepped in backward, freed
    (m1, s1), (m2, s2) = runs
    for a, b in zip(s1, s2):
        assert all(abs(a[k] - b[k]) <= 1e-5 * abs(b[k]) + 1e-9 for k in b)
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert (a - b).norm() <= 1e-5 * b.norm(), k
