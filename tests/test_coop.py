"""One cooperative iteration, and synthesis."""
import math

import torch

from dyntex.config import make_config
from dyntex.coop import CoopNets, Optimizers, train_step


def _stripes(frames=8, size=16):
    """A simple dynamic texture: vertical stripes drifting right, in [-1, 1]."""
    t = torch.arange(frames).view(frames, 1, 1)
    x = torch.arange(size).view(1, 1, size)
    img = torch.sin(2 * math.pi * (x - 2 * t) / 8).expand(frames, size, size)
    return torch.stack([img, 0.5 * img, -img]).unsqueeze(0) * 0.8  # (1, 3, T, S, S)


def _model(**kw):
    torch.manual_seed(0)
    return CoopNets(make_config("tiny", **kw))


def test_one_step_finite_and_both_nets_change():
    model = _model()
    opts = Optimizers.for_model(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stats = train_step(model, opts, _stripes(), torch.Generator().manual_seed(0))
    assert set(stats) == {"des_loss", "gen_loss", "energy_obs", "energy_syn", "langevin_rms"}
    assert all(math.isfinite(v) for v in stats.values())
    after = model.state_dict()
    for prefix in ("descriptor.", "generator."):
        changed = [k for k in before if k.startswith(prefix) and not torch.equal(before[k], after[k])]
        assert changed, f"no {prefix} parameter changed"


def test_descriptor_learns_to_prefer_observed_clips():
    model = _model()
    opts = Optimizers.for_model(model)
    obs, g = _stripes(), torch.Generator().manual_seed(0)
    gaps = [s["energy_obs"] - s["energy_syn"] for s in (train_step(model, opts, obs, g) for _ in range(6))]
    assert gaps[0] < 1e-2  # weights start at N(0, 0.001^2): both energies are ~0
    assert all(gap > 0 for gap in gaps[1:]) and max(gaps) > 1.0


def test_generator_update_regresses_onto_revised_clips():
    # With the descriptor frozen (lr tiny) the generator loss must fall: it fits its own revisions.
    model = _model(lr_des=1e-12, lr_gen=0.01)
    opts = Optimizers.for_model(model)
    obs, g = _stripes(), torch.Generator().manual_seed(0)
    losses = [train_step(model, opts, obs, g)["gen_loss"] for _ in range(8)]
    assert losses[-1] < losses[0]


def test_latent_inference_option_runs():
    model = _model(infer_steps=2)
    stats = train_step(model, Optimizers.for_model(model), _stripes(), torch.Generator().manual_seed(0))
    assert all(math.isfinite(v) for v in stats.values())


def test_synthesize_is_the_training_time_generator_and_changes_nothing():
    model = _model(chains=2)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    clips = model.synthesize(3, generator=torch.Generator().manual_seed(5))
    assert clips.shape == (3, 3, 8, 16, 16) and clips.abs().max() <= 1
    # same latents, rendered as in training (groups of `chains`, batch statistics)
    z = model.draw_latents(4, generator=torch.Generator().manual_seed(5))
    model.train()
    expected = torch.cat([model.generator(z[:2]), model.generator(z[2:])])[:3]
    assert torch.allclose(clips, expected.detach(), atol=1e-6)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    # different latents give different clips; same seed reproduces
    again = model.synthesize(3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(clips, again)
    assert (clips[0] - clips[1]).abs().mean() > 1e-4


def test_synthesize_longer_and_refined():
    model = _model()
    long = model.synthesize(2, frames=20, generator=torch.Generator().manual_seed(0))
    assert long.shape == (2, 3, 20, 16, 16)
    base = model.synthesize(2, generator=torch.Generator().manual_seed(0))
    refined = model.synthesize(2, langevin_steps=3, generator=torch.Generator().manual_seed(0))
    assert refined.shape == base.shape and not torch.equal(refined, base)


def test_early_generator_update_gives_the_same_iteration():
    # Without `sync` the generator is stepped and its gradient freed before the descriptor's
    # gradient is made, and the spatially fully-connected weights are stepped in slices during
    # the backward passes (fastops.step_in_backward); with one (here the identity) both updates
    # follow both whole gradients. The iteration is the same either way (to rounding: the
    # descriptor's sliced weight gradient sums its taps in another order).
    runs = []
    for sync in (None, lambda _model, stats: stats):
        model = _model(arch="paper", frames=28, size=8)
        opts = Optimizers.for_model(model)
        stats = [train_step(model, opts, _stripes(28, 8), torch.Generator().manual_seed(0), sync)
                 for _ in range(2)]
        runs.append((model, stats))
        if sync is None:
            fc = model.descriptor.body[2].weight
            assert fc.grad is None
            assert all(p.grad is None for p in model.parameters())  # stepped in backward, freed
    (m1, s1), (m2, s2) = runs
    for a, b in zip(s1, s2):
        assert all(abs(a[k] - b[k]) <= 1e-5 * abs(b[k]) + 1e-9 for k in b)
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert (a - b).norm() <= 1e-5 * b.norm(), k
