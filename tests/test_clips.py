"""Tests for dyntex.clips (inputs -> training windows) and dyntex.sample_data (shipped clip)."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dyntex import sample_data
from dyntex.clips import WindowSampler
from dyntex.inputs import default_cap, fps_of, load_inputs
from dyntex.errors import ConfigError, InputError
from dyntex.sample_data import SAMPLE_CLIP, render_water
from dyntex.video import InputWarning, Video, to_model, write_frames, write_video


def numbered_clip(t: int, size: int = 8) -> np.ndarray:
    """Frame i is filled with value i, so windows can be identified by their first value."""
    return np.repeat(np.arange(t, dtype=np.uint8), size * size * 3).reshape(t, size, size, 3)


def make_video(name: str, t: int, size: int = 8, fps: float = 25.0) -> Video:
    return Video(numbered_clip(t, size), fps, name, t)


@pytest.fixture
def collection(tmp_path: Path) -> Path:
    """A folder holding an mp4, a gif, a frame sub-folder, a broken video and unrelated files."""
    root = tmp_path / "inputs"
    root.mkdir()
    rng = np.random.default_rng(0)
    write_video(root / "b.mp4", rng.integers(0, 256, (12, 20, 30, 3), dtype=np.uint8), fps=30)
    write_video(root / "a.gif", rng.integers(0, 256, (10, 16, 16, 3), dtype=np.uint8), fps=10)
    write_frames(root / "c_frames", rng.integers(0, 256, (9, 24, 24, 3), dtype=np.uint8))
    (root / "broken.avi").write_bytes(b"not a video at all" * 50)
    (root / "masks.mat").write_bytes(b"MATLAB 5.0")
    (root / "README.md").write_text("notes")
    return root


# --------------------------------------------------------------------------- load_inputs


def test_load_inputs_collection_skips_broken_with_warning(collection: Path):
    with pytest.warns(InputWarning, match="broken.avi"):
        videos = load_inputs(collection, frames=4, size=16)
    assert [v.name for v in videos] == ["a", "b", "c_frames"]
    assert all(v.frames.shape[1:] == (16, 16, 3) for v in videos)
    assert [len(v.frames) for v in videos] == [10, 12, 9]
    assert fps_of(videos) == 10  # all rates tie (10, 30, 25): the first wins


def test_load_inputs_single_file_and_frame_folder(collection: Path):
    [video] = load_inputs(collection / "b.mp4", frames=4, size=8)
    assert video.frames.shape == (12, 8, 8, 3) and video.fps == 30
    [folder] = load_inputs(collection / "c_frames", frames=4, size=None)
    assert folder.frames.shape == (9, 24, 24, 3)


def test_load_inputs_caps_frames_per_video(collection: Path):
    assert default_cap(16) == 256 and default_cap(100) == 400
    [video] = load_inputs(collection / "b.mp4", frames=4, size=8, max_frames=5)
    assert len(video.frames) == 5
    [video] = load_inputs(collection / "b.mp4", frames=4, size=8, start=10)
    assert len(video.frames) == 2


def test_load_inputs_errors(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no usable"):
        load_inputs(empty, frames=4, size=8)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "x.mp4").write_bytes(b"\0" * 100)
    (junk / "y.gif").write_bytes(b"GIF89a")
    with pytest.raises(InputError, match=r"no usable.*and 1 more"):
        load_inputs(junk, frames=4, size=8)
    with pytest.raises(InputError, match="no such file"):
        load_inputs(tmp_path / "missing.mp4", frames=4, size=8)
    with pytest.raises(ConfigError):
        load_inputs(empty, frames=0, size=8)


def test_images_beside_videos_are_ignored_with_warning(tmp_path: Path):
    write_video(tmp_path / "v.gif", numbered_clip(6), fps=25)
    Image.fromarray(numbered_clip(1)[0]).save(tmp_path / "thumb.png")
    with pytest.warns(InputWarning, match="image"):
        videos = load_inputs(tmp_path, frames=2, size=8)
    assert [v.name for v in videos] == ["v"]


# --------------------------------------------------------------------------- WindowSampler


def test_first_mode_takes_leading_frames():
    videos = [make_video("a", 10), make_video("b", 6)]
    sampler = WindowSampler(videos, frames=4, mode="first")
    x = sampler.observed()
    assert x.shape == (2, 3, 4, 8, 8) and x.dtype == torch.float32
    assert torch.equal(x[0], to_model(numbered_clip(4)))
    assert torch.equal(sampler.observed(), x)
    cycled = sampler.observed(batch=5)
    assert cycled.shape[0] == 5 and torch.equal(cycled[2], x[0]) and torch.equal(cycled[3], x[1])


def test_random_mode_is_reproducible_and_draws_real_windows():
    videos = [make_video("a", 30), make_video("b", 12)]

    def draw(seed: int) -> torch.Tensor:
        sampler = WindowSampler(videos, frames=5, mode="random", generator=torch.Generator().manual_seed(seed))
        return torch.cat([sampler.observed(batch=8) for _ in range(3)])

    x = draw(0)
    assert x.shape == (24, 3, 5, 8, 8) and x.min() >= -1 and x.max() <= 1
    assert torch.equal(x, draw(0)) and not torch.equal(x, draw(1))
    pixels = torch.round((x[:, 0, :, 0, 0] + 1) * 127.5)
    starts = pixels[:, 0]
    assert torch.equal(pixels - starts[:, None], torch.arange(5.0).expand(24, 5))  # contiguous windows
    assert starts.max() <= 25 and len(set(starts.tolist())) > 5


def test_short_videos_raise_with_fix():
    with pytest.raises(InputError, match=r"has only 6 frames.*--frames 6"):
        WindowSampler([make_video("long", 20), make_video("short", 6)], frames=8)
    with pytest.raises(InputError, match="--frames 3"):
        WindowSampler([make_video("x", 3), make_video("y", 3)], frames=8, mode="random",
                      generator=torch.Generator())


def test_sampler_rejects_bad_settings():
    videos = [make_video("a", 10)]
    with pytest.raises(ConfigError):
        WindowSampler(videos, frames=4, mode="middle")
    with pytest.raises(ConfigError, match="Generator"):        # a random draw needs its stream
        WindowSampler(videos, frames=4, mode="random").observed(1)
    with pytest.raises(InputError):
        WindowSampler([], frames=4)
    with pytest.raises(InputError, match="differ in frame size"):
        WindowSampler([make_video("a", 10, size=8), make_video("b", 10, size=6)], frames=4)


def test_fps_of_prefers_most_common_rate():
    videos = [make_video("a", 4, fps=10), make_video("b", 4, fps=30), make_video("c", 4, fps=30)]
    assert fps_of(videos) == 30 and fps_of(videos[:1]) == 10 and fps_of([]) == 25


# --------------------------------------------------------------------------- sample data


def test_render_water_is_deterministic_and_loops():
    clip = render_water(frames=16, size=32, seed=3)
    assert clip.shape == (16, 32, 32, 3) and clip.dtype == np.uint8
    assert np.array_equal(clip, render_water(frames=16, size=32, seed=3))
    mean = clip.reshape(-1, 3).mean(axis=0)
    assert mean[2] > mean[0] and mean[1] > mean[0]  # blue-green
    steps = np.abs(np.diff(clip.astype(int), axis=0)).mean()
    wrap = np.abs(clip[0].astype(int) - clip[-1]).mean()
    assert 0 < steps and wrap < 1.5 * steps  # the last frame leads into the first like any other


def test_shipped_sample_clip():
    assert SAMPLE_CLIP.is_file() and SAMPLE_CLIP.stat().st_size < 300_000
    [video] = load_inputs(SAMPLE_CLIP, frames=16, size=None)
    assert video.frames.shape == (64, 64, 64, 3) and video.fps == 25
    assert np.abs(video.frames.astype(int) - render_water()).mean() < 6


def test_sample_clip_falls_back_to_rendering(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(sample_data, "SAMPLE_CLIP", tmp_path / "missing" / "water.mp4")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    path = sample_data.sample_clip()
    assert path == tmp_path / "dyntex-sample" / "water.mp4" and path.is_file()


# --------------------------------------------------------------------------- real clips


@pytest.mark.shared_data
def test_real_clips_to_random_windows(shared_data: Path):
    videos = load_inputs(shared_data / "fire_pot" / "fire_pot0.avi", frames=8, size=32, max_frames=40)
    videos += load_inputs(shared_data / "escalator", frames=8, size=32)
    sampler = WindowSampler(videos, frames=8, mode="random", generator=torch.Generator().manual_seed(0))
    assert sampler.observed(batch=3).shape == (3, 3, 8, 32, 32)
    assert fps_of(videos) == 25
