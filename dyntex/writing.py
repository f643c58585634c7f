"""Writing clips and images (:func:`write_video`, :func:`write_frames`, :func:`write_npy`,
:func:`write_png`, :func:`write_outputs`; :func:`contact_sheet` tiles clips into one image).

Every write goes to a hidden temporary name in the destination folder and is renamed into place
with ``os.replace``, so a destination is either the old file or the complete new one. H.264 needs even
dimensions: an odd width or height is padded by one replicated edge pixel, so reading such an
``.mp4`` back gives the padded size (e.g. 33x17 -> 34x18). PNG frames and ``.npy`` are lossless.
"""
from __future__ import annotations

import os
import re
from collections.abc import Collection, Sequence
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image

from dyntex.errors import ConfigError, OutputError
from dyntex.fileio import atomic_path, reason

_WRITE_ERRORS = (OSError, av.FFmpegError)  # what a failed write raises: one-line OutputErrors

OUTPUT_FORMATS = ("mp4", "gif", "png", "npy")
"""Formats :func:`write_outputs` can write, in the order it writes them."""


# --------------------------------------------------------------------------- writing


def _check_frames(frames: np.ndarray) -> None:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 \
            or frames.shape[-1] != 3 or 0 in frames.shape:
        shape = getattr(frames, "shape", None)
        raise ValueError(f"expected non-empty uint8 frames (T, H, W, 3), got {type(frames).__name__} {shape}")


def _rate(fps: float) -> Fraction:
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return Fraction(fps).limit_denominator(1001)


def _write_mp4(tmp: Path, frames: np.ndarray, fps: float) -> None:
    _, h, w, _ = frames.shape
    if h % 2 or w % 2:
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    with av.open(str(tmp), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=_rate(fps))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "medium"}
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())


def _gif_palette(frames: np.ndarray) -> Image.Image:
    """One 256-colour palette for the whole clip (no palette flicker), from up to 16 frames."""
    picks = frames[np.linspace(0, len(frames) - 1, min(16, len(frames))).round().astype(int)]
    return Image.fromarray(np.ascontiguousarray(np.concatenate(list(picks), axis=0))).quantize(256)


def _write_gif(tmp: Path, frames: np.ndarray, fps: float) -> None:
    palette_img = _gif_palette(frames)
    rgb = np.array(palette_img.getpalette(), dtype=np.uint8).reshape(-1, 3)
    argb = np.zeros((256, 4), dtype=np.uint8)
    argb[:, 0] = 255
    argb[:len(rgb), 1:] = rgb
    with av.open(str(tmp), "w", format="gif", options={"loop": "0"}) as out:
        stream = out.add_stream("gif", rate=_rate(fps))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "pal8"
        for i, frame_rgb in enumerate(frames):
            index = Image.fromarray(frame_rgb).quantize(palette=palette_img, dither=Image.Dither.NONE)
            frame = av.VideoFrame.from_ndarray((np.asarray(index), argb), format="pal8")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float) -> Path:
    """Write uint8 ``(T, H, W, 3)`` frames as ``.mp4`` (H.264 yuv420p, crf 18) or ``.gif`` (loops forever).

    Odd mp4 dimensions are padded by one edge-replicated pixel. GIF frames share one global
    256-colour palette and last ``1000 / fps`` ms (GIF stores hundredths of a second).

    Raises:
        OutputError: the destination cannot be written, or the extension is not .mp4/.gif.
    """
    path = Path(path)
    _check_frames(frames)
    writers = {".mp4": _write_mp4, ".gif": _write_gif}
    writer = writers.get(path.suffix.lower())
    if writer is None:
        raise OutputError(f"cannot write {path}: video extension must be .mp4 or .gif")
    with atomic_path(path, _WRITE_ERRORS) as tmp:
        writer(tmp, frames, fps)
    return path


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write one uint8 ``(H, W, 3)`` or ``(H, W)`` image as PNG, atomically."""
    path = Path(path)
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"expected a uint8 (H, W, 3) or (H, W) image, got {image.dtype} {image.shape}")
    with atomic_path(path, _WRITE_ERRORS) as tmp:
        Image.fromarray(np.ascontiguousarray(image)).save(tmp, format="PNG")
    return path


def write_frames(folder: str | os.PathLike, frames: np.ndarray) -> Path:
    """Write frames as ``frame_0000.png`` ... into ``folder`` (created if needed).

    Each file is written atomically; numbered ``frame_*.png`` files left from an earlier, longer
    clip are removed so the folder holds exactly this clip.
    """
    folder = Path(folder)
    _check_frames(frames)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"cannot write frames to {folder}: it is a file, not a folder")
    digits = max(4, len(str(len(frames) - 1)))
    names = {f"frame_{i:0{digits}d}.png" for i in range(len(frames))}
    for i, frame in enumerate(frames):
        write_png(folder / f"frame_{i:0{digits}d}.png", frame)
    try:
        for stale in folder.glob("frame_*.png"):
            if re.fullmatch(r"frame_\d+\.png", stale.name) and stale.name not in names:
                stale.unlink()
    except OSError as e:
        raise OutputError(f"cannot clean old frames in {folder}: {reason(e)}") from e
    return folder


def write_npy(path: str | os.PathLike, frames: np.ndarray) -> Path:
    """Save uint8 frames as float32 ``(T, H, W, 3)`` in [0, 1] (``pixel / 255``), atomically."""
    path = Path(path)
    _check_frames(frames)
    with atomic_path(path, _WRITE_ERRORS) as tmp, open(tmp, "wb") as f:
        np.save(f, frames.astype(np.float32) / np.float32(255.0))
    return path


def write_outputs(out_dir: str | os.PathLike, stem: str, frames: np.ndarray, fps: float,
                  formats: Collection[str] = OUTPUT_FORMATS) -> list[Path]:
    """Write any subset of ``{"mp4", "gif", "png", "npy"}`` for one clip.

    Produces ``out_dir/stem.mp4``, ``out_dir/stem.gif``, the frame folder ``out_dir/stem/`` and
    ``out_dir/stem.npy``; returns the written paths in that order.

    Raises:
        ConfigError: an unknown format name.
        OutputError: a destination cannot be written.
    """
    unknown = set(formats) - set(OUTPUT_FORMATS)
    if unknown:
        raise ConfigError(f"unknown output format(s) {sorted(unknown)}; choose from {list(OUTPUT_FORMATS)}")
    out_dir = Path(out_dir)
    written = []
    for fmt in OUTPUT_FORMATS:
        if fmt not in formats:
            continue
        if fmt in ("mp4", "gif"):
            written.append(write_video(out_dir / f"{stem}.{fmt}", frames, fps))
        elif fmt == "png":
            written.append(write_frames(out_dir / stem, frames))
        else:
            written.append(write_npy(out_dir / f"{stem}.npy", frames))
    return written


# --------------------------------------------------------------------------- contact sheets


_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _fit_height(frame: np.ndarray, height: int) -> np.ndarray:
    h, w = frame.shape[:2]
    if h == height:
        return frame
    interp = cv2.INTER_AREA if height < h else cv2.INTER_CUBIC
    return cv2.resize(frame, (max(1, int(round(w * height / h))), height), interpolation=interp)


def contact_sheet(rows: list[np.ndarray], n_cols: int = 8, labels: Sequence[str] | None = None,
                  margin: int = 2) -> np.ndarray:
    """Tile clips into one image: one row per clip, ``n_cols`` frames evenly spaced in time.

    Rows are stacked in the given order (e.g. observed above synthesized) on a white background
    with ``margin`` pixels between tiles. Rows of another frame height are scaled to the first
    row's height. Optional ``labels`` are drawn in a column at the left.

    Returns:
        uint8 ``(H, W, 3)`` image.
    """
    if not rows:
        raise ValueError("contact_sheet needs at least one row")
    if labels is not None and len(labels) != len(rows):
        raise ValueError(f"got {len(labels)} labels for {len(rows)} rows")
    cell_h = rows[0].shape[1]
    tiled = []
    for clip in rows:
        _check_frames(clip)
        picks = np.linspace(0, len(clip) - 1, min(n_cols, len(clip))).round().astype(int)
        tiled.append([_fit_height(clip[i], cell_h) for i in picks])
    scale = max(0.3, min(1.0, cell_h / 120))
    label_w = 0
    if labels:
        label_w = max(cv2.getTextSize(str(t), _FONT, scale, 1)[0][0] for t in labels) + 2 * margin
    width = label_w + max(sum(f.shape[1] + margin for f in r) for r in tiled) + margin
    height = len(rows) * (cell_h + margin) + margin
    sheet = np.full((height, width, 3), 255, dtype=np.uint8)
    for r, tiles in enumerate(tiled):
        y = margin + r * (cell_h + margin)
        x = label_w + margin
        for tile in tiles:
            sheet[y:y + cell_h, x:x + tile.shape[1]] = tile
            x += tile.shape[1] + margin
        if labels:
            (_, text_h), _ = cv2.getTextSize(str(labels[r]), _FONT, scale, 1)
            cv2.putText(sheet, str(labels[r]), (margin, y + (cell_h + text_h) // 2), _FONT, scale,
                        (0, 0, 0), 1, cv2.LINE_AA)
    return sheet


def side_by_side(clips: Sequence[np.ndarray], labels: Sequence[str], gap: int = 2) -> np.ndarray:
    """Clips (T, S, S, 3) uint8 next to each other, each labelled in a white band at the top.

    Returns uint8 (T, band + S, n S + (n - 1) gap, 3) with ``band = max(12, S // 5)``; the panels
    are separated by ``gap`` white columns.
    """
    T, S = clips[0].shape[0], clips[0].shape[1]
    band = max(12, S // 5)
    n = len(clips)
    out = np.full((T, band + S, n * S + (n - 1) * gap, 3), 255, np.uint8)
    scale = band / 32.0
    for i, (clip, label) in enumerate(zip(clips, labels)):
        x = i * (S + gap)
        out[:, band:, x:x + S] = clip[:T]
        text = str(label)
        # Shrink the text until it fits its panel.
        s = scale
        while s > 0.2 and cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, s, 1)[0][0] > S - 2:
            s *= 0.9
        (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, s, 1)
        header = out[0, :band, x:x + S].copy()
        cv2.putText(header, text, (max(1, (S - w) // 2), (band + h) // 2), cv2.FONT_HERSHEY_SIMPLEX,
                    s, (0, 0, 0), 1, cv2.LINE_AA)
        out[:, :band, x:x + S] = header
    return out
