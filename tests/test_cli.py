"""The dyntex command end to end on tiny clips."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cli import main
from dyntex.video import read_video, write_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 12-frame 20x24 RGB clip of drifting blobs (odd-ish size, resized to 16 by training)."""
    rng = np.random.default_rng(0)
    t = np.arange(12)[:, None, None]
    y, x = np.mgrid[0:20, 0:24]
    frames = np.stack([np.sin((x + 2 * t) / 3.0) * np.cos(y / 4.0) * 100 + 128 + c * 20
                       for c in range(3)], axis=-1) + rng.normal(0, 3, (12, 20, 24, 3))
    path = tmp_path_factory.mktemp("in") / "blobs.mp4"
    write_video(path, np.clip(frames, 0, 255).astype(np.uint8), 25)
    return path


def _run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result


def test_train_then_synthesize_all_formats(clip, tmp_path):
    run = tmp_path / "run"
    r = _run("train", clip, "--out", run, "--preset", "tiny", "--iters", "3", "--quiet")
    assert r.exit_code == 0, r.output
    assert "trained" in r.output and "step 3" in r.output
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["frames"] == 8 and cfg["size"] == 16 and cfg["iters"] == 3
    assert (run / "metrics.csv").read_text().count("\n") == 4  # header + 3 rows
    out = tmp_path / "syn"
    r = _run("synthesize", run, "-n", "2", "--out", out, "--format", "mp4,gif,png,npy", "--seed", "1")
    assert r.exit_code == 0, r.output
    for i in range(2):
        mp4 = read_video(out / f"sample_{i:03d}.mp4")
        gif = read_video(out / f"sample_{i:03d}.gif")
        png = read_video(out / f"sample_{i:03d}")
        assert mp4.frames.shape == gif.frames.shape == png.frames.shape == (8, 16, 16, 3)
        assert mp4.fps == pytest.approx(25)
        arr = np.load(out / f"sample_{i:03d}.npy")
        assert arr.shape == (8, 16, 16, 3) and arr.dtype == np.float32 and 0 <= arr.min() <= arr.max() <= 1
        # npy and png carry the same clip (png = npy quantised to 8 bits)
        assert np.abs(arr * 255 - png.frames).max() <= 0.5 + 1e-3


def test_synthesize_longer_clip_and_refinement(clip, tmp_path):
    run = tmp_path / "run"
    assert _run("train", clip, "--out", run, "--preset", "tiny", "--iters", "2", "-q").exit_code == 0
    r = _run("synthesize", run, "-n", "1", "--out", tmp_path / "long", "--frames", "20",
             "--langevin-steps", "2", "--format", "npy")
    assert r.exit_code == 0, r.output
    assert np.load(tmp_path / "long" / "sample_000.npy").shape == (20, 16, 16, 3)


def test_resume_extends_the_run_with_its_own_settings(clip, tmp_path):
    run = tmp_path / "run"
    assert _run("train", clip, "--out", run, "--preset", "tiny", "--iters", "2", "--size", "24", "-q").exit_code == 0
    r = _run("train", clip, "--out", run, "--resume", "--iters", "4", "-q")
    assert r.exit_code == 0, r.output
    assert "step 4" in r.output
    assert json.loads((run / "config.json").read_text())["size"] == 24  # kept from the run
    ckpt = sorted((run / "checkpoints").glob("step_*.pt"))[-1]
    assert torch.load(ckpt, weights_only=True)["step"] == 4


def test_a_run_saved_before_des_fine_channels_resumes_with_both_stages(clip, tmp_path):
    """fine_channels used to build both networks' full-resolution stages: a run folder from then
    (no des_fine_channels in config.json or its checkpoints) resumes and synthesizes as trained."""
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"latent_channels": 4, "layout_channels": 2, "motion_channels": 4,
                               "langevin_steps": 1, "fine_channels": 2, "des_fine_channels": 2}))
    run = tmp_path / "run"
    args = ["--preset", "standard", "--frames", "12", "--size", "16", "-q"]
    r = _run("train", clip, "--out", run, "--config", cfg, "--iters", "1", *args)
    assert r.exit_code == 0, r.output
    saved = json.loads((run / "config.json").read_text())
    del saved["des_fine_channels"]
    (run / "config.json").write_text(json.dumps(saved))
    for ckpt in (run / "checkpoints").glob("step_*.pt"):
        state = torch.load(ckpt, weights_only=True)
        del state["config"]["des_fine_channels"]
        torch.save(state, ckpt)
    r = _run("train", clip, "--out", run, "--resume", "--iters", "2", "-q")
    assert r.exit_code == 0, r.output
    assert json.loads((run / "config.json").read_text())["des_fine_channels"] == 2
    r = _run("synthesize", run, "-n", "1", "--out", tmp_path / "syn", "--format", "npy")
    assert r.exit_code == 0, r.output


def test_config_file_and_flag_precedence(clip, tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"preset": "tiny", "iters": 1, "chains": 3, "seed": 5}))
    run = tmp_path / "run"
    r = _run("train", clip, "--out", run, "--config", cfg, "--seed", "7", "-q")
    assert r.exit_code == 0, r.output
    saved = json.loads((run / "config.json").read_text())
    assert (saved["preset"], saved["chains"], saved["seed"], saved["frames"]) == ("tiny", 3, 7, 8)


def test_errors_are_one_line(tmp_path):
    r = _run("synthesize", tmp_path / "missing", "--out", tmp_path / "o")
    assert r.exit_code == 1
    assert r.output.strip().count("\n") == 0 and "does not exist" in r.output


def test_demo_runs_on_the_shipped_sample(tmp_path):
    r = _run("demo", "--out", tmp_path / "demo", "--iters", "1", "--quiet")
    assert r.exit_code == 0, r.output
    from PIL import Image

    img = Image.open(tmp_path / "demo" / "contact_sheet.png")
    assert img.size[0] > 8 * 64 and img.size[1] >= 4 * 64  # observed row + 3 sample rows of 64 px
    for i in range(3):
        assert read_video(tmp_path / "demo" / f"sample_{i:03d}.mp4").frames.shape == (32, 64, 64, 3)
    saved = json.loads((tmp_path / "demo" / "run" / "config.json").read_text())
    assert saved["preset"] == "quality" and saved["fine_channels"] > 0   # the default
    r = _run("demo", "--preset", "standard", "--out", tmp_path / "std", "--iters", "1", "--quiet")
    assert r.exit_code == 0, r.output
    saved = json.loads((tmp_path / "std" / "run" / "config.json").read_text())
    assert saved["preset"] == "standard" and saved["fine_channels"] == 0


def test_train_on_a_real_clip(shared_data, tmp_path):
    run = tmp_path / "fire"
    r = _run("train", shared_data / "fire_pot" / "fire_pot0.avi", "--out", run, "--preset", "tiny",
             "--iters", "2", "--size", "32", "-q")
    assert r.exit_code == 0, r.output
    from dyntex.trainer import load_model

    model, meta = load_model(run)
    assert meta["fps"] == pytest.approx(25) and meta["step"] == 2
    assert model.synthesize(1).shape == (1, 3, 8, 32, 32)
