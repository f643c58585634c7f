"""One class-conditional model over several textures: ``dyntex train DIR --conditional``,
``dyntex synthesize RUN --label``, and the benchmark's ``coop-conditional`` row with its
classification by energy."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import dyntex.eval.benchmark as bm
from cli import main
from dyntex.config import make_config
from dyntex.coop import CoopNets
from dyntex.errors import ConfigError
from dyntex.runfolder import checkpoint_paths
from dyntex.video import write_video

T, S = 8, 16
SMALL = {"frames": T, "size": S, "latent_channels": 4, "layout_channels": 2,
         "motion_channels": 0, "langevin_steps": 3}


def texture(kind: str, n: int = 40, size: int = S) -> np.ndarray:
    """uint8 (n, size, size, 3): ``red`` stripes drifting right, or finer ``blue`` stripes
    drifting down twice as fast."""
    t = np.arange(n)[:, None, None]
    y, x = np.mgrid[0:size, 0:size]
    if kind == "red":
        g = np.sin(2 * np.pi * (x[None] - t) / 6)
        rgb = [0.6 + 0.3 * g, 0.3 + 0.1 * g, 0.2 + 0 * g]
    else:
        g = np.sin(2 * np.pi * (y[None] - 2 * t) / 4)
        rgb = [0.2 + 0 * g, 0.4 + 0.1 * g, 0.7 + 0.25 * g]
    return (np.clip(np.stack(rgb, -1), 0, 1) * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def two_textures(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("classes")
    for kind in ("red", "blue"):
        write_video(root / f"{kind}.mp4", texture(kind), 25)
    return root


@pytest.fixture(scope="module")
def conditional_run(two_textures: Path, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("cond") / "run"
    cfg = tmp_path_factory.mktemp("cfg") / "cfg.json"
    cfg.write_text(json.dumps({**SMALL, "iters": 40, "checkpoint_every": 20,
                               "preview_every": 20, "window": "random"}))
    result = CliRunner().invoke(main, ["train", str(two_textures), "--conditional", "--config",
                                       str(cfg), "--preset", "standard", "-o", str(run), "-q"])
    assert result.exit_code == 0, result.output
    return run


def _red_minus_blue(folder: Path) -> float:
    clips = [np.load(p) for p in sorted(folder.glob("*.npy"))]
    assert clips
    return float(np.mean([c[..., 0].mean() - c[..., 2].mean() for c in clips]))


def test_label_selects_the_class(conditional_run: Path, tmp_path: Path) -> None:
    state = torch.load(checkpoint_paths(conditional_run)[-1], weights_only=True)
    assert state["config"]["labels"] == "blue,red"      # the run keeps its label list
    assert json.loads((conditional_run / "config.json").read_text())["labels"] == "blue,red"
    runner = CliRunner()
    for label in ("red", "blue"):
        r = runner.invoke(main, ["synthesize", str(conditional_run), "-n", "2", "--label", label,
                                 "--format", "npy", "-o", str(tmp_path / label)])
        assert r.exit_code == 0, r.output
    assert _red_minus_blue(tmp_path / "red") > 0.2 and _red_minus_blue(tmp_path / "blue") < -0.2
    r = runner.invoke(main, ["synthesize", str(conditional_run), "-n", "1", "--label", "all",
                             "--format", "npy", "-o", str(tmp_path / "all")])
    assert r.exit_code == 0, r.output
    assert _red_minus_blue(tmp_path / "all" / "red") > 0.2
    assert _red_minus_blue(tmp_path / "all" / "blue") < -0.2


@pytest.mark.parametrize("args,message", [
    (["--label", "green"], "unknown label 'green'"),
    ([], "class-conditional model: give --label"),
])
def test_bad_label_is_one_line_and_writes_nothing(conditional_run: Path, tmp_path: Path,
                                                  args, message) -> None:
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["synthesize", str(conditional_run), "-o", str(out), *args])
    assert r.exit_code == 1 and message in r.output
    assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert not out.exists()


def test_label_on_an_unconditional_run_is_refused(tmp_path: Path) -> None:
    video = tmp_path / "red.mp4"
    write_video(video, texture("red"), 25)
    run = tmp_path / "run"
    r = CliRunner().invoke(main, ["train", str(video), "--preset", "tiny", "-o", str(run), "-q"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["synthesize", str(run), "--label", "red", "-o",
                                  str(tmp_path / "s")])
    assert r.exit_code == 1 and "not class-conditional" in r.output
    r = CliRunner().invoke(main, ["train", str(video), "--conditional", "--preset", "tiny",
                                  "-o", str(tmp_path / "run2"), "-q"])
    assert r.exit_code == 1 and "needs a folder of clips" in r.output


def test_conditional_run_resumes(conditional_run: Path, two_textures: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(conditional_run, run)
    r = CliRunner().invoke(main, ["train", str(two_textures), "--conditional", "--resume",
                                  "--iters", "42", "-o", str(run), "-q"])
    assert r.exit_code == 0, r.output
    assert "trained" in r.output and "to step 42" in r.output
    r = CliRunner().invoke(main, ["train", str(two_textures), "--resume", "--iters", "44",
                                  "-o", str(run), "-q"])
    assert r.exit_code == 1 and "with --conditional" in r.output


def test_quality_preset_trains_a_conditional_model(two_textures: Path, tmp_path: Path) -> None:
    """The quality preset's value- and flow-distribution terms (marginal_weight, flow_weight)
    work per class, so ``--conditional`` needs no other preset."""
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({**SMALL, "iters": 2, "fine_channels": 4}))
    r = CliRunner().invoke(main, ["train", str(two_textures), "--conditional", "--config",
                                  str(cfg), "--preset", "quality", "-o", str(tmp_path / "run"),
                                  "-q"])
    assert r.exit_code == 0, r.output
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["labels"] == "blue,red" and saved["marginal_weight"] > 0 \
        and saved["flow_weight"] > 0


def test_conditional_networks_need_labels_and_the_multiscale_arch() -> None:
    model = CoopNets(make_config("standard", **SMALL, labels="a,b,c"))
    y = torch.zeros(2, 3, T, S, S)
    assert model.descriptor.energies(y).shape == (2, 3)
    e = model.descriptor(y, torch.tensor([2, 0]))
    torch.testing.assert_close(e, model.descriptor.energies(y)[[0, 1], [2, 0]])
    with pytest.raises(ConfigError, match="needs labels"):
        model.descriptor(y)
    with pytest.raises(ConfigError, match="class-conditional"):
        model.synthesize(2)
    with pytest.raises(ConfigError, match="3 labels given for 2"):
        model.synthesize(2, labels=[0, 1, 2])
    with pytest.raises(ConfigError, match="needs arch 'multiscale'"):
        make_config("fast", labels="a,b")
    with pytest.raises(ConfigError, match="distinct"):
        make_config("standard", **SMALL, labels="a,a")
    with pytest.raises(ConfigError, match="persistent chains are not available"):
        make_config("standard", **SMALL, labels="a,b", persistent=2)
    # the class changes the rendering of the same latents (embedding and per-class frame bias)
    g = torch.Generator().manual_seed(0)
    z = model.draw_latents(2, generator=g)
    a, b = model.render(z, labels=torch.tensor([0, 0])), model.render(z, labels=torch.tensor([1, 1]))
    assert (a - b).abs().mean() > 1e-3


def test_benchmark_conditional_row_and_energy_classification(two_textures: Path,
                                                             tmp_path: Path) -> None:
    """One model over both clips; each clip's row samples its own class, and the held-back
    windows are classified by energy better than chance."""
    report = bm.run_benchmark(two_textures, tmp_path, methods="coop-conditional",
                              preset="standard", frames=12, size=S, samples=2, iters=30,
                              progress=False, ps=False, memo_frames=40, device="cpu")
    rows = {c["clip"]: c["rows"]["coop-conditional"] for c in report.results["clips"]}
    assert set(rows) == {"red", "blue"}
    entries = {name: np.load(next((tmp_path / "cache" / name).glob("coop-conditional-*"))
                             / "samples.npy") for name in rows}
    red = entries["red"][..., 0].mean() - entries["red"][..., 2].mean()
    blue = entries["blue"][..., 0].mean() - entries["blue"][..., 2].mean()
    assert red > 0.2 and blue < -0.2
    result = report.results["conditional"]
    assert result["labels"] == ["blue", "red"] and result["chance"] == 0.5
    assert result["windows"] == 4                     # 40 frames: 3 windows of 12, 2 held back
    assert result["accuracy_full"] > result["chance"]
    assert "classification by energy" in report.text
    assert len(list((tmp_path / "cache" / "_conditional").iterdir())) == 1


def test_interpolation_blends_one_class_into_the_other(conditional_run: Path,
                                                       tmp_path: Path) -> None:
    from dyntex.video import read_video

    r = CliRunner().invoke(main, ["synthesize", str(conditional_run), "--interpolate", "blue,red",
                                  "--format", "mp4", "-o", str(tmp_path)])
    assert r.exit_code == 0, r.output
    video = read_video(tmp_path / "interpolation.mp4").frames.astype(float)
    band = max(12, S // 5)
    panels = [video[:, band:, i * (S + 2):i * (S + 2) + S] for i in range(5)]
    red_minus_blue = [p[..., 0].mean() - p[..., 2].mean() for p in panels]
    assert red_minus_blue[0] < -50 and red_minus_blue[-1] > 50
    assert all(a < b for a, b in zip(red_minus_blue, red_minus_blue[1:])), red_minus_blue
    r = CliRunner().invoke(main, ["synthesize", str(conditional_run), "--interpolate", "blue",
                                  "-o", str(tmp_path / "x")])
    assert r.exit_code == 2 and "two class names" in r.output
