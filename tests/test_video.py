"""Tests for dyntex.video: value mapping, resizing, reading, writing, contact sheets."""
from __future__ import annotations

import os
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from dyntex.errors import ConfigError, InputError, OutputError
from dyntex.video import (PIXEL_TO_MODEL, InputWarning, contact_sheet, from_model, read_video,
                          resize_crop, to_model, to_unit, write_frames, write_npy, write_outputs,
                          write_png, write_video)


def smooth_clip(t: int = 12, h: int = 32, w: int = 48, seed: int = 0) -> np.ndarray:
    """A smooth moving colour pattern (codec friendly) as uint8 (T, H, W, 3)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    phases = rng.uniform(0, 2 * np.pi, 3)
    tint = np.array([0.8, 1.0, 0.9])  # mostly luminance, mild colour: like natural footage
    frames = [np.stack([np.sin(2 * np.pi * (xx + 0.6 * yy) + 0.4 * i + 0.5 * p) for p in phases], -1) * tint
              for i in range(t)]
    return np.round(127.5 + 100 * np.stack(frames)).astype(np.uint8)


def noise_clip(t: int = 5, h: int = 17, w: int = 33, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


# --------------------------------------------------------------------------- mapping


def test_mapping_exact_for_every_pixel_value():
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 1, 256, 1).repeat(3, axis=3)
    x = to_model(pixels)
    assert x.shape == (3, 1, 1, 256) and x.dtype == torch.float32
    expected = torch.arange(256, dtype=torch.float32) / 127.5 - 1
    assert torch.equal(x[0, 0, 0], expected)
    assert x.min() == -1 and x.max() == 1
    assert np.array_equal(from_model(x), pixels)
    assert PIXEL_TO_MODEL.scale == 127.5 and PIXEL_TO_MODEL.shift == 1.0


def test_low_contrast_frame_is_not_stretched():
    frame = np.random.default_rng(0).integers(100, 111, (2, 8, 8, 3), dtype=np.uint8)
    x = to_model(frame)
    assert x.min() >= 100 / 127.5 - 1 - 1e-6 and x.max() <= 110 / 127.5 - 1 + 1e-6
    assert np.array_equal(from_model(x), frame)
    unit = to_unit(frame)
    assert unit.dtype == np.float32 and unit.min() >= 100 / 255 - 1e-6 and unit.max() <= 110 / 255 + 1e-6


def test_from_model_clamps_rounds_and_handles_batches():
    x = torch.tensor([-3.0, -1.0, 0.0, 0.004, 1.0, 2.5]).reshape(1, 1, 1, 6).repeat(3, 1, 1, 1)
    assert from_model(x)[0, 0, :, 0].tolist() == [0, 0, 128, 128, 255, 255]
    batch = torch.zeros(2, 3, 4, 5, 6)
    assert from_model(batch).shape == (2, 4, 5, 6, 3)
    assert to_unit(batch).shape == (2, 4, 5, 6, 3)


def test_to_unit_agrees_between_pixels_and_model_values():
    frames = noise_clip()
    np.testing.assert_allclose(to_unit(frames), to_unit(to_model(frames)), atol=1e-6)


# --------------------------------------------------------------------------- resize


def test_resize_crop_matches_area_reference_when_downscaling():
    frame = noise_clip(1, 72, 128)[0]
    out = resize_crop(frame, 36)
    reference = cv2.resize(frame, (64, 36), interpolation=cv2.INTER_AREA)[:, 14:50]
    assert out.shape == (36, 36, 3) and np.array_equal(out, reference)


def test_resize_crop_upscales_with_cubic_and_keeps_channel_axis():
    frame = noise_clip(1, 16, 24)[0]
    out = resize_crop(frame, 32)
    reference = cv2.resize(frame, (48, 32), interpolation=cv2.INTER_CUBIC)[:, 8:40]
    assert np.array_equal(out, reference)
    assert resize_crop(frame[:, :, :1], 8).shape == (8, 8, 1)
    assert np.array_equal(resize_crop(frame[:, :16], 16), frame[:, :16])


# --------------------------------------------------------------------------- round trips


def test_png_frames_round_trip_exactly_and_drop_stale_frames(tmp_path):
    folder = tmp_path / "frames"
    write_frames(folder, noise_clip(t=12))
    clip = noise_clip(t=5, seed=1)
    write_frames(folder, clip)
    assert sorted(p.name for p in folder.iterdir()) == [f"frame_{i:04d}.png" for i in range(5)]
    video = read_video(folder)
    assert np.array_equal(video.frames, clip) and video.fps == 25 and video.total_frames == 5


def test_npy_round_trip_exactly(tmp_path):
    clip = noise_clip()
    write_npy(tmp_path / "x.npy", clip)
    data = np.load(tmp_path / "x.npy")
    assert data.dtype == np.float32 and data.shape == clip.shape
    assert np.array_equal(np.round(data * 255).astype(np.uint8), clip)


def test_gif_round_trip_within_palette_tolerance(tmp_path):
    clip = smooth_clip()
    write_video(tmp_path / "x.gif", clip, fps=25)
    video = read_video(tmp_path / "x.gif")
    assert video.frames.shape == clip.shape and video.fps == pytest.approx(25)
    assert np.abs(video.frames.astype(int) - clip).mean() < 4
    with Image.open(tmp_path / "x.gif") as img:
        assert img.info["loop"] == 0 and img.info["duration"] == 40


def test_mp4_round_trip(tmp_path):
    clip = smooth_clip(t=20)
    write_video(tmp_path / "x.mp4", clip, fps=25)
    video = read_video(tmp_path / "x.mp4")
    assert video.frames.shape == clip.shape and video.fps == 25 and video.total_frames == 20
    assert np.abs(video.frames.astype(int) - clip).mean() < 6
    with av.open(str(tmp_path / "x.mp4")) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"


def test_odd_size_mp4_is_padded_other_formats_keep_size(tmp_path):
    clip = smooth_clip(t=6, h=17, w=33)
    paths = write_outputs(tmp_path, "odd", clip, fps=10)
    assert [p.name for p in paths] == ["odd.mp4", "odd.gif", "odd", "odd.npy"]
    mp4 = read_video(tmp_path / "odd.mp4").frames
    assert mp4.shape == (6, 18, 34, 3)  # padded by one replicated pixel; documented
    assert np.abs(mp4[:, :17, :33].astype(int) - clip).mean() < 6
    assert read_video(tmp_path / "odd.gif").frames.shape == clip.shape
    assert np.array_equal(read_video(tmp_path / "odd").frames, clip)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left


def test_write_outputs_subset_and_unknown_format(tmp_path):
    assert write_outputs(tmp_path, "a", noise_clip(), 25, formats={"npy"}) == [tmp_path / "a.npy"]
    with pytest.raises(ConfigError):
        write_outputs(tmp_path, "a", noise_clip(), 25, formats={"avi"})


# --------------------------------------------------------------------------- reading


def test_grayscale_rgba_and_16bit_frames_become_rgb(tmp_path):
    gray = tmp_path / "gray"
    gray.mkdir()
    g = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
    Image.fromarray(g, "L").save(gray / "0.png")
    assert np.array_equal(read_video(gray).frames[0], np.repeat(g[..., None], 3, axis=2))

    rgba = tmp_path / "rgba"
    rgba.mkdir()
    px = np.zeros((4, 4, 4), dtype=np.uint8)
    px[..., :3] = 200
    px[..., 3] = [[255], [128], [0], [255]]
    Image.fromarray(px, "RGBA").save(rgba / "0.png")
    out = read_video(rgba).frames[0]
    assert out.shape == (4, 4, 3)
    assert out[0, 0, 0] == 200 and out[1, 0, 0] == 100 and out[2, 0, 0] == 0  # over black

    deep = tmp_path / "deep"
    deep.mkdir()
    Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16)).save(deep / "0.png")
    assert (read_video(deep).frames == 255).all()


def test_gif_with_transparency_is_composited(tmp_path):
    frames = [Image.new("RGBA", (8, 8), (250, 10 + 40 * i, 10, 255)) for i in range(3)]
    frames[0].putpixel((0, 0), (0, 0, 0, 0))
    frames[0].save(tmp_path / "t.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    video = read_video(tmp_path / "t.gif")
    assert video.frames.shape == (3, 8, 8, 3) and video.fps == pytest.approx(10)
    assert video.frames[0, 0, 0].tolist() == [0, 0, 0]  # transparent pixel over black
    assert video.frames[:, 1, 1].tolist() == [[250, 10, 10], [250, 50, 10], [250, 90, 10]]


def test_frame_folder_natural_order_and_start(tmp_path):
    for i in [1, 2, 10, 9]:
        Image.fromarray(np.full((4, 4, 3), i, dtype=np.uint8)).save(tmp_path / f"f_{i}.png")
    (tmp_path / "notes.txt").write_text("not a frame")
    assert read_video(tmp_path).frames[:, 0, 0, 0].tolist() == [1, 2, 9, 10]
    assert read_video(tmp_path, frames=2, start=1).frames[:, 0, 0, 0].tolist() == [2, 9]


def test_frame_folder_mixed_sizes(tmp_path):
    Image.fromarray(noise_clip(1, 8, 8)[0]).save(tmp_path / "0.png")
    Image.fromarray(noise_clip(1, 10, 12)[0]).save(tmp_path / "1.png")
    with pytest.raises(InputError, match="size"):
        read_video(tmp_path)
    assert read_video(tmp_path, size=6).frames.shape == (2, 6, 6, 3)


def test_large_video_is_resized_while_decoding(tmp_path):
    path = tmp_path / "big.mp4"
    write_video(path, smooth_clip(t=30, h=360, w=640), fps=30)
    video = read_video(path, frames=10, size=32, start=5)
    assert video.frames.shape == (10, 32, 32, 3) and video.fps == 30 and video.total_frames == 30
    with pytest.raises(InputError, match="pixels"):
        read_video(path, max_pixels=100_000)


def test_truncated_avi_keeps_decoded_frames_with_warning(tmp_path):
    path = tmp_path / "clip.avi"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i, rgb in enumerate(noise_clip(t=40, h=48, w=64)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    data = path.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.warns(InputWarning, match="truncated"):
        video = read_video(cut)
    assert 1 <= len(video.frames) < 40


@pytest.mark.parametrize("case", ["missing", "empty", "random_bytes", "truncated_mp4", "empty_folder",
                                  "single_image", "text_file", "start_past_end", "broken_png"])
def test_bad_inputs_raise_input_error(tmp_path, case):
    path = tmp_path / "bad.mp4"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "random_bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif case in ("truncated_mp4", "start_past_end"):
        write_video(path, smooth_clip(t=8), fps=25)
        if case == "truncated_mp4":
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])
    elif case == "empty_folder":
        path = tmp_path / "folder"
        path.mkdir()
    elif case == "single_image":
        path = tmp_path / "one.png"
        Image.fromarray(noise_clip(1)[0]).save(path)
    elif case == "text_file":
        path = tmp_path / "notes.txt"
        path.write_text("hello\n" * 100)
    elif case == "broken_png":
        path = tmp_path / "frames"
        path.mkdir()
        (path / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(InputError) as info:
        read_video(path, start=100 if case == "start_past_end" else 0)
    message = str(info.value)
    assert "\n" not in message and path.name in message


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="running as root: file permissions are not enforced")
def test_unreadable_file_raises_input_error(tmp_path):
    path = tmp_path / "x.mp4"
    write_video(path, smooth_clip(t=4), fps=25)
    path.chmod(0)
    with pytest.raises(InputError, match="permission"):
        read_video(path)


# --------------------------------------------------------------------------- writing errors


def test_unwritable_destinations_raise_output_error(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder is expected")
    clip = noise_clip(t=2, h=8, w=8)
    with pytest.raises(OutputError):
        write_video(blocker / "x.mp4", clip, fps=25)
    with pytest.raises(OutputError):
        write_npy(blocker / "sub" / "x.npy", clip)
    with pytest.raises(OutputError):
        write_frames(blocker, clip)
    with pytest.raises(OutputError):
        write_outputs(blocker, "x", clip, 25)
    (tmp_path / "dir.mp4").mkdir()
    with pytest.raises(OutputError):
        write_video(tmp_path / "dir.mp4", clip, fps=25)
    with pytest.raises(OutputError, match=r"\.mp4 or \.gif"):
        write_video(tmp_path / "x.avi", clip, fps=25)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "dir.mp4"]


def test_overwrite_replaces_file_atomically(tmp_path):
    path = tmp_path / "x.gif"
    write_video(path, noise_clip(t=3), fps=25)
    write_video(path, noise_clip(t=4), fps=25)
    assert len(read_video(path).frames) == 4
    assert [p.name for p in tmp_path.iterdir()] == ["x.gif"]


# --------------------------------------------------------------------------- contact sheet


def test_contact_sheet_layout(tmp_path):
    observed, synthesized = noise_clip(t=10, h=16, w=16), noise_clip(t=10, h=16, w=16, seed=1)
    sheet = contact_sheet([observed, synthesized], n_cols=4)
    assert sheet.dtype == np.uint8 and sheet.shape == (2 * 18 + 2, 4 * 18 + 2, 3)
    assert np.array_equal(sheet[2:18, 2:18], observed[0])
    assert np.array_equal(sheet[20:36, 56:72], synthesized[9])
    labelled = contact_sheet([observed, synthesized], n_cols=4, labels=["observed", "synth"])
    assert labelled.shape[0] == sheet.shape[0] and labelled.shape[1] > sheet.shape[1]
    assert (labelled[:, : labelled.shape[1] - sheet.shape[1]] < 128).any()  # text was drawn
    path = write_png(tmp_path / "sheet.png", labelled)
    assert np.array_equal(np.asarray(Image.open(path)), labelled)


# --------------------------------------------------------------------------- real clips


@pytest.mark.shared_data
def test_real_avi_first_frames(shared_data: Path):
    video = read_video(shared_data / "fire_pot" / "fire_pot0.avi", frames=16, size=64)
    assert video.frames.shape == (16, 64, 64, 3) and video.fps == 25 and video.total_frames == 260


@pytest.mark.shared_data
def test_real_gif_and_frame_folder(shared_data: Path):
    gif = read_video(shared_data / "smoke_plume" / "smoke_plume_1.gif")
    assert gif.frames.shape == (12, 256, 256, 3) and gif.fps == pytest.approx(10)
    folder = read_video(shared_data / "escalator", size=64)
    assert folder.frames.shape == (12, 64, 64, 3) and folder.name == "escalator"
