"""Observed data as training windows: :class:`WindowSampler` cuts T-frame windows out of decoded
videos (:func:`dyntex.inputs.load_inputs`), :class:`TensorClips` serves clips already in model
space. Both hand the trainer ``(B, 3, T, S, S)`` float tensors in [-1, 1] and the mean frame.

Random draws use the ``torch.Generator`` passed to :meth:`observed` (the trainer's data stream,
which its checkpoints keep), so building a sampler only validates the data.
"""
from __future__ import annotations

import numpy as np
import torch

from dyntex.errors import ConfigError, InputError
from dyntex.video import Video, to_model

MODES = ("first", "random")
"""Window modes of :class:`WindowSampler`."""


class WindowSampler:
    """Cuts T-frame windows out of decoded videos.

    Modes:
        ``"first"``: the first T frames of each video (deterministic).
        ``"random"``: each draw picks a video uniformly at random, then a random T-window of it,
        from the ``torch.Generator`` given to :meth:`observed` (or at construction).

    Raises (at construction):
        ConfigError: unknown mode or T < 1.
        InputError: no videos, videos of different frame sizes, or a video shorter than T.
    """

    def __init__(self, videos: list[Video], frames: int, mode: str = "first",
                 generator: torch.Generator | None = None):
        if mode not in MODES:
            raise ConfigError(f"unknown window mode {mode!r}; choose one of {list(MODES)}")
        if frames < 1:
            raise ConfigError(f"frames must be at least 1, got {frames}")
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

    def _draw(self, generator: torch.Generator) -> np.ndarray:
        v = self.videos[int(torch.randint(len(self.videos), (1,), generator=generator))]
        start = int(torch.randint(len(v.frames) - self.frames + 1, (1,), generator=generator))
        return v.frames[start:start + self.frames]

    def mean_frame(self) -> torch.Tensor:
        """Mean (3, H, W) of the frames training draws from, in model space: all frames in
        ``"random"`` mode, the first T of each video in ``"first"`` mode."""
        span = self.frames if self.mode == "first" else None
        sums = sum(v.frames[:span].sum(0, dtype=np.float64) for v in self.videos)
        count = sum(len(v.frames[:span]) for v in self.videos)
        mean = sums / count
        unit = mean / 255.0 if self.videos[0].frames.dtype == np.uint8 else mean
        return torch.from_numpy(2.0 * unit - 1.0).float().permute(2, 0, 1).contiguous()

    def first_window(self) -> torch.Tensor:
        """The first T frames of the first video, (3, T, H, W) in model space (no random draw)."""
        return to_model(self.videos[0].frames[: self.frames])

    def observed(self, batch: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
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
            generator = generator or self.generator
            if generator is None:
                raise ConfigError("random windows need a torch.Generator (seeded from the config)")
            windows = [self._draw(generator) for _ in range(n)]
        return to_model(np.stack(windows))


class TensorClips:
    """Observed clips already in model space, (N, C, T, S, S).

    ``observed(None)`` gives all of them; ``observed(b)`` draws ``b`` at random.
    """

    def __init__(self, clips: torch.Tensor, generator: torch.Generator | None = None,
                 config=None):
        if config is not None:
            want = (3, config.frames, config.size, config.size)
            if clips.ndim != 5 or tuple(clips.shape[1:]) != want:
                raise ConfigError(f"observed clips must be (N, {', '.join(map(str, want))}) for "
                                  f"this config; got {tuple(clips.shape)}")
        self.clips, self.generator = clips, generator

    def observed(self, batch: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        if batch is None:
            return self.clips
        index = torch.randint(len(self.clips), (batch,), generator=generator or self.generator)
        return self.clips[index]

    def first_window(self) -> torch.Tensor:
        """The first clip, (C, T, S, S)."""
        return self.clips[0]

    def mean_frame(self) -> torch.Tensor:
        """Mean (C, H, W) over all frames of all observed clips (model space)."""
        return self.clips.float().mean(dim=(0, 2))


class ClassWindows:
    """Training windows of several textures, one class each, for a class-conditional model:
    ``samplers[c]`` (a :class:`WindowSampler` or :class:`TensorClips`) gives the windows of
    class ``c``. :meth:`observed` returns ``(clips, labels)``: every class's windows (as its
    sampler gives them) and their class indices."""

    def __init__(self, samplers: list[WindowSampler | TensorClips]):
        if len(samplers) < 2:
            raise InputError(f"a class-conditional model needs at least 2 classes (textures), "
                             f"got {len(samplers)}")
        shapes = {tuple(s.first_window().shape) for s in samplers}
        if len(shapes) > 1:
            raise InputError("the classes' videos differ in frame size; give a size (e.g. "
                             "--size 64) to resize them all")
        self.samplers = samplers

    def observed(self, batch: int | None = None, generator: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        clips = [s.observed(batch, generator) for s in self.samplers]
        labels = torch.cat([torch.full((len(c),), i, dtype=torch.long) for i, c in enumerate(clips)])
        return torch.cat(clips), labels

    def mean_frame(self) -> torch.Tensor:
        """(classes, 3, H, W): each class's mean frame."""
        return torch.stack([s.mean_frame() for s in self.samplers])

    def first_window(self) -> torch.Tensor:
        return self.samplers[0].first_window()
