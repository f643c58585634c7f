"""Recovery of missing pixels (dyntex.recovery, ``dyntex recover``): masks and occlusions, the
clamped Langevin sampler, temporal interpolation, and the command's outputs and refusals."""
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cli import main
from dyntex import recovery
from dyntex.errors import ConfigError, InputError
from dyntex.langevin import langevin
from dyntex.runfolder import checkpoint_paths
from dyntex.video import read_video, write_png, write_video

T, S = 8, 16


def grating(frames: int = 24, size: int = S) -> np.ndarray:
    """uint8 (frames, size, size, 3): a sinusoid drifting 2 px per frame."""
    t = np.arange(frames)[:, None, None]
    y, x = np.mgrid[0:size, 0:size]
    g = np.sin(2 * np.pi * (x[None] + 0.5 * y[None] - 2 * t) / 8)
    rgb = np.stack([0.5 + 0.35 * g, 0.45 + 0.25 * g, 0.4 + 0.15 * g], -1)
    return (rgb * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rec") / "grating.mp4"
    write_video(path, grating(), 25)
    return path


# --------------------------------------------------------------------------- the sampler


def test_clamped_langevin_samples_the_free_entries_and_keeps_the_rest():
    """On N(0, I) (score -x): clamped entries never move; the free ones forget their start and
    reach mean 0, variance 1."""
    x0 = torch.full((4000,), 5.0)
    free = torch.arange(4000) % 2 == 0
    x = langevin(lambda v: -v, x0, 400, 0.3, torch.Generator().manual_seed(0), free)
    assert torch.equal(x[~free], x0[~free])
    assert abs(float(x[free].mean())) < 0.1 and abs(float(x[free].var()) - 1.0) < 0.15


# --------------------------------------------------------------------------- masks


def test_occlusions_have_the_asked_shape():
    rng = np.random.default_rng(0)
    pepper = recovery.occlusion_mask("pepper:0.3", 20, 32, rng)
    assert pepper.shape == (20, 32, 32) and abs(pepper.mean() - 0.3) < 0.02
    block = recovery.occlusion_mask("block:5", 20, 32, rng)
    assert (block.sum(axis=(1, 2)) == 25).all()
    frames = recovery.occlusion_mask("frames:0.3", 20, 32, rng)
    whole = frames.all(axis=(1, 2))
    assert whole.sum() == 6 and not frames[~whole].any()
    for bad in ("pepper:1.5", "block:0", "block:2.5", "holes:0.1", "pepper", "pepper:x"):
        with pytest.raises(ConfigError):
            recovery.parse_occlusion(bad)
    with pytest.raises(ConfigError, match="larger than"):
        recovery.occlusion_mask("block:40", 2, 32, rng)


def test_mask_files_of_every_kind(tmp_path: Path):
    """An image (every frame), a video, a .npy (T x H x W) and a .mat (MATLAB H x W x T x C,
    another size: stretched to the video's) all give the same missing square."""
    H, W = 24, 32                                   # the video's native frame size
    square = np.zeros((H, W), np.uint8)
    square[4:12, 8:20] = 255
    write_png(tmp_path / "m.png", np.repeat(square[..., None], 3, -1))
    write_video(tmp_path / "m.mp4", np.repeat(np.repeat(square[None, ..., None], 3, -1), 10, 0), 25)
    np.save(tmp_path / "m.npy", np.repeat(square[None] > 0, 10, 0))
    import scipy.io

    doubled = np.kron(square > 0, np.ones((2, 2), np.uint8))     # 48 x 64, H x W
    scipy.io.savemat(tmp_path / "m.mat", {"masks": np.repeat(doubled[:, :, None, None], 10, 2)
                                          .repeat(3, 3), "sx": np.uint8(64)})
    masks = {ext: recovery.load_mask(tmp_path / f"m.{ext}", T, S, (H, W))
             for ext in ("png", "mp4", "npy", "mat")}
    for ext, m in masks.items():
        assert m.shape == (T, S, S) and m.dtype == bool, ext
        np.testing.assert_array_equal(m, masks["npy"], err_msg=ext)
    assert 0 < masks["npy"].mean() < 0.5 and (masks["npy"] == masks["npy"][0]).all()


def test_bad_mask_files_are_refused(tmp_path: Path):
    write_png(tmp_path / "small.png", np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(InputError, match="is 10x10 but the video is 32x24"):
        recovery.load_mask(tmp_path / "small.png", T, S, (24, 32))
    (tmp_path / "notes.txt").write_text("not a mask")
    with pytest.raises(InputError, match="not an image, video or mask array"):
        recovery.load_mask(tmp_path / "notes.txt", T, S, (24, 32))
    np.save(tmp_path / "short.npy", np.zeros((3, 24, 32)))
    with pytest.raises(InputError, match="has 3 frames"):
        recovery.load_mask(tmp_path / "short.npy", T, S, (24, 32))
    with pytest.raises(InputError, match="every pixel"):
        recovery.check_mask(np.ones((T, S, S), bool))


# --------------------------------------------------------------------------- filling


def test_temporal_interpolation():
    clip = np.zeros((5, 2, 2, 1), np.float32)
    clip[:, 0, 0, 0] = [0.0, 9, 9, 9, 0.8]          # frames 1-3 of pixel (0, 0) missing
    clip[:, 1, 1, 0] = [0.3, 0.5, 9, 9, 9]          # the last three missing: nearest value
    clip[:, 0, 1, 0] = 9                            # missing in every frame: its frame's mean
    missing = np.zeros((5, 2, 2), bool)
    missing[1:4, 0, 0] = missing[2:, 1, 1] = missing[:, 0, 1] = True
    out = recovery.interpolate_missing(clip, missing)
    np.testing.assert_allclose(out[:, 0, 0, 0], [0.0, 0.2, 0.4, 0.6, 0.8], atol=1e-6)
    np.testing.assert_allclose(out[:, 1, 1, 0], [0.3, 0.5, 0.5, 0.5, 0.5], atol=1e-6)
    assert np.array_equal(out[~missing], clip[~missing])
    known_mean = [clip[t][~missing[t]].mean() for t in range(5)]
    np.testing.assert_allclose(out[:, 0, 1, 0], known_mean, atol=1e-6)


# --------------------------------------------------------------------------- the command


def _recover(args, out: Path):
    return CliRunner().invoke(main, ["recover", *map(str, args), "--out", str(out), "-q"])


def test_recover_keeps_known_pixels_and_writes_every_output(video: Path, tmp_path: Path):
    out = tmp_path / "out"
    r = _recover([video, "--occlude", "pepper:0.5", "--preset", "tiny", "--iters", "4"], out)
    assert r.exit_code == 0, r.output
    clip = read_video(video, frames=T, size=S).frames
    recovered, missing = np.load(out / "recovered.npy"), np.load(out / "mask.npy")
    assert recovered.shape == clip.shape and missing.shape == (T, S, S)
    assert abs(missing.mean() - 0.5) < 0.1
    assert np.array_equal(recovered[~missing], clip[~missing])            # bit for bit
    assert not np.array_equal(recovered[missing], clip[missing])
    for name in ("recovered.mp4", "recovered.gif", "comparison.mp4", "comparison.gif"):
        assert (out / name).is_file(), name
    assert read_video(out / "comparison.mp4").frames.shape[2] == 3 * S + 2 * 2
    sheet = np.asarray(Image.open(out / "comparison.png"))      # 3 rows: observed, masked, recovered
    assert sheet.shape[0] == 3 * (S + 2) + 2 and sheet.shape[2] == 3
    state = torch.load(checkpoint_paths(out / "run")[-1], weights_only=True)
    assert state["data"]["completed"].shape == (1, 3, T, S, S)           # resumable completion
    assert state["data"]["latent"].ndim == 5 and len(state["data"]["latent"]) == 1  # its X

    # resume continues from the saved completion; a trained run fills a new clip without training
    r = _recover([video, "--occlude", "pepper:0.5", "--preset", "tiny", "--iters", "6",
                  "--resume"], out)
    assert r.exit_code == 0, r.output
    assert torch.load(checkpoint_paths(out / "run")[-1], weights_only=True)["step"] == 6
    filled = tmp_path / "filled"
    r = _recover([video, "--occlude", "block:6", "--run", out / "run", "--steps", "5"], filled)
    assert r.exit_code == 0, r.output
    assert not (filled / "run").exists()
    f, m = np.load(filled / "recovered.npy"), np.load(filled / "mask.npy")
    assert np.array_equal(f[~m], clip[~m]) and (m.sum(axis=(1, 2)) == 36).all()


def test_nothing_missing_returns_the_clip(video: Path, tmp_path: Path):
    write_png(tmp_path / "none.png", np.zeros((S, S, 3), np.uint8))
    out = tmp_path / "out"
    r = _recover([video, "--mask", tmp_path / "none.png", "--preset", "tiny", "--iters", "2"], out)
    assert r.exit_code == 0, r.output
    clip = read_video(video, frames=T, size=S).frames
    assert np.array_equal(np.load(out / "recovered.npy"), clip)


@pytest.mark.parametrize("make,message", [
    (lambda d: write_png(d / "m.png", np.zeros((5, 7, 3), np.uint8)), "is 7x5 but the video is 16x16"),
    (lambda d: write_png(d / "m.png", np.full((S, S, 3), 255, np.uint8)), "every pixel"),
    (lambda d: (d / "m.png").write_text("not an image"), "cannot decode image"),
    (lambda d: (d / "m.csv").write_text("1,2"), "not an image, video or mask array"),
])
def test_bad_masks_are_one_line_and_write_nothing(video: Path, tmp_path: Path, make, message):
    make(tmp_path)
    mask = next(p for p in tmp_path.iterdir() if p.name.startswith("m."))
    out = tmp_path / "out"
    r = _recover([video, "--mask", mask, "--preset", "tiny"], out)
    assert r.exit_code == 1 and message in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert not out.exists()


def test_mask_and_occlusion_are_exclusive(video: Path, tmp_path: Path):
    r = _recover([video, "--preset", "tiny"], tmp_path / "out")
    assert r.exit_code == 1 and "exactly one of --mask" in r.output
    r = _recover([video, "--occlude", "pepper:2", "--preset", "tiny"], tmp_path / "out")
    assert r.exit_code == 1 and "0 < P < 1" in r.output
    assert not (tmp_path / "out").exists()


def test_recovery_beats_temporal_interpolation_on_a_block_occlusion():
    """A drifting grating with an 8 x 8 block missing per frame: temporal interpolation blurs the
    moving stripes; training on the incomplete clip (the generator explaining the known pixels,
    the descriptor revising the rest) fills them better. Without the latent's Langevin inference
    the rendering would not follow this clip (the recovery would be a random sample of the
    generator), and before any iteration it is the interpolation itself."""
    from dyntex.config import make_config
    from dyntex.trainer import Trainer

    clip = grating(12).astype(np.float32) / 255.0
    missing = recovery.occlusion_mask("block:8", 12, S, np.random.default_rng(0))
    interp = recovery.interpolate_missing(clip, missing)
    data = recovery.MaskedClip(clip, missing)
    cfg = make_config("standard", frames=12, size=S, iters=40, window="first", latent_channels=4,
                      layout_channels=2, motion_channels=4, lr_des=1e-4, device="cpu")
    model = Trainer(cfg).fit(data)
    recovered = recovery.completed_clip(clip, missing, data.estimate(model))

    def mae(x):
        return float(np.abs(x - clip)[missing].mean() * 255)

    assert mae(recovered) < 0.9 * mae(interp), (mae(recovered), mae(interp))


def test_recovery_benchmark_scores_missing_pixels_only(video: Path, tmp_path: Path):
    """Every method recovers the same occlusion; known pixels never count; an unchanged
    method reruns from the cache; baselines behave as their definitions say."""
    from dyntex.eval import recovery as task

    data = tmp_path / "clips"
    data.mkdir()
    (data / "grating.mp4").symlink_to(video)
    kw = dict(frames=T, size=S, preset="tiny", iters=2, device="cpu", progress=False)
    result = task.run_recovery_benchmark(data, tmp_path / "out", "block:6", **kw)
    rows = result["clips"][0]["rows"]
    assert set(rows) == set(task.RECOVERY_METHODS)
    assert all(r["mae"] > 0 and r["psnr"] > 0 for r in rows.values())
    assert "| **mean** |" in result["text"] and (tmp_path / "out" / "recovery_block-6.md").is_file()
    assert "CoopNets: preset tiny, 2 iterations." in result["text"]
    assert (tmp_path / "out" / "recovery_block-6" / "grating.mp4").is_file()
    again = task.run_recovery_benchmark(data, tmp_path / "out", "block:6", methods="interp", **kw)
    assert again["clips"][0]["rows"]["interp"] == rows["interp"]

    clip = read_video(video, frames=T, size=S).frames
    missing = task.clip_mask("grating", "block:6", T, S, 0)
    assert (missing.sum(axis=(1, 2)) == 36).all()
    for fill in (task.telea, task.lds_impute):
        out = fill(clip, missing)
        assert np.array_equal(out[~missing], clip[~missing])
    # a clip of 3 fixed patterns with random weights per frame lies in the LDS observation
    # model's subspace (n = T/2 = 4 components): its missing-data fit recovers far better than
    # interpolation in time, which the random weights defeat
    rng = np.random.default_rng(1)
    patterns, weights = rng.random((3, S, S, 3)), rng.random((T, 3))
    low_rank = (0.2 + 0.2 * np.einsum("tk,khwc->thwc", weights, patterns)).astype(np.float32)
    assert task.scores(task.lds_impute(low_rank, missing), low_rank, missing)["mae"] < \
        0.7 * task.scores(task.interpolate_missing(low_rank, missing), low_rank, missing)["mae"]
    s = task.scores(clip + 0.1 * missing[..., None], clip, missing)
    assert s["mae"] == pytest.approx(25.5, rel=1e-4) and s["psnr"] == pytest.approx(20.0, rel=1e-4)


def test_recovery_benchmark_refuses_bad_settings(video: Path, tmp_path: Path):
    from dyntex.eval import recovery as task

    with pytest.raises(ConfigError, match="unknown recovery method"):
        task.run_recovery_benchmark(video.parent, tmp_path, "pepper:0.5", methods="lds,magic")
    with pytest.raises(ConfigError, match="unknown clip"):
        task.run_recovery_benchmark(video.parent, tmp_path, "pepper:0.5", clips="nope")
    r = CliRunner().invoke(main, ["benchmark", str(video.parent), "--task", "recovery",
                                  "--occlude", "block:0", "-o", str(tmp_path / "x")])
    assert r.exit_code == 1 and "block:B" in r.output


def test_hole_statistics_compare_the_hole_with_the_known_pixels():
    """A periodic random texture translating 1 px per frame, its centre the hole: the same
    moving texture in the hole scores low on both; a flat fill lacks every band's energy; the
    texture frozen in the hole lacks its motion; the texture mirrored (moving the other way) has
    the right band energies but the wrong motion."""
    import cv2

    from dyntex.eval.recovery import hole_statistics

    noise = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    base = cv2.GaussianBlur(np.tile(noise, (3, 3)), (0, 0), 2)[64:128, 64:128]  # periodic
    base = (base - base.min()) / (base.max() - base.min())
    clip = np.repeat(np.stack([np.roll(base, t, axis=1) for t in range(16)])[..., None], 3, -1)
    missing = np.zeros((16, 64, 64), bool)
    missing[:, 16:48, 16:48] = True

    def stats(inside):
        return hole_statistics(np.where(missing[..., None], inside, clip), missing)

    same, flat, frozen, mirrored = stats(clip), stats(0.5), stats(clip[:1]), stats(clip[:, :, ::-1])
    assert same["spectrum"] < 0.2 and same["motion"] < 0.3
    assert flat["spectrum"] > 1.0
    assert frozen["spectrum"] > 0.8 and frozen["motion"] > 0.45
    assert mirrored["spectrum"] < 0.2 and mirrored["motion"] > 0.5


def test_recovery_benchmark_with_each_clips_own_mask(tmp_path: Path):
    """--occlude own: a clip's mask video in its sub-folder, over the window where it hides the
    most (here it hides nothing in the first T frames); scores compare the hole with the clip's
    known pixels, with the unrecovered clip as a reference; a clip without a mask is skipped."""
    from dyntex.eval import recovery as task

    frames = 3 * T
    data = tmp_path / "clips"
    (data / "lake").mkdir(parents=True)
    clip = grating(frames)
    box = np.zeros((frames, S, S, 3), np.uint8)
    box[2 * T:, 4:10, 4:10] = 255                     # the object is there from frame 2T on
    write_video(data / "lake" / "lake_input.mp4", np.where(box > 0, 0, clip).astype(np.uint8), 25)
    write_video(data / "lake" / "lake_mask.mp4", box, 25)
    write_video(data / "plain.mp4", clip, 25)
    assert task.own_mask_file(task.find_clips(data)[0], data).name == "lake_mask.mp4"
    kw = dict(frames=T, size=S, preset="tiny", iters=2, device="cpu", progress=False)
    result = task.run_recovery_benchmark(data, tmp_path / "out", "own",
                                         methods="interp,telea", **kw)
    lake, plain = result["clips"]
    assert plain["skip"].startswith("no mask of its own")
    # the 6 x 6 box, grown by the mp4's ringing around it (a mask pixel is missing if nonzero)
    assert lake["start"] == 2 * T and 36 / S ** 2 <= lake["missing_share"] < 2 * 36 / S ** 2
    # the object in place is a still black box where the background drifts: no motion, no detail
    assert lake["observed"]["motion"] > 0.3 and lake["observed"]["spectrum"] > 0.3
    for r in lake["rows"].values():
        assert set(r) == {"seconds", "spectrum", "motion"}
    assert "(frames 17–24)" in result["text"] and "object in place" in result["text"]
    assert (tmp_path / "out" / "recovery_own.md").is_file()


def test_the_estimate_is_the_generator_rendering_at_the_missing_pixels():
    """Before any iteration the recovery is the interpolated start; after, the missing pixels
    are the generator's rendering of the clip's latent, the known ones the clip's, whatever the
    descriptor's revision did to the completion."""
    from dyntex.config import make_config
    from dyntex.coop import CoopNets

    clip = grating(8).astype(np.float32) / 255.0
    missing = recovery.occlusion_mask("pepper:0.5", 8, S, np.random.default_rng(0))
    torch.manual_seed(0)
    model = CoopNets(make_config("tiny", size=S, frames=8, device="cpu"))
    data = recovery.MaskedClip(clip, missing)
    torch.testing.assert_close(data.estimate(model), data.completed)
    rendered = data.explain(model, torch.Generator().manual_seed(0))
    data.revise(model, torch.Generator().manual_seed(0), rendered)
    assert not torch.equal(data.completed[data.free.expand_as(data.completed)],
                           rendered[data.free.expand_as(rendered)])   # Langevin moved them
    est = data.estimate(model)
    free = data.free.expand_as(est)
    torch.testing.assert_close(est[free], rendered[free])
    torch.testing.assert_close(est[~free], recovery.to_model(clip)[None][~free])


def test_the_generator_explains_only_the_known_pixels():
    """Latent inference and the generator's data step see the known pixels alone: whatever the
    completion holds at the missing ones, the same random streams give the same latent, the same
    rendering and the same updated generator. The step does lower the error on the known pixels."""
    from dyntex.config import make_config
    from dyntex.coop import CoopNets

    clip = grating(8).astype(np.float32) / 255.0
    missing = recovery.occlusion_mask("pepper:0.5", 8, S, np.random.default_rng(0))
    cfg = make_config("tiny", size=S, frames=8, device="cpu")
    results = []
    for junk in (0.0, 1.0):
        torch.manual_seed(0)
        model = CoopNets(cfg)
        data = recovery.MaskedClip(clip, missing)
        data.completed = torch.where(data.free, torch.full_like(data.completed, junk),
                                     data.completed)
        opt = torch.optim.Adam(model.generator.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(1)
        first = data.explain(model, g, opt)
        for _ in range(5):
            last = data.explain(model, g, opt)
        results.append((first, last, data.latent.clone(),
                        [p.detach().clone() for p in model.generator.parameters()]))
    (f0, l0, z0, p0), (f1, l1, z1, p1) = results
    assert torch.equal(f0, f1) and torch.equal(l0, l1) and torch.equal(z0, z1)
    assert all(torch.equal(a, b) for a, b in zip(p0, p1))
    seen = ~data.free
    target = data.completed                     # its known pixels are the clip's

    def known_error(y):
        return float(((y - target) * seen).pow(2).sum() / seen.sum() / 3)

    assert known_error(l0) < 0.8 * known_error(f0)


def test_fill_infers_the_latent_on_the_known_pixels_and_renders_the_rest():
    """A trained model fills a new clip without training: ``steps`` latent Langevin steps in
    rounds of l', no parameter changes, and the generator's rendering at the missing pixels."""
    from dyntex.config import make_config
    from dyntex.coop import CoopNets

    clip = grating(8).astype(np.float32) / 255.0
    missing = recovery.occlusion_mask("block:6", 8, S, np.random.default_rng(0))
    torch.manual_seed(0)
    model = CoopNets(make_config("tiny", size=S, frames=8, device="cpu"))
    params = [p.detach().clone() for p in model.generator.parameters()]
    rounds = []
    explain = recovery.MaskedClip.explain

    def spy(self, *a, **k):
        rounds.append(self.latent)
        return explain(self, *a, **k)

    recovery.MaskedClip.explain = spy
    try:
        out = recovery.fill(model, clip, missing, steps=2 * model.config.langevin_steps + 1)
    finally:
        recovery.MaskedClip.explain = explain
    assert len(rounds) == 3 and rounds[0] is None                  # 7 steps rounded up to 3 x 3
    assert all(torch.equal(a, b) for a, b in zip(params, model.generator.parameters()))
    assert np.array_equal(out[~missing], clip[~missing])
    assert not np.array_equal(out[missing], recovery.interpolate_missing(clip, missing)[missing])
