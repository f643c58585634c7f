"""Loading evaluation clips by the reference protocol, and finding the clips in a data folder.

Protocol (``/work/shared/reference/baselines_dev.md``): take the first T frames of the video,
scale them to float with ``/ 255`` *before* resizing, resize with OpenCV ``INTER_AREA`` so the
shorter side is S (aspect kept) and centre-crop to S x S (:func:`dyntex.video.resize_crop`).
Resizing the uint8 frames first and dividing afterwards rounds every pixel to 1/255 and moves
the scores by up to 0.17 dB, so every score the benchmark reports is computed on frames loaded
by :func:`unit_frames` / :func:`load_clip`.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dyntex.errors import InputError
from dyntex.video import IMAGE_EXTS, VIDEO_EXTS, natural_key, read_video, resize_crop

__all__ = ["ClipSource", "find_clips", "load_clip", "read_head_tail", "unit_frames"]


def unit_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 frames (T, H, W, 3) -> float32 (T, S, S, 3) in [0, 1]: ``/ 255`` first, then
    :func:`~dyntex.video.resize_crop` (INTER_AREA when shrinking) frame by frame."""
    return np.stack([resize_crop(f.astype(np.float32) / np.float32(255.0), size) for f in frames])


def load_clip(path: str | os.PathLike, frames: int, size: int) -> np.ndarray:
    """The first ``frames`` frames of a video / GIF / frame folder as float32 (T, S, S, 3) in
    [0, 1], loaded by the reference protocol (fewer frames if the source is shorter)."""
    return unit_frames(read_video(path, frames=frames).frames, size)


def read_head_tail(path: str | os.PathLike, head: int, total: int, size: int
                   ) -> tuple[np.ndarray, np.ndarray, float, int | None]:
    """Decode up to ``total`` frames: the first ``head`` exactly by the protocol, the rest cheaply.

    The first ``head`` frames are decoded at full resolution and converted with
    :func:`unit_frames`. Frames ``head .. total - 1`` (only used to search for copies, see
    :func:`dyntex.eval.metrics.memorisation`) are resized while decoding (uint8, then ``/ 255``), so a
    long or high-resolution video never sits in memory at full size; they differ from the
    protocol's values by at most half a grey level.

    Returns ``(head_frames, tail_frames, fps, frames_in_source)``; ``tail_frames`` may be empty
    and ``frames_in_source`` is the count the container reports (``None`` if it does not say).
    """
    video = read_video(path, frames=head)
    first = unit_frames(video.frames, size)
    tail = np.zeros((0, *first.shape[1:]), np.float32)
    more = len(video.frames) == head and total > head and (
        video.total_frames is None or video.total_frames > head)
    if more:
        try:
            rest = read_video(path, frames=total - head, size=size, start=head).frames
            tail = rest.astype(np.float32) / np.float32(255.0)
        except InputError:   # nothing left after `head` frames
            pass
    return first, tail, video.fps, video.total_frames


# --------------------------------------------------------------------------- finding clips


@dataclass
class ClipSource:
    """One clip of a data folder: its name, the file or frame folder to read, and notes."""

    name: str
    path: Path | None
    skip: str | None = None          # why the clip cannot be used (then ``path`` may be None)
    notes: list[str] = field(default_factory=list)

    def identity(self) -> str:
        """A digest of the source's name, size and modification time (changes when it does)."""
        if self.path is None:
            return "none"
        if self.path.is_dir():
            files = sorted((p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_EXTS),
                           key=natural_key)
        else:
            files = [self.path]
        stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
        return hashlib.sha256(json.dumps([self.path.name, stats]).encode()).hexdigest()[:16]


def _is_mask(p: Path) -> bool:
    return "mask" in p.stem.lower()


def _visible(folder: Path) -> list[Path]:
    try:
        return sorted((e for e in folder.iterdir() if not e.name.startswith(".")), key=natural_key)
    except OSError as e:
        raise InputError(f"{folder}: cannot list folder ({e.strerror or e})") from e


def _main_input(folder: Path) -> tuple[Path | None, list[str]]:
    """The clip inside a sub-folder: its largest non-mask video, else the folder of frames."""
    entries = [e for e in _visible(folder) if e.is_file()]
    videos = [e for e in entries if e.suffix.lower() in VIDEO_EXTS and not _is_mask(e)]
    if videos:
        main = max(videos, key=lambda p: p.stat().st_size)   # max keeps the first on ties
        others = [v.name for v in videos if v != main]
        return main, ([f"used {main.name}; ignored {', '.join(others)}"] if others else [])
    if any(e.suffix.lower() in IMAGE_EXTS for e in entries):
        return folder, []
    return None, []


def _safe(name: str) -> str:
    """A clip name usable as a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "clip"


def find_clips(data_dir: str | os.PathLike) -> list[ClipSource]:
    """The clips of a data folder, in natural name order.

    ``data_dir`` holds videos/GIFs (one clip each, named by file stem) and sub-folders (one clip
    each, named by the folder): a sub-folder's clip is its largest video or GIF whose name does
    not contain ``mask``, else its frame images. Other files (notes, ``.mat``) and mask videos
    are ignored. A sub-folder with no usable input is listed with a ``skip`` reason. A single
    video file or a folder of frame images is accepted as a one-clip data folder.

    Raises:
        InputError: ``data_dir`` is missing, unreadable or holds no clip at all.
    """
    root = Path(data_dir)
    if not root.exists():
        raise InputError(f"{root}: no such folder")
    if root.is_file():
        if root.suffix.lower() not in VIDEO_EXTS:
            raise InputError(f"{root}: not a folder of clips or a video file")
        return [ClipSource(_safe(root.stem), root)]
    if not os.access(root, os.R_OK | os.X_OK):
        raise InputError(f"{root}: permission denied")
    entries = _visible(root)
    files = [e for e in entries if e.is_file()]
    subdirs = [e for e in entries if e.is_dir()]
    videos = [e for e in files if e.suffix.lower() in VIDEO_EXTS and not _is_mask(e)]
    if not videos and not subdirs and any(e.suffix.lower() in IMAGE_EXTS for e in files):
        return [ClipSource(_safe(root.name), root)]          # DATA_DIR is itself a frame folder
    clips = [ClipSource(_safe(v.stem), v) for v in videos]
    for sub in subdirs:
        path, notes = _main_input(sub)
        clips.append(ClipSource(_safe(sub.name), path, None if path else
                                "no video, GIF or frame images in the folder", notes))
    if not any(c.path for c in clips):
        raise InputError(f"{root}: no clips found (expected videos, GIFs, or sub-folders holding "
                         "a video or frame images)")
    seen: dict[str, int] = {}
    for c in sorted(clips, key=lambda c: natural_key(c.name)):
        seen[c.name] = seen.get(c.name, 0) + 1
        if seen[c.name] > 1:                                    # same stem as a folder, say
            c.name = f"{c.name}_{seen[c.name]}"
    return sorted(clips, key=lambda c: natural_key(c.name))
