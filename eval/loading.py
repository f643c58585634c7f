"""Loading evaluation clips: the benchmark reads its clips by the one input rule of training
(:mod:`dyntex.inputs`; every frame divided by 255, then resized with OpenCV ``INTER_AREA`` so the
shorter side is S and centre-cropped to S x S), which is the reference protocol
(``baselines_dev.md`` in the shared data). Dividing before resizing matters: resizing the uint8
frames first rounds every pixel to 1/255 and moves the scores by up to 0.17 dB.
"""
from __future__ import annotations

import os

import numpy as np

from dyntex.video import read_video

__all__ = ["load_clip", "read_head_tail"]


def load_clip(path: str | os.PathLike, frames: int, size: int) -> np.ndarray:
    """The first ``frames`` frames of a video / GIF / frame folder as float32 (T, S, S, 3) in
    [0, 1] (fewer frames if the source is shorter)."""
    return read_video(path, frames=frames, size=size).frames


def read_head_tail(path: str | os.PathLike, head: int, total: int, size: int
                   ) -> tuple[np.ndarray, np.ndarray, float, int | None]:
    """Decode up to ``total`` frames (at least ``head``), split into the first ``head`` and the
    rest (only used to search for copies, see :func:`dyntex.eval.metrics.memorisation`).

    Returns ``(head_frames, tail_frames, fps, frames_in_source)``; ``tail_frames`` may be empty
    and ``frames_in_source`` is the count the container reports (``None`` if it does not say).
    """
    video = read_video(path, frames=max(head, total), size=size)
    return video.frames[:head], video.frames[head:], video.fps, video.total_frames
