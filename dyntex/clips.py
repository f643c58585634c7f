"""Turning inputs into T-frame training windows.

:func:`load_inputs` accepts one video file, one GIF, one folder of frame images, or a folder
holding several of those (videos, GIFs and frame sub-folders, searched recursively) and decodes
every usable one. Entries that cannot be decoded are skipped with an
:class:`~dyntex.video.InputWarning` each, as long as at least one input is usable.

Frame cap: each video is decoded up to ``max_frames`` frames; by default
``max(4 * frames, 256)`` (:func:`default_cap`), enough for random windows to range over most
clips (the DynTex clips here have 250-500 frames) while keeping the decoded data small at
training sizes (256 frames of 64x64 RGB are 3 MiB).

:class:`WindowSampler` then cuts T-frame windows out of the decoded videos and hands them to the
model as ``(B, 3, T, S, S)`` float tensors in [-1, 1].
"""
from __future__ import annotations

import os
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from dyntex.errors import ConfigError, InputError
from dyntex.video import (DEFAULT_FPS, IMAGE_EXTS, MAX_PIXELS, PIXEL_TO_MODEL, VIDEO_EXTS, InputWarning, Video,
                          natural_key, read_video, to_model)

MODES = ("first", "random")
"""Window modes of :class:`WindowSampler`."""


def default_cap(frames: int) -> int:
    """Frames decoded per video when no ``max_frames`` is given: ``max(4 * frames, 256)``."""
    return max(4 * frames, 256)


def _sources(folder: Path, skipped: list[str]) -> list[Path]:
    """The inputs inside ``folder``: the folder itself if it is a frame folder, else its videos
    and (recursively) its sub-folders. Notes about ignored entries go to ``skipped``."""
    entries = sorted((e for e in folder.iterdir() if not e.name.startswith(".")), key=natural_key)
    images = [e for e in entries if e.is_file() and e.suffix.lower() in IMAGE_EXTS]
    videos = [e for e in entries if e.is_file() and e.suffix.lower() in VIDEO_EXTS]
    if images and not videos:
        return [folder]
    if images:
        skipped.append(f"{folder}: ignored {len(images)} image(s) beside the videos "
                       "(put frame images in a folder of their own)")
    found = list(videos)
    for sub in (e for e in entries if e.is_dir()):
        found.extend(_sources(sub, skipped))
    return found


def load_inputs(path: str | os.PathLike, frames: int, size: int | None, *, start: int = 0,
                max_frames: int | None = None, max_pixels: int = MAX_PIXELS) -> list[Video]:
    """Decode every usable input under ``path``.

    Args:
        path: a video file, a GIF, a folder of frame images, or a folder holding several of
            those (frame sub-folders and nested folders included).
        frames: the window length T the videos will be cut into (sets the default cap).
        size: frame side S: each frame is resized (shorter side S) and centre-cropped.
            ``None`` keeps the native size (then all inputs must share it to be batched).
        start: leading frames skipped in every video.
        max_frames: frames decoded per video; ``None`` means :func:`default_cap` ``(frames)``.
        max_pixels: largest frame accepted (see :func:`dyntex.video.read_video`).

    Returns:
        The decoded videos, in natural name order.

    Raises:
        InputError: ``path`` is unusable, or a folder in which no input could be decoded.
    """
    path = Path(path)
    if frames < 1:
        raise ConfigError(f"frames must be at least 1, got {frames}")
    cap = default_cap(frames) if max_frames is None else max_frames

    def read(p: Path) -> Video:
        return read_video(p, frames=cap, size=size, start=start, max_pixels=max_pixels)

    if not path.is_dir():
        return [read(path)]
    skipped: list[str] = []
    try:
        sources = _sources(path, skipped)
    except OSError as e:
        raise InputError(f"{path}: cannot list folder ({e.strerror or e})") from e
    videos = []
    for src in sources:
        try:
            videos.append(read(src))
        except InputError as e:
            skipped.append(str(e))
    if not videos:
        detail = ""
        if skipped:
            more = f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""
            detail = f": {skipped[0]}{more}"
        raise InputError(f"{path}: no usable video, GIF or frame folder found{detail}")
    for note in skipped:
        warnings.warn(f"skipped {note}", InputWarning, stacklevel=2)
    return videos


def fps_of(videos: list[Video]) -> float:
    """Frame rate for outputs made from ``videos``: the most common source rate (first on ties)."""
    if not videos:
        return DEFAULT_FPS
    return Counter(v.fps for v in videos).most_common(1)[0][0]


class WindowSampler:
    """Cuts T-frame windows out of decoded videos.

    Modes:
        ``"first"``: the first T frames of each video (deterministic).
        ``"random"``: each draw picks a video uniformly at random, then a random T-window of it,
        using the ``torch.Generator`` given at construction (reproducible for a given seed).

    Raises (at construction):
        ConfigError: unknown mode, T < 1, or ``"random"`` without a generator.
        InputError: no videos, videos of different frame sizes, or a video shorter than T.
    """

    def __init__(self, videos: list[Video], frames: int, mode: str = "first",
                 generator: torch.Generator | None = None):
        if mode not in MODES:
            raise ConfigError(f"unknown window mode {mode!r}; choose one of {list(MODES)}")
        if frames < 1:
            raise ConfigError(f"frames must be at least 1, got {frames}")
        if mode == "random" and generator is None:
            raise ConfigError("window mode 'random' needs a torch.Generator (seeded from the config)")
        if not videos:
            raise InputError("no videos to sample training windows from")
        shape = videos[0].frames.shape[1:]
        for v in videos[1:]:
            if v.frames.shape[1:] != shape:
                raise InputError(f"videos differ in frame size ({videos[0].name}: {shape[1]}x{shape[0]}, "
                                 f"{v.name}: {v.frames.shape[2]}x{v.frames.shape[1]}); give a size "
                                 "(e.g. --size 64) to resize them all")
        for v in videos:
            if len(v.frames) == 1 and frames > 1:
                raise InputError(f"{v.name} is a single frame, not a video; training windows need "
                                 f"{frames} frames")
            if len(v.frames) < frames:
                raise InputError(f"{v.name} has only {len(v.frames)} frames but windows of {frames} "
                                 f"were asked; use --frames {len(v.frames)} or a longer clip")
        self.videos, self.frames, self.mode, self.generator = videos, frames, mode, generator

    def _draw(self) -> np.ndarray:
        v = self.videos[int(torch.randint(len(self.videos), (1,), generator=self.generator))]
        start = int(torch.randint(len(v.frames) - self.frames + 1, (1,), generator=self.generator))
        return v.frames[start:start + self.frames]

    def mean_frame(self) -> torch.Tensor:
        """Mean (3, H, W) of the frames training draws from, in model space: all frames in
        ``"random"`` mode, the first T of each video in ``"first"`` mode."""
        span = self.frames if self.mode == "first" else None
        sums = sum(v.frames[:span].sum(0, dtype=np.float64) for v in self.videos)
        count = sum(len(v.frames[:span]) for v in self.videos)
        return PIXEL_TO_MODEL.forward(torch.from_numpy(sums / count)).permute(2, 0, 1)

    def observed(self, batch: int | None = None) -> torch.Tensor:
        """A batch of windows as float32 ``(B, 3, T, H, W)`` in [-1, 1].

        ``batch=None`` gives one window per video. In ``"first"`` mode a larger ``batch`` cycles
        through the videos; in ``"random"`` mode it is the number of random draws.
        """
        n = len(self.videos) if batch is None else batch
        if n < 1:
            raise ConfigError(f"batch must be at least 1, got {n}")
        if self.mode == "first":
            windows = [self.videos[i % len(self.videos)].frames[:self.frames] for i in range(n)]
        else:
            windows = [self._draw() for _ in range(n)]
        return to_model(np.stack(windows))
