"""The standard preset's model: multi-scale stationary networks, layout map, frame bias, motion
branch, reference mean, generator EMA, and their round trip through a checkpoint."""
import math

import pytest
import torch

from dyntex.config import make_config
from dyntex.coop import CoopNets, Optimizers, train_step
from dyntex.errors import ConfigError
from dyntex.nets import build_nets
from dyntex.trainer import Trainer, checkpoint_paths, load_model


def _small(**kw):
    """The standard preset, shrunk to test size."""
    return make_config("standard", frames=16, size=16, latent_channels=4, layout_channels=2,
                       motion_channels=4, langevin_steps=2, **kw)


def _clips(n=2, frames=16, size=16):
    g = torch.Generator().manual_seed(3)
    base = torch.rand(n, 3, 1, size, size, generator=g) * 1.2 - 0.6
    wave = 0.3 * torch.sin(torch.arange(frames) / 2.0).view(1, 1, frames, 1, 1)
    return (base + wave).clamp(-1, 1)


def test_multiscale_networks_are_fully_convolutional():
    """Trained at 16 x 16^2, the same weights render and score larger frames and longer clips."""
    torch.manual_seed(0)
    des, gen = build_nets("multiscale", 16, 16, 4, layout_channels=2, motion_channels=(4, 8, 16))
    z = torch.randn(2, *gen.latent_shape())
    assert gen.latent_shape() == (4 + 8 + 64, gen.latent_frames(), 2, 2)  # factors + noise maps
    y = gen(z)
    assert y.shape == (2, 3, 16, 16, 16) and y.abs().max() <= 1
    big = gen(torch.randn(2, *gen.latent_shape(24, 48)), 24)
    assert big.shape == (2, 3, 24, 48, 48)
    with torch.no_grad():
        for p in des.parameters():
            p.normal_(0.0, 0.05)
    assert des(y).shape == (2,) and torch.isfinite(des(big[:, :, :16, :16, :16])).all()
    # clips of a batch do not interact in the descriptor (observed and revised share a batch)
    a, b = torch.randn(2, 3, 16, 16, 16), torch.randn(3, 3, 16, 16, 16)
    assert torch.allclose(des(torch.cat([a, b])), torch.cat([des(a), des(b)]), rtol=1e-5, atol=1e-6)


def test_noise_maps_change_detail_not_the_coarse_clip():
    """The per-pixel noise (StyleGAN-like) varies the fine detail of a clip; the coarse factors
    decide the rest: two noise draws with the same factors differ less than two factor draws."""
    torch.manual_seed(0)
    _, gen = build_nets("multiscale", 16, 32, 8)
    z = torch.randn(4, *gen.latent_shape())
    other_noise, other_factors = z.clone(), z.clone()
    other_noise[:, 8:] = torch.randn_like(z[:, 8:])
    other_factors[:, :8] = torch.randn_like(z[:, :8])
    with torch.no_grad():
        y, y_noise, y_factors = gen(z), gen(other_noise), gen(other_factors)
    assert 0 < (y - y_noise).abs().mean() < (y - y_factors).abs().mean()


def test_noise_weight_setting_starts_the_noise_maps_and_scales_their_detail():
    """config noise_weight is every noise map's starting weight; a larger one makes two noise
    draws with the same factors differ more (before BatchNorm renormalises, the noise's share of
    each stage's output grows); the standard preset starts them at 0.6."""
    outs = {}
    for w in (0.2, 1.0):
        torch.manual_seed(0)
        model = CoopNets(_small(noise_weight=w))
        weights = [s.noise_weight for s in model.generator.stages if s.noise_weight is not None]
        assert weights and all(torch.all(x == w) for x in weights)
        z = torch.randn(4, *model.generator.latent_shape())
        other = z.clone()
        other[:, 4:] = torch.randn_like(z[:, 4:])
        with torch.no_grad():
            outs[w] = (model.generator(z) - model.generator(other)).abs().mean()
    assert outs[1.0] > 1.5 * outs[0.2]
    torch.manual_seed(0)
    default = CoopNets(_small())
    assert default.config.noise_weight == 0.6
    torch.manual_seed(0)
    same = CoopNets(_small(noise_weight=0.6))
    for (k, a), b in zip(default.state_dict().items(), same.state_dict().values()):
        assert torch.equal(a, b), k


def test_bilinear_fine_upsampling_has_no_fixed_two_pixel_grid():
    """fine_upsample "bilinear": the full-resolution stage upsamples bilinearly, then convolves,
    so with the noise maps at zero (what is fixed in a clip, not random) the rendered frames carry
    next to no power on the 2-pixel (Nyquist) lines, where a transposed convolution's four
    sub-kernels put a large share; the latent's shape does not change."""
    def nyquist_share(up):
        torch.manual_seed(0)
        _, gen = build_nets("multiscale", 16, 32, 4, fine_channels=8, fine_upsample=up)
        with torch.no_grad():
            for p in gen.parameters():
                if p.ndim == 5:          # convolution weights, larger than at initialisation
                    p.normal_(0.0, 0.1)
            z = torch.randn(2, *gen.latent_shape())
            z[:, 4:] = 0                 # no noise maps: only what the factors fix
            g = gen(z).mean(1)
        power = torch.fft.fft2(g - g.mean(dim=(2, 3), keepdim=True)).abs().pow(2)
        return float((power[..., 16, :].sum() + power[..., :, 16].sum()) / power.sum()), gen

    grid, plain = nyquist_share("transposed")
    smooth, gen = nyquist_share("bilinear")
    assert grid > 0.1 and smooth < 0.05 * grid
    assert gen.latent_shape() == plain.latent_shape()
    assert not any(isinstance(m, torch.nn.ConvTranspose3d) for m in gen.stages[-1].modules())


def test_advect_moves_noise_along_the_flow_and_renews_it():
    """A whole-pixel flow carries a pattern exactly by that many pixels per frame (rho 1); rho 0
    is fresh noise in every frame; with no flow the maps are an AR(1) in time: unit variance and
    correlation rho between consecutive frames."""
    from dyntex.multiscale import advect

    n = torch.zeros(1, 1, 4, 16, 16)
    n[0, 0, 0, 5, 4] = 1.0
    flow = torch.zeros(1, 2, 4, 16, 16)
    flow[:, 0], flow[:, 1] = 2.0, -1.0                      # 2 px right, 1 px up per frame
    out = advect(n, flow, 1.0)
    for k in range(4):
        assert out[0, 0, k, 5 - k, 4 + 2 * k] == pytest.approx(1.0, abs=1e-5)
        assert out[0, 0, k].sum() == pytest.approx(1.0, abs=1e-5)
    x = torch.randn(3000, 1, 6, 4, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(advect(x, torch.zeros(3000, 2, 6, 4, 4), 0.0), x)
    y = advect(x, torch.zeros(3000, 2, 6, 4, 4), 0.8)
    assert torch.allclose(y.var(dim=(0, 3, 4)), torch.ones(1, 6), atol=0.06)
    assert (y[:, :, 1:] * y[:, :, :-1]).mean().item() == pytest.approx(0.8, abs=0.03)


def test_shift_translates_exactly_and_has_no_preferred_direction():
    """The global field's Fourier shift: a whole-pixel velocity moves a map exactly (with
    wrap-around), a fractional one keeps its energy (odd sizes: no Nyquist row), a zero velocity is
    the same AR(1) as :func:`advect` with no flow; and the energy's gradient at zero velocity is
    nil where the bilinear warp's is large and positive (the blur bias it replaces)."""
    from dyntex.multiscale import advect, shift

    g = torch.Generator().manual_seed(0)
    n = torch.randn(2, 1, 4, 16, 16, generator=g)
    v = torch.zeros(2, 2, 4)
    v[:, 0], v[:, 1] = 2.0, -1.0                          # 2 px right, 1 px up per frame
    out = shift(torch.cat([n[:, :, :1], torch.zeros_like(n[:, :, 1:])], 2), v, 1.0)
    for k in range(4):
        assert torch.allclose(out[:, 0, k], n[:, 0, 0].roll((-k, 2 * k), (-2, -1)), atol=1e-5)
    x = torch.randn(500, 1, 6, 8, 8, generator=g)
    zero = torch.zeros(500, 2, 6)
    assert torch.equal(shift(x, zero, 0.0), x)
    assert torch.allclose(shift(x, zero, 0.8), advect(x, torch.zeros(500, 2, 6, 8, 8), 0.8),
                          atol=1e-5)
    odd = torch.randn(3, 1, 2, 15, 15, generator=g)
    moved = shift(odd, torch.full((3, 2, 2), 0.37), 1.0)
    assert torch.allclose(moved[:, :, 1].pow(2).sum(), odd[:, :, 0].pow(2).sum(), rtol=1e-4)
    assert not torch.allclose(moved[:, :, 1], odd[:, :, 0], atol=0.1)

    def energy_gradient(carry, velocity):
        velocity.requires_grad_(True)
        carry(n, velocity, 1.0).pow(2).sum().backward()
        return velocity.grad
    global_grad = energy_gradient(shift, torch.zeros(2, 2, 4))
    local_grad = energy_gradient(advect, torch.zeros(2, 2, 4, 16, 16)).sum(dim=(3, 4))
    assert (local_grad[:, :, 1:] > 10).all()              # bilinear: blurring lowers the energy
    assert global_grad.abs().max() < 1e-3 * local_grad[:, :, 1:].min()
    # the module's global field: one velocity from the conv's spatial mean, in the map's pixels
    from dyntex.multiscale import FLOW_MAX, NoiseFlow
    carry = NoiseFlow(4, 0.9, "global")
    with torch.no_grad():
        carry.conv.bias.fill_(0.3)
        features, noise = torch.randn(1, 4, 4, 8, 8, generator=g), n[:1]
        velocity = carry.velocity(features, noise.shape[-3:])
        assert velocity.shape == (1, 2, 4)
        assert torch.allclose(velocity, torch.full_like(velocity, 2 * FLOW_MAX * math.tanh(0.3)))
        assert torch.allclose(carry(features, noise), shift(noise, velocity, 0.9))


@pytest.mark.parametrize("field", ["local", "global"])
def test_noise_flow_is_learned_and_moves_the_fine_detail(field):
    """noise_flow: the generator's finest noise map is carried by a flow that starts at zero,
    receives gradient from the output (so training can learn it), and changes the clips once it
    is non-zero; the setting round-trips through a checkpoint."""
    torch.manual_seed(0)
    model = CoopNets(_small(fine_channels=4, noise_flow=0.9, noise_flow_field=field))
    gen = model.generator
    assert gen.noise_flow is not None and not gen.noise_flow.conv.weight.any()
    assert gen.noise_flow.field == field
    z = torch.randn(2, *gen.latent_shape(), generator=torch.Generator().manual_seed(1))
    gen.train()
    gen(z).pow(2).sum().backward()
    assert gen.noise_flow.conv.weight.grad.abs().sum() > 0
    gen.eval()
    with torch.no_grad():
        still = gen(z)
        gen.noise_flow.conv.bias.fill_(1.0)                 # a uniform drift
        moving = gen(z)
    assert (moving - still).abs().mean() > 1e-3
    assert CoopNets(_small()).generator.noise_flow is None


def test_noise_flow_round_trips_through_a_checkpoint(tmp_path):
    Trainer(_small(fine_channels=4, noise_flow=0.9, noise_flow_field="global", iters=2),
            run_dir=tmp_path / "run").fit(_clips())
    model, _ = load_model(tmp_path / "run")
    assert model.config.noise_flow == 0.9
    assert model.generator.noise_flow.field == "global"
    assert model.generator.noise_flow is not None and model.generator.noise_flow.conv.weight.any()


def test_fine_stage_adds_full_resolution_noise_and_a_stride_one_descriptor_scale():
    """fine_channels: the generator's last stage runs at full resolution with its own noise map
    (one latent channel per pixel of a 4 x 8 x 8 block of each coarse cell), so one noise value
    changes mainly the 3 x 3 x 3 pixels around it (elsewhere only through the batch statistics);
    des_fine_channels: the descriptor adds a stride-1 scale to f (each is independent)."""
    torch.manual_seed(0)
    alone, _ = build_nets("multiscale", 16, 16, 4, fine_channels=3)
    assert alone.fine_layer is None
    _, plain = build_nets("multiscale", 16, 16, 4, des_fine_channels=3)
    assert plain.latent_shape()[0] == 4 + 8 + 64  # no full-resolution noise block
    des, gen = build_nets("multiscale", 16, 16, 4, fine_channels=3, des_fine_channels=3)
    assert gen.latent_shape() == (4 + 8 + 64 + 256, gen.latent_frames(), 2, 2)
    assert gen.stages[-1].grid == (4, 8, 8) and gen.stages[-1].noise_weight is not None
    z = torch.randn(2, *gen.latent_shape())
    poked = z.clone()
    # one full-resolution noise value: channel 9 of that block (pixel offset (0, 1, 1)), cell (1, 1)
    poked[0, 4 + 8 + 64 + 9, gen.latent_frames() // 2, 1, 1] += 0.01
    with torch.no_grad():
        change = (gen(poked) - gen(z))[0].abs().amax(dim=0)  # (T, H, W)
    t, h, w = (int(i) for i in torch.unravel_index(change.argmax(), change.shape))
    assert abs(h - 9) <= 1 and abs(w - 9) <= 1  # around pixel (8 + 1, 8 + 1) of the frame
    near = torch.zeros_like(change, dtype=torch.bool)
    near[max(t - 2, 0):t + 3, max(h - 2, 0):h + 3, max(w - 2, 0):w + 3] = True
    assert change[~near].max() < 0.02 * change.max()  # a 3^3 conv after the noise, nothing coarser
    assert gen(torch.randn(1, *gen.latent_shape(16, 32)), 16).shape == (1, 3, 16, 32, 32)
    with torch.no_grad():
        for p in des.parameters():
            p.normal_(0.0, 0.1)
        y = torch.rand(2, 3, 16, 16, 16) * 2 - 1
        full = des(y)
        layer, des.fine_layer = des.fine_layer, None
        without = des(y)
        des.fine_layer = layer
        fine_term = des.fine_head(des.fine_layer(y)).sum(dim=(1, 2, 3, 4))
    assert torch.allclose(full - without, fine_term, rtol=1e-4, atol=1e-4)
    assert fine_term.abs().min() > 0


def test_motion_branch_sees_only_temporal_differences():
    """The motion term of f is unchanged by a static image added to every frame and changed by
    reordering the frames; the appearance trunk sees both."""
    torch.manual_seed(0)
    des, _ = build_nets("multiscale", 16, 16, 4, motion_channels=(4, 8, 16))
    with torch.no_grad():
        for p in des.parameters():
            p.normal_(0.0, 0.1)

    def parts(y):
        with torch.no_grad():
            full = des(y)
            trunk, des.motion_trunk = des.motion_trunk, None
            appearance = des(y)
            des.motion_trunk = trunk
        return appearance, full - appearance

    y = _clips(1)
    static = y + 0.3 * torch.rand(1, 3, 1, 16, 16)
    shuffled = y[:, :, torch.randperm(16, generator=torch.Generator().manual_seed(1))]
    (app, mot), (app_s, mot_s), (_, mot_p) = parts(y), parts(static), parts(shuffled)
    assert torch.allclose(mot, mot_s, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(app, app_s, rtol=1e-3)
    assert not torch.allclose(mot, mot_p, rtol=1e-3)


def test_frame_bias_and_reference_start_at_the_observed_mean_frame():
    clips = _clips()
    mean_frame = clips.mean(dim=(0, 2))
    torch.manual_seed(0)
    model = CoopNets(_small())
    before = model.synthesize(2, generator=torch.Generator().manual_seed(0))
    model.init_from_data(mean_frame)
    after = model.synthesize(2, generator=torch.Generator().manual_seed(0))

    def layout_corr(clips):  # correlation of the samples' mean frame with the observed one
        pair = torch.stack([clips.mean(dim=(0, 2)).flatten(), mean_frame.flatten()])
        return torch.corrcoef(pair)[0, 1]

    err_before = (before.mean(dim=(0, 2)) - mean_frame).abs().mean()
    err_after = (after.mean(dim=(0, 2)) - mean_frame).abs().mean()
    # the generator renders about the mean frame from step 0 (up to a small colour offset of the
    # freshly drawn last layer)
    assert err_after < 0.5 * err_before
    assert layout_corr(after) > 0.7 and abs(layout_corr(before)) < 0.3
    assert torch.allclose(torch.tanh(model.generator.frame_bias.bias[0, :, 0]), mean_frame, atol=1e-5)
    assert torch.allclose(model.ref_mean[0, :, 0], mean_frame)
    channel = CoopNets(_small(ref_mean="channel"))
    channel.init_from_data(mean_frame)
    assert torch.allclose(channel.ref_mean[0, :, 0, 3, 5], mean_frame.mean(dim=(1, 2)))
    zero = CoopNets(_small(ref_mean="zero"))
    zero.init_from_data(mean_frame)
    assert not zero.ref_mean.any()


def test_ema_generator_averages_and_synthesizes():
    torch.manual_seed(0)
    model = CoopNets(_small(ema=0.75))
    model.init_from_data(_clips().mean(dim=(0, 2)))
    start = [p.detach().clone() for p in model.generator_ema.parameters()]
    opts = Optimizers.for_model(model)
    train_step(model, opts, _clips(1), torch.Generator().manual_seed(0))
    for avg, cur, old in zip(model.generator_ema.parameters(), model.generator.parameters(), start):
        assert torch.allclose(avg, 0.75 * old + 0.25 * cur, atol=1e-7)
    assert any(not torch.equal(a, c) for a, c in zip(model.generator_ema.parameters(),
                                                      model.generator.parameters()))
    assert model.sampler is model.generator_ema
    z = model.draw_latents(2, generator=torch.Generator().manual_seed(1))
    out = model.synthesize(2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(out, model.generator_ema(z)) and not torch.equal(out, model.generator(z))


def test_standard_model_round_trips_through_a_weights_only_checkpoint(tmp_path):
    model = Trainer(_small(iters=2, ema=0.5, checkpoint_every=2, fine_channels=2),
                    run_dir=tmp_path).fit(_clips())
    raw = torch.load(checkpoint_paths(tmp_path)[-1], map_location="cpu", weights_only=True)
    assert raw["config"]["motion_channels"] == 4 and raw["config"]["preset"] == "standard"
    assert raw["config"]["fine_channels"] == 2 and raw["config"]["des_fine_channels"] == 0
    assert model.descriptor.fine_layer is None
    loaded, _ = load_model(tmp_path)
    assert loaded.config.motion_channels == 4 and loaded.ref_mean.abs().sum() > 0
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    a = model.synthesize(2, langevin_steps=1, generator=torch.Generator().manual_seed(5))
    b = loaded.synthesize(2, langevin_steps=1, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_a_config_saved_before_des_fine_channels_keeps_both_full_resolution_stages():
    """fine_channels used to build both networks' stages: an old config.json / checkpoint (no
    des_fine_channels key) loads with the descriptor's term, and keeps its benchmark cache key;
    the generator-only stage gets a key of its own."""
    from dyntex.config import config_from_dict
    from dyntex.eval.runs import _ADDED_SETTINGS, _config_key

    both = make_config("standard", fine_channels=2, des_fine_channels=2)
    old = {k: v for k, v in both.to_dict().items() if k != "des_fine_channels"}
    assert config_from_dict(old) == both
    # the key the code wrote before des_fine_channels existed
    assert _config_key(both) == {k: v for k, v in old.items()
                                 if not (k in _ADDED_SETTINGS and v == _ADDED_SETTINGS[k])}
    generator_only = make_config("standard", fine_channels=2, des_fine_channels=0)
    assert config_from_dict(generator_only.to_dict()) == generator_only
    assert _config_key(generator_only) != _config_key(both)
    none = make_config("standard", fine_channels=0)
    assert "des_fine_channels" not in _config_key(none) and "fine_channels" not in _config_key(none)


@pytest.mark.parametrize("overrides,message", [
    ({"arch": "fast"}, "needs arch 'multiscale'"),
    ({"frames": 8}, "needs frames >= 12"),
    ({"size": 60}, "multiple of 8"),
    ({"arch": "fast", "motion_channels": 0, "layout_channels": 0, "fine_channels": 0,
      "noise_weight": 0.5},
     "'noise_weight' needs arch 'multiscale'"),
    ({"arch": "fast", "motion_channels": 0, "layout_channels": 0, "fine_channels": 8},
     "'fine_channels' needs arch 'multiscale'"),
    ({"fine_channels": -1}, "fine_channels"),
    ({"arch": "fast", "motion_channels": 0, "layout_channels": 0, "fine_channels": 0,
      "des_fine_channels": 4}, "'des_fine_channels' needs arch 'multiscale'"),
    ({"noise_weight": -0.1}, r"'noise_weight' must be in \[0, 10\]"),
    ({"fine_upsample": "nearest"}, "'fine_upsample' must be one of transposed, bilinear"),
    ({"fine_upsample": "bilinear"}, "'fine_upsample' shapes the full-resolution stage"),
    ({"colour_sigma": -0.01}, "'colour_sigma' must be 0 or a positive number"),
    ({"colour_sigma": float("nan")}, "'colour_sigma' must be 0 or a positive number"),
    ({"chroma_sigma": -1.0}, "'chroma_sigma' must be 0 or a positive number"),
    ({"data_noise": float("inf")}, "'data_noise' must be 0 or a positive number"),
    ({"noise_weight": float("nan")}, r"'noise_weight' must be in \[0, 10\]"),
    ({"noise_flow": 1.0}, r"'noise_flow' must be in \[0, 1\)"),
    ({"arch": "fast", "motion_channels": 0, "layout_channels": 0, "noise_flow": 0.5},
     "'noise_flow' needs arch 'multiscale'"),
    ({"noise_flow": 0.9, "noise_flow_field": "radial"},
     "'noise_flow_field' must be one of local, global"),
    ({"noise_flow_field": "global"}, "'noise_flow_field' shapes the noise flow"),
    ({"marginal_weight": -1.0}, "'marginal_weight' must be 0 or a positive number"),
    ({"flow_weight": -0.01}, "'flow_weight' must be 0 or a positive number"),
])
def test_standard_preset_settings_that_cannot_build_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        make_config("standard", **overrides)


def test_synthesize_at_another_size_from_the_command_line(tmp_path):
    """The fully convolutional generator renders larger frames than it trained on; the fast
    networks refuse with one line."""
    import numpy as np
    from click.testing import CliRunner

    from cli import main

    Trainer(_small(iters=1), run_dir=tmp_path / "run").fit(_clips())
    r = CliRunner().invoke(main, ["synthesize", str(tmp_path / "run"), "-n", "1", "--size", "32",
                                  "--format", "npy", "-o", str(tmp_path / "big")])
    assert r.exit_code == 0, r.output
    clip = np.load(tmp_path / "big" / "sample_000.npy")
    assert clip.shape == (16, 32, 32, 3) and 0 <= clip.min() and clip.max() <= 1
    r = CliRunner().invoke(main, ["synthesize", str(tmp_path / "run"), "--size", "36",
                                  "-o", str(tmp_path / "odd")])
    assert r.exit_code == 1 and "multiple of 8" in r.output and not (tmp_path / "odd").exists()
    Trainer(make_config("tiny", iters=1), run_dir=tmp_path / "fast").fit(_clips(frames=8))
    r = CliRunner().invoke(main, ["synthesize", str(tmp_path / "fast"), "--size", "32",
                                  "-o", str(tmp_path / "fast_big")])
    assert r.exit_code == 1 and "renders only its training size" in r.output
    assert not (tmp_path / "fast_big").exists()


def test_benchmark_trains_short_clips_without_the_motion_branch():
    """A clip shorter than the motion branch needs (the benchmark's clips may be) still trains the
    standard preset, without that branch; longer ones keep it."""
    from dyntex.eval.runs import _coop_config
    from dyntex.eval.settings import Settings

    st = Settings(frames=32, size=16)
    assert _coop_config(st, 8).motion_channels == 0 and _coop_config(st, 8).arch == "multiscale"
    assert _coop_config(st, 12).motion_channels == _coop_config(st, 32).motion_channels == 16
