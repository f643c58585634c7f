"""`dyntex speed`: FLOP counting checked against torch's own counter, and one short measurement
(figures are checked for sense, not speed)."""
import json

import pytest
import torch
from click.testing import CliRunner
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cli import main
from dyntex import fastops
from dyntex.config import make_config
from dyntex.coop import CoopNets
from dyntex.fastops.fc import FCConv
from dyntex.speed import _layer_flops, iteration_flops, measure


def test_layer_flops_match_the_convolution_formulas():
    conv = nn.Conv3d(3, 8, (3, 5, 5), stride=(1, 2, 2), padding=(1, 2, 2))
    convt = nn.ConvTranspose3d(8, 4, (2, 4, 4), stride=(1, 2, 2), padding=(0, 1, 1))
    x = torch.zeros(2, 3, 6, 10, 10)
    out = conv(x)  # (2, 8, 6, 5, 5)
    assert _layer_flops(nn.Sequential(conv), x) == [2 * out.numel() * 3 * 75]
    z = torch.zeros(2, 8, 6, 5, 5)
    assert _layer_flops(nn.Sequential(convt), z) == [2 * z.numel() * 4 * 32]


def _counted(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("arch,frames,size", [("paper", 28, 16), ("fast", 12, 16)])
def test_iteration_flops_match_torch_flop_counter(arch, frames, size):
    """Each phase of an iteration, counted by torch.utils.flop_counter on the plain layers doing
    that phase's work: Langevin steps take the descriptor's input gradient only, the descriptor
    update its weight gradients on observed and revised clips, the generator update its own."""
    cfg = make_config(arch, frames=frames, size=size, langevin_steps=3)
    with fastops.enabled_scope(False):
        model = CoopNets(cfg)
    des, gen = model.descriptor, model.generator
    clip = (3, frames, size, size)
    des.requires_grad_(False)
    y = torch.randn(cfg.chains, *clip, requires_grad=True)
    per_step = _counted(lambda: des(y).sum().backward())
    des.requires_grad_(True)
    observed_and_revised = torch.randn(cfg.batch + cfg.chains, *clip)
    des_update = _counted(lambda: des(observed_and_revised).sum().backward())
    z = torch.randn(cfg.chains, *gen.latent_shape())
    gen_update = _counted(lambda: gen(z).sum().backward())
    ours = iteration_flops(cfg)
    assert ours["langevin"] == cfg.langevin_steps * per_step
    assert ours["descriptor_update"] == des_update
    assert ours["generator_update"] == gen_update
    assert ours["total"] == cfg.langevin_steps * per_step + des_update + gen_update


def test_measure_times_the_formulation_asked_for(monkeypatch):
    calls = []
    real = FCConv.apply
    monkeypatch.setattr(FCConv, "apply", lambda *a: calls.append(1) or real(*a))
    kw = dict(frames=8, size=16, chains=1, langevin_steps=2, iters=1, warmup=0, calibration=False,
              threads=1)
    plain = measure("fast", fast_ops=False, **kw)
    assert calls == [] and fastops.enabled()          # the switch is restored afterwards
    fast = measure("fast", **kw)
    assert calls and fastops.enabled()
    for r in (plain, fast):
        assert (r["frames"], r["size"], r["chains"], r["langevin_steps"]) == (8, 16, 1, 2)
        assert r["gflop_per_iteration"] * 1e9 == iteration_flops(
            make_config("fast", frames=8, size=16, chains=1, langevin_steps=2))["total"]
        assert r["iteration_seconds"] > 0 and r["peak_rss_gb"] > 0
        assert r["generator_frames_per_second"] > 0 and r["langevin_seconds_per_step"] > 0
    assert plain["fast_ops"] is False and fast["fast_ops"] is True


def test_cli_speed_json_and_bad_values():
    runner = CliRunner()
    r = runner.invoke(main, ["speed", "--preset", "fast", "--frames", "8", "--size", "16",
                             "--chains", "1", "--langevin-steps", "1", "--iters", "1",
                             "--warmup", "0", "--threads", "1", "--no-calibration",
                             "--no-baselines", "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["gflop_per_iteration"] > 0 and isinstance(report["huge_page_alloc"], bool)
    assert "lds_seconds" not in report
    r = runner.invoke(main, ["speed", "--preset", "fast", "--iters", "0"])
    assert r.exit_code == 1 and len(r.stderr.strip().splitlines()) == 1, r.output
