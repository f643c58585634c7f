"""Reading and writing video, and the one fixed mapping between pixels and model values.

Layouts
-------
- Pixel arrays are ``uint8`` numpy arrays ``(T, H, W, 3)`` (RGB): what a video holds.
- Unit arrays are ``float32`` ``(T, H, W, 3)`` in [0, 1] (``pixel / 255``): decoded and resized
  frames, metrics, ``.npy`` files.
- Model tensors are ``float32`` torch tensors ``(C, T, H, W)`` or ``(B, C, T, H, W)`` in [-1, 1]
  (``2 * unit - 1``, that is ``pixel / 127.5 - 1``: :data:`PIXEL_TO_MODEL`).

Values move between these spaces only by these fixed maps, never by per-frame or per-clip
min/max rescaling, so a dim clip stays dim and a low-contrast clip stays low-contrast.

Reading (:func:`read_video`) goes through PyAV for every video container and animated GIF, and
through Pillow for folders of frame images. Frames are converted to RGB and (when ``size`` is
given) divided by 255, resized and centre-cropped one by one as they are decoded, so a
high-resolution clip never sits in memory at full size.

Truncated or corrupt files: if decoding fails after at least one frame was decoded, the frames
decoded so far are kept and an :class:`InputWarning` says so; if nothing was decoded, an
:class:`~dyntex.errors.InputError` is raised. A stream that ends cleanly but short of the frame
count its header reports (a file cut off mid-way) is kept the same way, with the same warning.
Decoding goes packet by packet: a packet the decoder rejects (e.g. a bit flip inside a frame) is
skipped, and one :class:`InputWarning` counts the skipped packets. A stream whose codec header is
missing or corrupt raises :class:`~dyntex.errors.InputError`.

Writing clips and images lives in :mod:`dyntex.writing`; its functions are importable from
here too.
"""
from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where a function needs it: reading video needs none
    import torch

import av
import cv2
import numpy as np
from PIL import Image

from dyntex.errors import InputError, InputWarning
from dyntex.fileio import reason

IMAGE_EXTS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
"""Extensions of frame images (a folder of these is one video; a single one is not a video)."""

VIDEO_EXTS = frozenset({
    ".avi", ".mp4", ".m4v", ".mov", ".qt", ".mkv", ".webm", ".gif", ".mpg", ".mpeg", ".ts",
    ".mts", ".m2ts", ".wmv", ".asf", ".flv", ".ogv", ".3gp", ".y4m", ".dv", ".vob",
})
"""Extensions recognised as videos when scanning a folder (:func:`read_video` tries any file)."""

DEFAULT_FPS = 25.0
"""Frame rate of a frame folder, and of a video whose container states none."""

MAX_PIXELS = 7680 * 4320
"""Default largest frame (8K UHD) that :func:`read_video` will decode."""

MAX_FRAMES = 1000
"""Default number of frames :func:`read_video` keeps when ``frames`` is not given."""

MAX_CLIP_BYTES = 4 * 2**30
"""Largest decoded clip (uint8 bytes) :func:`read_video` will hold; pass ``size`` to shrink it."""


@dataclass(frozen=True)
class PixelMapping:
    """The affine map between uint8 pixels and model values: ``model = pixel / scale - shift``."""

    scale: float = 127.5
    shift: float = 1.0

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Map pixel values in [0, 255] to model values in [-1, 1] (float32)."""
        import torch

        return pixels.to(torch.float32) / self.scale - self.shift

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """Map model values back to (unrounded, unclamped) pixel values."""
        return (x + self.shift) * self.scale


PIXEL_TO_MODEL = PixelMapping()
"""The single global value mapping: [0, 255] -> [-1, 1]."""


@dataclass
class Video:
    """A decoded clip.

    Attributes:
        frames: RGB frames ``(T, H, W, 3)``: uint8 pixels as decoded, or float32 in [0, 1] when
            read with a ``size`` (divided by 255, then resized: see :func:`read_video`).
        fps: frame rate of the source (``DEFAULT_FPS`` for frame folders).
        name: file stem or folder name, for messages and output names.
        total_frames: frame count the source reports (``None`` if the container does not say).
    """

    frames: np.ndarray
    fps: float
    name: str
    total_frames: int | None


# --------------------------------------------------------------------------- value mapping


def to_model(frames: np.ndarray) -> torch.Tensor:
    """Pixel (uint8) or unit (float, [0, 1]) frames ``(T, H, W, C)`` / ``(B, T, H, W, C)`` ->
    float32 model values ``(C, T, H, W)`` / ``(B, C, T, H, W)`` in [-1, 1]."""
    import torch

    if not isinstance(frames, np.ndarray) or frames.ndim not in (4, 5) or not (
            frames.dtype == np.uint8 or np.issubdtype(frames.dtype, np.floating)):
        raise TypeError("to_model expects uint8 or float frames (T, H, W, C) or (B, T, H, W, C)")
    t = torch.from_numpy(np.ascontiguousarray(frames))
    x = PIXEL_TO_MODEL.forward(t) if frames.dtype == np.uint8 else t.to(torch.float32) * 2.0 - 1.0
    return x.movedim(-1, -4).contiguous()


def to_pixels(frames: np.ndarray) -> np.ndarray:
    """Unit frames (float, [0, 1]) -> uint8 pixels (rounded, clipped); uint8 frames unchanged."""
    if frames.dtype == np.uint8:
        return frames
    return np.clip(np.round(frames * np.float32(255.0)), 0, 255).astype(np.uint8)


def from_model(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """Model values ``(C, T, H, W)`` / ``(B, C, T, H, W)`` -> uint8 ``(T, H, W, C)`` / ``(B, T, H, W, C)``.

    Values are clamped to [-1, 1] and rounded to the nearest pixel value.
    """
    import torch

    x = torch.as_tensor(x).detach().to("cpu", torch.float32)
    if x.ndim not in (4, 5):
        raise TypeError("from_model expects (C, T, H, W) or (B, C, T, H, W)")
    pixels = PIXEL_TO_MODEL.inverse(x.clamp(-1.0, 1.0)).round().clamp(0, 255).to(torch.uint8)
    return pixels.movedim(-4, -1).contiguous().numpy()


def to_unit(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """Float32 frames in [0, 1] with channels last, the layout metrics and ``.npy`` files use.

    A uint8 array ``(T, H, W, C)`` is divided by 255. A torch tensor or float array is taken as
    model values ``(C, T, H, W)`` / ``(B, C, T, H, W)`` and mapped with ``(x + 1) / 2`` (clamped),
    which agrees exactly with ``pixel / 255`` for ``x = to_model(pixel)``.
    """
    import torch

    if isinstance(x, np.ndarray) and x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    x = torch.as_tensor(x).detach().to("cpu", torch.float32)
    if x.ndim not in (4, 5):
        raise TypeError("to_unit expects uint8 (T, H, W, C) or model values (C, T, H, W) / (B, C, T, H, W)")
    return ((x.clamp(-1.0, 1.0) + 1.0) / 2.0).movedim(-4, -1).contiguous().numpy()


# --------------------------------------------------------------------------- resizing


def resize_crop(frame: np.ndarray, size: int) -> np.ndarray:
    """Resize so the shorter side is ``size`` (aspect kept), then centre-crop to ``(size, size, C)``.

    Downscaling uses ``cv2.INTER_AREA`` (antialiased), upscaling ``cv2.INTER_CUBIC``; a frame whose
    shorter side already is ``size`` is only cropped. The crop offset is ``(extra) // 2``.
    """
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    h, w = frame.shape[:2]
    channels = frame.shape[2] if frame.ndim == 3 else None
    scale = size / min(h, w)
    if scale != 1.0:
        new_w = max(size, int(round(w * scale)))
        new_h = max(size, int(round(h * scale)))
        interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_CUBIC
        frame = cv2.resize(np.ascontiguousarray(frame), (new_w, new_h), interpolation=interp)
        if channels is not None and frame.ndim == 2:  # cv2 drops a single channel axis
            frame = frame[:, :, None]
        h, w = new_h, new_w
    top, left = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(frame[top:top + size, left:left + size])


def unit_frame(rgb: np.ndarray, size: int) -> np.ndarray:
    """One uint8 (H, W, 3) frame as every input is loaded: divided by 255 first, then resized and
    cropped to ``size`` x ``size`` (:func:`resize_crop`), float32 in [0, 1]."""
    unit = rgb.astype(np.float32)
    unit /= np.float32(255.0)
    # clipped: an enlarging (cubic) resize can overshoot; a shrinking one cannot
    return np.clip(resize_crop(unit, size), 0.0, 1.0)


# --------------------------------------------------------------------------- reading


def natural_key(path: Path | str) -> list[str | int]:
    """Sort key that orders ``frame_2`` before ``frame_10`` (case-insensitive)."""
    parts = re.split(r"(\d+)", Path(path).name.lower())
    return [int(p) if i % 2 else p for i, p in enumerate(parts)]


def _composite(rgba: np.ndarray) -> np.ndarray:
    """Composite an RGBA uint8 image over black and return RGB uint8."""
    alpha = rgba[..., 3:4]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgba[..., :3])
    rgb = (rgba[..., :3].astype(np.uint16) * alpha + 127) // 255
    return rgb.astype(np.uint8)


class _FrameSink:
    """Collects decoded RGB frames: size checks, immediate resize, consistent shapes, memory budget."""

    def __init__(self, path: Path, size: int | None, max_pixels: int):
        self.path, self.size, self.max_pixels = path, size, max_pixels
        self.frames: list[np.ndarray] = []
        self._bytes = 0

    def check_pixels(self, width: int, height: int) -> None:
        """Refuse a frame larger than ``max_pixels`` before it is decoded."""
        if width * height > self.max_pixels:
            raise InputError(f"{self.path}: frames are {width}x{height}, above the limit of "
                             f"{self.max_pixels} pixels; downscale the video first")

    def add(self, rgb: np.ndarray) -> None:
        """Append one uint8 (H, W, 3) frame; with a size, divided by 255 first, then resized and
        cropped (float32 in [0, 1]: the one input rule, see :mod:`dyntex.inputs`)."""
        if self.size is not None:
            rgb = unit_frame(rgb, self.size)
        elif self.frames and rgb.shape != self.frames[0].shape:
            first = self.frames[0].shape
            raise InputError(f"{self.path}: frame {len(self.frames)} is {rgb.shape[1]}x{rgb.shape[0]} but "
                             f"earlier frames are {first[1]}x{first[0]}; give a size to resize them all")
        self._bytes += rgb.nbytes
        if self._bytes > MAX_CLIP_BYTES:
            raise InputError(f"{self.path}: more than {MAX_CLIP_BYTES // 2**30} GiB of frames at full "
                             "resolution; give a size or fewer frames")
        self.frames.append(rgb)


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: permission denied; make it readable")
    if path.is_file() and path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty (0 bytes)")


def _read_image(path: Path, sink: _FrameSink) -> np.ndarray:
    """Decode one frame image to RGB uint8 (grayscale replicated, alpha composited over black)."""
    try:
        with Image.open(path) as img:
            sink.check_pixels(img.width, img.height)
            if img.mode.startswith("I"):  # 16/32-bit grayscale, taken as 16-bit
                gray = np.asarray(img, dtype=np.float64) / 257.0
                return np.repeat(np.clip(np.round(gray), 0, 255).astype(np.uint8)[..., None], 3, axis=2)
            if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
                return _composite(np.asarray(img.convert("RGBA")))
            return np.asarray(img.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise InputError(f"{path}: cannot decode image ({e})") from e


def _read_folder(folder: Path, start: int, limit: int, sink: _FrameSink) -> Video:
    files = sorted((p for p in folder.iterdir()
                    if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTS),
                   key=natural_key)
    if not files:
        raise InputError(f"{folder}: folder holds no frame images ({', '.join(sorted(IMAGE_EXTS))})")
    chosen = files[start:start + limit]
    if not chosen:
        raise InputError(f"{folder}: start={start} is past the last of its {len(files)} frames")
    for f in chosen:
        _check_readable(f)
        sink.add(_read_image(f, sink))
    return Video(np.stack(sink.frames), DEFAULT_FPS, folder.name, len(files))


_TEXT_DEMUXERS = frozenset({"tty", "bin", "xbin", "adf", "idf"})
"""FFmpeg demuxers that render any text file as "ANSI art" video: never a dynamic texture."""


def _frame_rgb(frame: av.VideoFrame) -> np.ndarray:
    fmt = frame.format
    if fmt.has_palette or any(c.is_alpha for c in fmt.components):
        return _composite(frame.to_ndarray(format="rgba"))
    return frame.to_ndarray(format="rgb24")


def _read_container(path: Path, start: int, limit: int, sink: _FrameSink) -> Video:
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable video ({reason(e)})") from e
    with container:
        if container.format.name in _TEXT_DEMUXERS or not container.streams.video:
            raise InputError(f"{path}: file has no video stream")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        if ctx is None:  # the demuxer found a stream but its codec header is missing or corrupt
            raise InputError(f"{path}: corrupt or unsupported video, its codec cannot be opened")
        stream.thread_type = "AUTO"
        if ctx.width and ctx.height:
            sink.check_pixels(ctx.width, ctx.height)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate and 0 < float(rate) <= 1000 else DEFAULT_FPS
        total = stream.frames or None
        decoded = skipped = 0
        first_error: BaseException | None = None
        try:
            # Packet by packet, so that one corrupt packet (a bit flip in a frame) costs that
            # frame only; demux ends with empty packets that flush the decoder.
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except (av.FFmpegError, ValueError) as e:
                    skipped += 1
                    first_error = first_error or e
                    continue
                for frame in frames:
                    decoded += 1
                    if decoded <= start:
                        continue
                    sink.check_pixels(frame.width, frame.height)
                    sink.add(_frame_rgb(frame))
                    if len(sink.frames) >= limit:
                        break
                if len(sink.frames) >= limit:
                    break
        except (av.FFmpegError, OSError, ValueError, RuntimeError) as e:
            if not sink.frames:
                raise InputError(f"{path}: corrupt or unsupported video, no frame decoded ({reason(e)})") from e
            warnings.warn(f"{path}: decoding stopped after {decoded} frames ({reason(e)}); "
                          f"keeping the {len(sink.frames)} frames decoded", InputWarning, stacklevel=3)
        else:
            if skipped and sink.frames:
                warnings.warn(f"{path}: skipped {skipped} corrupt packet(s) ({reason(first_error)}); "
                              f"keeping the {len(sink.frames)} frames decoded", InputWarning, stacklevel=3)
            elif sink.frames and len(sink.frames) < limit and total is not None and decoded < total:
                warnings.warn(f"{path}: header says {total} frames but only {decoded} decoded; "
                              "the file may be truncated", InputWarning, stacklevel=3)
    if not sink.frames:
        if first_error is not None and not decoded:
            raise InputError(f"{path}: corrupt or unsupported video, no frame decoded ({reason(first_error)})")
        if total is not None and decoded < min(total, start + 1):
            raise InputError(f"{path}: header says {total} frames but {decoded or 'none'} could be "
                             "decoded; the file may be truncated")
        where = f"after skipping start={start}" if start else "at all"
        raise InputError(f"{path}: no frames could be decoded {where} ({decoded} in file)")
    return Video(np.stack(sink.frames), fps, path.stem, total)


def read_video(path: str | os.PathLike, frames: int | None = None, size: int | None = None,
               start: int = 0, max_pixels: int = MAX_PIXELS, max_frames: int = MAX_FRAMES) -> Video:
    """Decode a video file, animated GIF or folder of frame images into RGB frames.

    Args:
        path: a video file (anything PyAV decodes), a GIF, or a folder of frame images
            (png/jpg/bmp/tif, natural name order, ``DEFAULT_FPS``). A single image is refused.
        frames: keep at most this many frames; ``None`` keeps up to ``max_frames``.
        size: if given, each frame is divided by 255, then resized (shorter side = ``size``)
            and centre-cropped to ``size x size`` as soon as it is decoded (see
            :func:`resize_crop`): float32 frames in [0, 1]. Without it, uint8 frames as decoded.
        start: number of leading frames to skip.
        max_pixels: refuse frames with more pixels than this (checked from the stream header
            before decoding when the container reports it).
        max_frames: the frame cap used when ``frames`` is ``None``.

    Returns:
        A :class:`Video`; ``frames`` may be shorter than asked when the source is shorter.

    Raises:
        InputError: missing, unreadable, empty, undecodable, truncated-before-any-frame, zero
            frames, a single image, or (without ``size``) frames of differing sizes.
    """
    path = Path(path)
    if start < 0 or (frames is not None and frames < 1) or (size is not None and size < 1):
        raise InputError(f"{path}: frames and size must be positive and start non-negative "
                         f"(got frames={frames}, size={size}, start={start})")
    _check_readable(path)
    sink = _FrameSink(path, size, max_pixels)
    limit = frames if frames is not None else max_frames
    if path.is_dir():
        return _read_folder(path, start, limit, sink)
    if path.suffix.lower() in IMAGE_EXTS:
        raise InputError(f"{path}: a single image is not a video; put the frames in a folder and pass the folder")
    return _read_container(path, start, limit, sink)


# The writers, under the names this module has always offered them.
from dyntex.writing import (OUTPUT_FORMATS, contact_sheet, write_frames, write_npy,  # noqa: E402,F401
                            write_outputs, write_png, write_video)
