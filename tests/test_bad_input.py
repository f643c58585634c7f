"""Bad input through the real ``dyntex`` command: one test per row of the README's bad-input table.

Every refused input must give exit code 1, exactly one line on stderr saying what is wrong (no
traceback), and leave nothing half-written: no ``*.tmp`` / ``*.part`` files, no new checkpoint,
and no run folder at all when the run had not started. Rows marked "works" must train.

Training uses the ``tiny`` preset (8 frames of 16 x 16) for one iteration.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tracemalloc
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from PIL import Image

from cli import main
from dyntex import api
from dyntex.trainer import checkpoint_paths
from dyntex.video import MAX_PIXELS, InputWarning, read_video, write_video

REPO = Path(__file__).resolve().parents[1]
TINY = ["--preset", "tiny", "--iters", "1", "--quiet"]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# ----------------------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------------------
def smooth(t: int = 12, h: int = 24, w: int = 32, seed: int = 0) -> np.ndarray:
    """A smooth moving pattern, uint8 (T, H, W, 3) (codec friendly, like real footage)."""
    phases = np.random.default_rng(seed).uniform(0, 2 * np.pi, 3)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    frames = [np.stack([np.sin(2 * np.pi * (xx + 0.6 * yy) + 0.4 * i + p) for p in phases], -1)
              for i in range(t)]
    return np.round(127.5 + 100 * np.stack(frames)).astype(np.uint8)


def write_with(path: Path, frames: np.ndarray, codec: str, pix_fmt: str, in_format: str) -> Path:
    """Encode frames with PyAV (for formats write_video does not make: gray, alpha, avi)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format=in_format)
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height (the pixel data is absent): refusing it must not
    need the pixels, i.e. the limit is checked before anything is allocated."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("good") / "good.mp4"
    write_video(path, smooth(), 25)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, good) -> Path:
    """A finished tiny run (read-only for the tests: copy it before changing it)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    result = CliRunner().invoke(main, ["train", str(good), "--out", str(run), *TINY])
    assert result.exit_code == 0, result.output
    return run


# ----------------------------------------------------------------------------------------------
# checks
# ----------------------------------------------------------------------------------------------
def dyntex(*args) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its content ({} when the folder does not exist)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def no_leftovers(*folders: Path) -> None:
    for folder in folders:
        if folder.is_dir():
            junk = [p for p in folder.rglob("*") if p.name.endswith((".tmp", ".part"))]
            assert not junk, f"half-written files left: {junk}"


def fails(result, pattern: str, *, out: Path | None = None, before: dict | None = None) -> str:
    """Exit code 1, one stderr line matching ``pattern``, no traceback, nothing half-written.

    ``out``: the output folder; it must not exist afterwards, or (``before`` given) must hold
    exactly the files it held before.
    """
    lines = result.stderr.splitlines()
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert len(lines) == 1, lines
    assert "Traceback" not in result.output
    assert re.search(pattern, lines[0]), lines[0]
    assert lines[0].startswith("error: ")
    if out is not None:
        no_leftovers(out)
        if before is None:
            assert not out.exists(), f"{out} was created: {list(out.rglob('*'))}"
        else:
            assert snapshot(out) == before
    return lines[0]


def trains(result, run: Path, warning: str | None = None) -> None:
    """Exit code 0, a checkpoint at step 1, and stderr empty or (``warning``) warning lines only."""
    assert result.exit_code == 0, result.output
    assert "trained" in result.stdout and "to step 1" in result.stdout
    paths = checkpoint_paths(run)
    assert paths and paths[-1].name == "step_000001.pt"
    lines = result.stderr.splitlines()
    if warning is None:
        assert not lines, lines
    else:
        assert lines and all(line.startswith("warning: ") for line in lines), lines
        assert re.search(warning, lines[0]), lines[0]
    no_leftovers(run)


# ----------------------------------------------------------------------------------------------
# one test per row
# ----------------------------------------------------------------------------------------------
def test_empty_folder(tmp_path):
    (tmp_path / "in").mkdir()
    out = tmp_path / "run"
    fails(dyntex("train", tmp_path / "in", "--out", out, *TINY),
          r"in: no usable video, GIF or frame folder found$", out=out)


def test_folder_with_a_video_and_its_mask_trains_on_the_video(tmp_path):
    """boats/ holds boats_input.mp4 and boats_mask.mp4 (an inpainting mask): one clip, and the
    skipped mask is said. Training and the benchmark share the rule (dyntex.inputs)."""
    folder = tmp_path / "boats"
    folder.mkdir()
    write_video(folder / "boats_input.mp4", smooth(), 25)
    write_video(folder / "boats_mask.mp4", np.full((12, 24, 32, 3), 255, np.uint8), 25)
    run = tmp_path / "run"
    result = dyntex("train", folder, "--out", run, *TINY)
    trains(result, run, warning=r"skipped .*boats_mask\.mp4: a mask video")
    assert len(result.stderr.splitlines()) == 1
    assert torch.load(checkpoint_paths(run)[-1], weights_only=True)["meta"]["source"] == str(folder)
    from dyntex.inputs import load_inputs

    with pytest.warns(InputWarning, match="mask"):
        assert [v.name for v in load_inputs(folder, frames=8, size=16)] == ["boats_input"]


def test_folder_with_no_decodable_video(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a video\n")
    (folder / "a.mp4").write_text("not a video either\n" * 20)
    (folder / "b.avi").write_bytes(b"")
    out = tmp_path / "run"
    fails(dyntex("train", folder, "--out", out, *TINY),
          r"no usable video, GIF or frame folder found: .*a\.mp4: not a readable video .*\(and 1 more\)",
          out=out)


def test_non_video_file_renamed_mp4(tmp_path):
    path = tmp_path / "report.mp4"
    path.write_text("Quarterly report\n" * 100)
    out = tmp_path / "run"
    fails(dyntex("train", path, "--out", out, *TINY),
          r"report\.mp4: not a readable video \(Invalid data found", out=out)


def test_truncated_mp4_is_refused(tmp_path, good):
    # write_video puts the mp4 index (moov) at the end: a cut file has no index at all
    path = tmp_path / "cut.mp4"
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    out = tmp_path / "run"
    fails(dyntex("train", path, "--out", out, *TINY), r"cut\.mp4: not a readable video", out=out)


def test_truncated_avi_trains_on_the_frames_before_the_cut(tmp_path):
    full = write_with(tmp_path / "full.avi", smooth(t=40), "mpeg4", "yuv420p", "rgb24")
    data = full.read_bytes()
    start, end = data.find(b"movi"), data.find(b"idx1")  # frame data, then the index
    assert 0 < start < end
    path = tmp_path / "cut.avi"
    path.write_bytes(data[: start + (end - start) * 2 // 3])  # cut in the middle of the frames
    run = tmp_path / "run"
    trains(dyntex("train", path, "--out", run, *TINY), run,
           warning=r"cut\.avi: header says 40 frames but only \d+ decoded; the file may be truncated")
    # too few frames survive the cut: the warning, then the error (two lines), nothing written
    short = write_with(tmp_path / "short.avi", smooth(t=10), "mpeg4", "yuv420p", "rgb24")
    data = short.read_bytes()
    start, end = data.find(b"movi"), data.find(b"idx1")
    path = tmp_path / "shortcut.avi"
    for percent in range(50, 100, 5):  # a cut that leaves 2-7 of the 10 frames
        path.write_bytes(data[: start + (end - start) * percent // 100])
        with pytest.warns(InputWarning):
            if 2 <= len(read_video(path).frames) < 8:
                break
    out = tmp_path / "run2"
    result = dyntex("train", path, "--out", out, *TINY)
    lines = result.stderr.splitlines()
    assert result.exit_code == 1 and len(lines) == 2, result.output
    assert re.match(r"warning: .*shortcut\.avi: header says 10 frames but only (\d) decoded; the file may "
                    r"be truncated$", lines[0]), lines[0]
    decoded = re.search(r"only (\d) decoded", lines[0]).group(1)
    assert lines[1] == f"error: shortcut has only {decoded} frames but windows of 8 were asked; use --frames " \
                       f"{decoded} or a longer clip"
    assert not out.exists()


def test_bit_flipped_frame_data_skips_corrupt_packets_and_trains(tmp_path):
    good = write_video(tmp_path / "good.mp4", smooth(t=24), 25)
    data = bytearray(good.read_bytes())
    start, end = data.find(b"mdat") + 4, data.find(b"moov")
    assert 0 < start < end  # frame data first, index at the end
    for i in range(start + int((end - start) * 0.6), start + int((end - start) * 0.6) + 64):
        data[i] ^= 0x55
    path = tmp_path / "flipped.mp4"
    path.write_bytes(bytes(data))
    run = tmp_path / "run"
    result = dyntex("train", path, "--out", run, *TINY)
    # the decoder rejects the damaged packets (one warning) or conceals the damage (no warning)
    trains(result, run, warning=r"flipped\.mp4: skipped \d+ corrupt packet" if result.stderr else None)


def test_bit_flipped_container_header_is_refused(tmp_path, good):
    data = bytearray(good.read_bytes())
    index = data.find(b"moov")
    data[index:index + 4] = bytes(b ^ 0x20 for b in data[index:index + 4])  # the index is lost
    path = tmp_path / "flipped.mp4"
    path.write_bytes(bytes(data))
    out = tmp_path / "run"
    fails(dyntex("train", path, "--out", out, *TINY), r"flipped\.mp4: not a readable video", out=out)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    out = tmp_path / "run"
    fails(dyntex("train", path, "--out", out, *TINY), r"empty\.mp4: file is empty \(0 bytes\)$", out=out)


def test_one_frame_video(tmp_path):
    path = write_video(tmp_path / "still.mp4", smooth(t=1), 25)
    out = tmp_path / "run"
    fails(dyntex("train", path, "--out", out, *TINY),
          r"still is a single frame, not a video; training windows need 8 frames$", out=out)


def test_video_shorter_than_frames(tmp_path):
    path = write_video(tmp_path / "short.mp4", smooth(t=5), 25)
    out = tmp_path / "run"
    fails(dyntex("train", path, "--out", out, *TINY),
          r"short has only 5 frames but windows of 8 were asked; use --frames 5 or a longer clip$",
          out=out)
    # and the explicit flag: 12 frames, --frames 16
    path = write_video(tmp_path / "twelve.mp4", smooth(t=12), 25)
    fails(dyntex("train", path, "--out", out, *TINY, "--frames", "16"),
          r"twelve has only 12 frames but windows of 16 were asked", out=out)


def test_grayscale_video_and_frames_train(tmp_path):
    gray = smooth()[..., 1]
    path = write_with(tmp_path / "gray.avi", gray, "ffv1", "gray", "gray")
    assert av.open(str(path)).streams.video[0].codec_context.pix_fmt == "gray"
    trains(dyntex("train", path, "--out", tmp_path / "run1", *TINY), tmp_path / "run1")
    folder = tmp_path / "grayframes"
    folder.mkdir()
    for i, frame in enumerate(gray):
        Image.fromarray(frame, "L").save(folder / f"{i:02d}.png")
    trains(dyntex("train", folder, "--out", tmp_path / "run2", *TINY), tmp_path / "run2")


def test_video_with_alpha_channel_trains(tmp_path):
    rgba = np.concatenate([smooth(), np.full((12, 24, 32, 1), 128, np.uint8)], axis=-1)
    path = write_with(tmp_path / "alpha.mov", rgba, "png", "rgba", "rgba")
    assert av.open(str(path)).streams.video[0].codec_context.pix_fmt == "rgba"
    trains(dyntex("train", path, "--out", tmp_path / "run1", *TINY), tmp_path / "run1")
    folder = tmp_path / "alphaframes"
    folder.mkdir()
    for i, frame in enumerate(rgba):
        Image.fromarray(frame, "RGBA").save(folder / f"{i:02d}.png")
    trains(dyntex("train", folder, "--out", tmp_path / "run2", *TINY), tmp_path / "run2")


def test_very_large_resolution_is_downscaled_while_decoding(tmp_path, monkeypatch):
    """12 frames of 4000x3000 (36 MB each at full size, 432 MB as a clip): each frame is divided
    by 255 (a 144 MB float32 copy) and shrunk to 16x16 as it is decoded, so the traced peak while
    the command decodes its input stays below six full-size uint8 frames (one frame and its
    float copy), whatever the number of frames."""
    folder = tmp_path / "big"
    folder.mkdir()
    x = (np.arange(4000) // 16 % 256).astype(np.uint8)
    y = (np.arange(3000) // 12 % 256).astype(np.uint8)
    for i in range(2):
        frame = np.empty((3000, 4000, 3), np.uint8)
        frame[..., 0], frame[..., 1], frame[..., 2] = x[None, :] + 8 * i, y[:, None], 60 * i
        Image.fromarray(frame).save(folder / f"f{i}.png", compress_level=1)
    del frame
    for i in range(2, 12):
        shutil.copyfile(folder / f"f{i % 2}.png", folder / f"f{i}.png")
    peaks = []

    def traced(*args, **kwargs):  # measure the decoding step of the real command
        tracemalloc.start()
        try:
            return real_load(*args, **kwargs)
        finally:
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()

    real_load = api.load_inputs
    monkeypatch.setattr(api, "load_inputs", traced)
    run = tmp_path / "run"
    trains(dyntex("train", folder, "--out", run, *TINY), run)
    frame_bytes = 4000 * 3000 * 3
    assert len(peaks) == 1 and peaks[0] < 6 * frame_bytes, f"peak {peaks[0] / 2**20:.0f} MiB"


def test_frames_above_max_pixels_are_refused_before_decoding(tmp_path):
    folder = tmp_path / "huge"
    folder.mkdir()
    for i in range(8):
        png_header_only(folder / f"f{i}.png", 8000, 4500)  # 36 Mpx > 7680x4320
    assert 8000 * 4500 > MAX_PIXELS
    out = tmp_path / "run"
    fails(dyntex("train", folder, "--out", out, *TINY),
          r"huge: no usable video, GIF or frame folder found: .*huge: frames are 8000x4500, above the "
          r"limit of 33177600 pixels; downscale the video first$",
          out=out)


def test_mixed_resolutions_in_one_folder_train(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    write_video(folder / "a.mp4", smooth(h=24, w=32), 25)
    write_video(folder / "b.mp4", smooth(h=40, w=40, seed=1), 25)
    frames = folder / "c"
    frames.mkdir()
    for i, frame in enumerate(smooth(h=18, w=50, seed=2)):
        Image.fromarray(frame).resize((50 + 2 * (i % 2), 18)).save(frames / f"{i:02d}.png")
    run = tmp_path / "run"
    trains(dyntex("train", folder, "--out", run, *TINY, "--size", "16"), run)


def _deny(monkeypatch, target: Path, mode: int) -> None:
    """As root, permissions are not enforced: make os.access say no for ``target``."""
    real = os.access

    def access(path, want, *a, **k):
        if Path(path) == target and want & mode:
            return False
        return real(path, want, *a, **k)

    monkeypatch.setattr(os, "access", access)


@pytest.mark.skipif(IS_ROOT, reason="running as root: file permissions are not enforced "
                                    "(test_unreadable_file_simulated covers the code path)")
def test_unreadable_file(tmp_path, good):
    path = tmp_path / "locked.mp4"
    shutil.copyfile(good, path)
    path.chmod(0)
    out = tmp_path / "run"
    try:
        fails(dyntex("train", path, "--out", out, *TINY), r"locked\.mp4: permission denied", out=out)
    finally:
        path.chmod(0o644)


def test_unreadable_file_simulated(tmp_path, good, monkeypatch):
    path = tmp_path / "locked.mp4"
    shutil.copyfile(good, path)
    _deny(monkeypatch, path, os.R_OK)
    out = tmp_path / "run"
    fails(dyntex("train", path, "--out", out, *TINY),
          r"locked\.mp4: permission denied; make it readable$", out=out)


def test_output_folder_not_writable(tmp_path, good, trained):
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    fails(dyntex("train", good, "--out", a_file, *TINY),
          r"output folder .*taken is a file; choose another --out$")
    assert a_file.read_text() == "x"
    fails(dyntex("train", good, "--out", a_file / "run", *TINY),
          r"cannot create output folder .*taken/run: .*taken is a file, not a folder$")
    fails(dyntex("synthesize", trained, "--out", a_file, "-n", "1"),
          r"output folder .*taken is a file")
    fails(dyntex("synthesize", trained, "--out", a_file / "clips", "-n", "1"),
          r"cannot create output folder .*taken/clips: .*taken is a file, not a folder$")
    assert a_file.read_text() == "x"


def test_output_folder_without_write_permission(tmp_path, good, monkeypatch):
    parent = tmp_path / "readonly"
    parent.mkdir()
    if IS_ROOT:
        _deny(monkeypatch, parent, os.W_OK)
    else:
        parent.chmod(0o555)
    try:
        fails(dyntex("train", good, "--out", parent / "run", *TINY),
              r"cannot write to .*readonly: permission denied$", out=parent / "run")
    finally:
        parent.chmod(0o755)


def test_run_dir_without_checkpoint(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"preset": "tiny"}))
    out = tmp_path / "clips"
    fails(dyntex("synthesize", run, "--out", out, "-n", "1"),
          r"no checkpoint in .*run/checkpoints \(train first: dyntex train \.\.\. --out .*run\)$", out=out)
    fails(dyntex("synthesize", tmp_path / "nothing", "--out", out), r"run folder .*nothing does not exist$",
          out=out)


def test_checkpoint_from_a_different_size_or_preset(tmp_path, good, trained):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    before = snapshot(run)
    fails(dyntex("train", good, "--out", run, "--resume", *TINY, "--size", "24"),
          r"cannot resume .*step_000001\.pt: the networks differ \(size: checkpoint 16 vs now 24\)$",
          out=run, before=before)
    fails(dyntex("train", good, "--out", run, "--resume", "--preset", "fast", "--frames", "8", "-q"),
          r"the networks differ \(size: checkpoint 16 vs now 64, latent_channels: checkpoint 4 vs now "
          r"16\)$", out=run, before=before)


def test_corrupt_checkpoint(tmp_path, good, trained):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    newest = checkpoint_paths(run)[-1]
    newest.write_bytes(newest.read_bytes()[:3000])
    before = snapshot(run)
    pattern = r"checkpoint .*step_000001\.pt is corrupt or unreadable"
    fails(dyntex("train", good, "--out", run, "--resume", *TINY, "--iters", "2"), pattern,
          out=run, before=before)
    out = tmp_path / "clips"
    fails(dyntex("synthesize", run, "--out", out, "-n", "1"), pattern, out=out)


@pytest.mark.parametrize("content, pattern", [
    ('{"iters": 1, "chainz": 2}', r"unknown setting 'chainz' \(did you mean chains\?\)$"),
    ('{"iters": "ten"}', r"setting 'iters' must be int, got 'ten'$"),
    ('{"step_size": true}', r"setting 'step_size' must be float, got True$"),
    ('{"window": "middle"}', r"setting 'window' must be one of first, random, got 'middle'$"),
    ("iters = 3\n", r"config file .*bad\.json is not readable JSON: Expecting value: line 1 column 1"),
    ("[1, 2]", r"config file .*bad\.json must hold a JSON object of settings$"),
], ids=["unknown-key", "wrong-type", "bool-for-float", "bad-choice", "not-json", "not-an-object"])
def test_bad_config_file(tmp_path, good, content, pattern):
    config = tmp_path / "bad.json"
    config.write_text(content)
    out = tmp_path / "run"
    fails(dyntex("train", good, "--out", out, "--config", config, *TINY), pattern, out=out)


def test_missing_config_file(tmp_path, good):
    out = tmp_path / "run"
    fails(dyntex("train", good, "--out", out, "--config", tmp_path / "nope.json", *TINY),
          r"config file .*nope\.json does not exist$", out=out)


@pytest.mark.parametrize("flags, pattern", [
    (["--size", "-16"], r"setting 'size' must be at least 1, got -16$"),
    (["--size", "18"], r"the fast networks need size to be a multiple of \d+ \(>= \d+\); got 18$"),
    (["--chains", "0"], r"setting 'chains' must be at least 1, got 0$"),
    (["--iters", "-1"], r"setting 'iters' must be at least 1, got -1$"),
    (["--frames", "0"], r"setting 'frames' must be at least 1, got 0$"),
    (["--step-size", "-0.1"], r"setting 'step_size' must be positive, got -0.1$"),
    (["--langevin-steps", "-2"], r"setting 'langevin_steps' must be 0 or more, got -2$"),
], ids=["negative-size", "odd-size", "zero-chains", "negative-iters", "zero-frames",
        "negative-step-size", "negative-langevin-steps"])
def test_nonsense_training_flags(tmp_path, good, flags, pattern):
    out = tmp_path / "run"
    fails(dyntex("train", good, "--out", out, *TINY, *flags), pattern, out=out)


@pytest.mark.parametrize("flags, pattern", [
    (["-n", "0"], r"-n must be at least 1, got 0$"),
    (["--frames", "0"], r"--frames must be at least 1, got 0$"),
    (["--langevin-steps", "-1"], r"--langevin-steps must be 0 or more, got -1$"),
    (["--format", "avi"], r"unknown format\(s\) avi; choose from mp4, gif, png, npy$"),
    (["--format", ","], r"unknown format\(s\) \(none given\)"),
], ids=["zero-n", "zero-frames", "negative-langevin-steps", "unknown-format", "no-format"])
def test_nonsense_synthesize_flags(tmp_path, trained, flags, pattern):
    out = tmp_path / "clips"
    fails(dyntex("synthesize", trained, "--out", out, *flags), pattern, out=out)


def test_malformed_command_line_is_a_usage_error(tmp_path, good):
    """Not a number where one is expected: click's usage error (exit 2, usage + one error line)."""
    out = tmp_path / "run"
    result = dyntex("train", good, "--out", out, *TINY, "--size", "big")
    assert result.exit_code == 2
    assert "Error: Invalid value for '--size': 'big' is not a valid integer." in result.stderr
    assert "Traceback" not in result.output and not out.exists()


def test_debug_shows_the_traceback(tmp_path):
    missing = tmp_path / "missing.mp4"
    out = tmp_path / "run"
    fails(dyntex("train", missing, "--out", out, *TINY), rf"^error: {re.escape(str(missing))}: no such file "
          r"or folder$", out=out)
    cmd = [sys.executable, "-m", "cli", "--debug", "train", str(missing), "--out", str(out), *TINY]
    debug = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert f"dyntex.errors.InputError: {missing}: no such file or folder" in debug.stderr
    assert not out.exists()
