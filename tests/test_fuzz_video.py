"""Fuzzing the video loader with truncated and bit-flipped files (hypothesis).

For small valid mp4 (H.264), gif and avi (MPEG-4 Part 2) files, hypothesis draws a truncation
point and/or a set of bit flips. :func:`dyntex.video.read_video` may then only

* succeed, returning float32 ``(n, S, S, 3)`` frames in [0, 1] with ``1 <= n <= T`` (possibly with an
  :class:`~dyntex.video.InputWarning` about frames it had to skip), or
* raise :class:`dyntex.errors.InputError` with a one-line message naming the file.

Anything else (another exception type, a crash, a wrong shape) fails the test. Bounded at
``MAX_EXAMPLES`` per format and per mutation kind; the whole module runs in well under 30 s.
"""
from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dyntex.errors import InputError
from dyntex.video import InputWarning, read_video, write_video

T, H, W, SIZE = 12, 32, 48, 16
MAX_EXAMPLES = 60
FORMATS = ("mp4", "gif", "avi")
RAN: Counter = Counter()  # (format, outcome) -> examples run, reported at the end of the module


def _clip() -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W] / max(H, W)
    frames = [np.stack([np.sin(2 * np.pi * (xx + 0.6 * yy) + 0.4 * i + p) for p in (0, 2, 4)], -1)
              for i in range(T)]
    return np.round(127.5 + 100 * np.stack(frames)).astype(np.uint8)


def _write_avi(path: Path, frames: np.ndarray) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())


_ORIGINALS: dict[str, bytes] = {}


def _original(fmt: str, folder: Path) -> bytes:
    if fmt not in _ORIGINALS:
        path = folder / f"valid.{fmt}"
        if fmt == "avi":
            _write_avi(path, _clip())
        else:
            write_video(path, _clip(), fps=25)
        _ORIGINALS[fmt] = path.read_bytes()
        video = read_video(path, size=SIZE)  # the unmutated file must decode in full
        assert video.frames.shape == (T, SIZE, SIZE, 3)
    return _ORIGINALS[fmt]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    total = sum(RAN.values())
    detail = ", ".join(f"{fmt} {outcome}: {n}" for (fmt, outcome), n in sorted(RAN.items()))
    print(f"\nvideo loader fuzz: {total} cases ({detail})")


def _check(fmt: str, data: bytes, folder: Path) -> None:
    path = folder / f"mutant.{fmt}"
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputWarning)  # a partial decode is allowed to warn
        try:
            video = read_video(path, frames=T, size=SIZE)
        except InputError as e:
            message = str(e)
            assert message and "\n" not in message and path.name in message, message
            RAN[fmt, "refused"] += 1
            return
    frames = video.frames
    assert isinstance(frames, np.ndarray) and frames.dtype == np.float32
    assert frames.min() >= 0 and frames.max() <= 1
    assert frames.ndim == 4 and 1 <= frames.shape[0] <= T and frames.shape[1:] == (SIZE, SIZE, 3)
    RAN[fmt, "decoded"] += 1


_FUZZ = settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.mark.parametrize("fmt", FORMATS)
@_FUZZ
@given(cut=st.floats(0.0, 1.0, exclude_max=True))
def test_truncated_files_decode_or_raise_input_error(fmt, cut, workdir):
    data = _original(fmt, workdir)
    _check(fmt, data[: int(len(data) * cut)], workdir)


@pytest.mark.parametrize("fmt", FORMATS)
@_FUZZ
@given(flips=st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(0, 7)),
                      min_size=1, max_size=24),
       cut=st.one_of(st.none(), st.floats(0.2, 1.0)))
def test_bit_flipped_files_decode_or_raise_input_error(fmt, flips, cut, workdir):
    data = bytearray(_original(fmt, workdir))
    for where, bit in flips:
        data[int(len(data) * where)] ^= 1 << bit
    if cut is not None:
        data = data[: int(len(data) * cut)]
    _check(fmt, bytes(data), workdir)
