"""`dyntex speed`: FLOP counting and one short measurement (figures are checked for sense, not speed)."""
import json
import os
import subprocess
import sys

from click.testing import CliRunner
from torch import nn

from cli import main
from dyntex.config import make_config
from dyntex.speed import _layer_flops, iteration_flops, measure


def test_layer_flops_match_the_convolution_formulas():
    import torch

    conv = nn.Conv3d(3, 8, (3, 5, 5), stride=(1, 2, 2), padding=(1, 2, 2))
    convt = nn.ConvTranspose3d(8, 4, (2, 4, 4), stride=(1, 2, 2), padding=(0, 1, 1))
    x = torch.zeros(2, 3, 6, 10, 10)
    out = conv(x)  # (2, 8, 6, 5, 5)
    assert _layer_flops(nn.Sequential(conv), x) == [2 * out.numel() * 3 * 75]
    z = torch.zeros(2, 8, 6, 5, 5)
    assert _layer_flops(nn.Sequential(convt), z) == [2 * z.numel() * 4 * 32]


def test_iteration_flops_add_up_and_scale_with_langevin_steps():
    a = iteration_flops(make_config("paper", frames=32, size=32, langevin_steps=10))
    b = iteration_flops(make_config("paper", frames=32, size=32, langevin_steps=20))
    assert a["total"] == a["langevin"] + a["descriptor_update"] + a["generator_update"]
    assert b["langevin"] == 2 * a["langevin"] and b["generator_update"] == a["generator_update"]


def test_measure_reports_consistent_figures():
    r = measure("fast", frames=8, size=16, chains=1, langevin_steps=2, iters=1, warmup=0,
                calibration=False, threads=1)
    assert r["frames"] == 8 and r["size"] == 16 and r["chains"] == 1
    assert r["iteration_seconds"] > 0 and r["peak_rss_gb"] > 0
    assert abs(r["achieved_gflops"] - r["flops"]["total"] / r["iteration_seconds"] / 1e9) < 1e-6
    assert r["generator_frames_per_second"] > 0 and r["langevin_seconds_per_step"] > 0


def test_cli_speed_json_and_bad_values():
    runner = CliRunner()
    r = runner.invoke(main, ["speed", "--preset", "fast", "--frames", "8", "--size", "16",
                             "--chains", "1", "--langevin-steps", "1", "--iters", "1",
                             "--warmup", "0", "--threads", "1", "--no-calibration",
                             "--no-baselines", "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["gflop_per_iteration"] > 0 and isinstance(report["huge_page_alloc"], bool)
    r = runner.invoke(main, ["speed", "--preset", "fast", "--iters", "0"])
    assert r.exit_code == 1 and len(r.stderr.strip().splitlines()) == 1, r.output
