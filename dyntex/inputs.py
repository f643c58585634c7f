"""The one input rule: which clips a path holds (:func:`find_clips`) and how they are loaded
(:func:`load_inputs`), for ``dyntex train`` and the benchmark alike.

A path is one of:

* a video file or animated GIF: one clip;
* a folder of frame images (and no videos): one clip;
* a folder of clips: each video or GIF in it is a clip (named by its file stem), and each
  sub-folder is a clip (named by the folder): its largest video or GIF, else its frame images.

Videos whose name contains ``mask`` (an inpainting mask beside its input, e.g.
``boats/boats_mask.mp4``) are never clips: they are skipped and said so, as are further videos
of a sub-folder and frame images lying beside videos. Other files (``.mat``, notes) are ignored.

Loading is :func:`dyntex.video.read_video` with a size: every decoded frame is divided by 255,
then resized and centre-cropped (float32 in [0, 1]), the reference protocol of the benchmark.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError, InputError, InputWarning
from .video import DEFAULT_FPS, IMAGE_EXTS, MAX_PIXELS, VIDEO_EXTS, Video, natural_key, read_video

__all__ = ["ClipSource", "default_cap", "find_clips", "fps_of", "load_inputs"]


@dataclass
class ClipSource:
    """One clip under a path: its name, the file or frame folder to read, and notes about what
    was left out around it. ``skip`` says why the entry at ``path`` is not used (``path`` may
    then be None)."""

    name: str
    path: Path | None
    skip: str | None = None
    notes: list[str] = field(default_factory=list)

    def identity(self) -> str:
        """A digest of the source's name and its files' names and contents: the same clip copied
        elsewhere (new path, new modification times) keeps it; any change to a byte changes it."""
        if self.path is None:
            return "none"
        if self.path.is_dir():
            files = sorted((p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_EXTS),
                           key=natural_key)
        else:
            files = [self.path]
        digest = hashlib.sha256(self.path.name.encode())
        for p in files:
            digest.update(f"\0{p.name}\0{p.stat().st_size}\0".encode())
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
        return digest.hexdigest()[:16]


MASK_REASON = "a mask video (its name contains 'mask')"


def is_mask(path: Path) -> bool:
    """A mask video (``mask`` in its name): never a clip."""
    return "mask" in path.stem.lower()


def _visible(folder: Path) -> list[Path]:
    try:
        return sorted((e for e in folder.iterdir() if not e.name.startswith(".")), key=natural_key)
    except OSError as e:
        raise InputError(f"{folder}: cannot list folder ({e.strerror or e})") from e


def _kinds(entries: list[Path]) -> tuple[list[Path], list[Path], list[Path]]:
    """(videos that are not masks, mask videos, frame images) among the files of ``entries``."""
    files = [e for e in entries if e.is_file()]
    videos = [e for e in files if e.suffix.lower() in VIDEO_EXTS]
    images = [e for e in files if e.suffix.lower() in IMAGE_EXTS]
    return [v for v in videos if not is_mask(v)], [v for v in videos if is_mask(v)], images


def _sub_folder(folder: Path, name: str) -> ClipSource:
    """The clip of a sub-folder: its largest non-mask video, else its frame images."""
    videos, masks, images = _kinds(_visible(folder))
    notes = [f"skipped {m}: {MASK_REASON}" for m in masks]
    if videos:
        main = max(videos, key=lambda p: p.stat().st_size)   # max keeps the first on ties
        others = [v.name for v in videos if v != main]
        if others:
            notes.append(f"{folder}: used {main.name}; ignored {', '.join(others)}")
        if images:
            notes.append(f"{folder}: ignored {len(images)} frame image(s) beside the video")
        return ClipSource(name, main, None, notes)
    if images:
        return ClipSource(name, folder, None, notes)
    return ClipSource(name, folder, "no video, GIF or frame images in the folder", notes)


def _safe(name: str) -> str:
    """A clip name usable as a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "clip"


def find_clips(path: str | os.PathLike) -> list[ClipSource]:
    """The clips under ``path`` by the rule of the module docstring, in natural name order.

    Entries that are not clips come back with a ``skip`` reason (a mask video at the top, frame
    images beside videos, a sub-folder without video or frames), and what was left out of a
    usable clip in its ``notes``; the caller says both. Names are made unique.

    Raises:
        InputError: ``path`` does not exist or cannot be listed.
    """
    root = Path(path)
    if not root.exists():
        raise InputError(f"{root}: no such file or folder")
    if root.is_file():
        return [ClipSource(_safe(root.stem), root)]
    if not os.access(root, os.R_OK | os.X_OK):
        raise InputError(f"{root}: permission denied; make it readable")
    entries = _visible(root)
    videos, masks, images = _kinds(entries)
    subdirs = [e for e in entries if e.is_dir()]
    if images and not videos and not masks and not subdirs:
        return [ClipSource(_safe(root.name), root)]            # the path is a frame folder
    clips = [ClipSource(_safe(v.stem), v) for v in videos]
    clips += [ClipSource(_safe(m.stem), m, MASK_REASON) for m in masks]
    if images:
        clips.append(ClipSource(_safe(root.name), root,
                                f"{len(images)} frame image(s) beside other clips are ignored "
                                "(put frame images in a folder of their own)"))
    clips += [_sub_folder(sub, _safe(sub.name)) for sub in subdirs]
    clips.sort(key=lambda c: natural_key(c.name))
    seen: dict[str, int] = {}
    for c in clips:                                             # same stem as a folder, say
        seen[c.name] = seen.get(c.name, 0) + 1
        if seen[c.name] > 1:
            c.name = f"{c.name}_{seen[c.name]}"
    return clips


def default_cap(frames: int) -> int:
    """Frames decoded per video when no ``max_frames`` is given: ``max(4 * frames, 256)``, enough
    for random windows to range over most clips while keeping the decoded data small."""
    return max(4 * frames, 256)


def load_inputs(path: str | os.PathLike, frames: int, size: int | None, *, start: int = 0,
                max_frames: int | None = None, max_pixels: int = MAX_PIXELS) -> list[Video]:
    """Decode every usable clip under ``path`` (:func:`find_clips`) for training.

    Args:
        path: a video file, a GIF, a folder of frame images, or a folder of clips.
        frames: the window length T the videos will be cut into (sets the default cap).
        size: frame side S: each frame is divided by 255, resized (shorter side S) and
            centre-cropped (float32 in [0, 1]); ``None`` keeps the native uint8 frames.
        start: leading frames skipped in every video.
        max_frames: frames decoded per video; ``None`` means :func:`default_cap` ``(frames)``.
        max_pixels: largest frame accepted (see :func:`dyntex.video.read_video`).

    Entries skipped or left out are each said by an :class:`~dyntex.errors.InputWarning`, as
    long as at least one clip is usable.

    Raises:
        InputError: ``path`` is unusable, or a folder in which no clip could be decoded.
    """
    path = Path(path)
    if frames < 1:
        raise ConfigError(f"frames must be at least 1, got {frames}")
    cap = default_cap(frames) if max_frames is None else max_frames

    def read(p: Path) -> Video:
        return read_video(p, frames=cap, size=size, start=start, max_pixels=max_pixels)

    if not path.is_dir():
        return [read(path)]             # a single input's own error is the error
    sources = find_clips(path)
    failed, videos = [], []
    for src in sources:
        if src.skip:
            failed.append(f"skipped {src.path or src.name}: {src.skip}")
            continue
        try:
            videos.append(read(src.path))
        except InputError as e:
            failed.append(f"skipped {e}")
    notes = [n for s in sources for n in s.notes]
    if not videos:
        detail = ""
        if failed:
            more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
            detail = f": {failed[0].removeprefix('skipped ')}{more}"
        raise InputError(f"{path}: no usable video, GIF or frame folder found{detail}")
    for note in notes + failed:
        warnings.warn(note, InputWarning, stacklevel=2)
    return videos


def fps_of(videos: list[Video]) -> float:
    """Frame rate for outputs made from ``videos``: the most common source rate (first on ties)."""
    if not videos:
        return DEFAULT_FPS
    return Counter(v.fps for v in videos).most_common(1)[0][0]
