"""Recovery: learn from a clip with missing pixels or frames and fill them in.

The missing values are never treated as data. The observed clip is kept as a *completed* clip;
every iteration, before the cooperative update uses it, the generator explains the known pixels
alone (latent inference and a regression step on them, as alternating back-propagation learns
from incomplete images: Han, Lu, Zhu, Wu, AAAI 2017) and renders the missing ones, which are then
revised by descriptor Langevin dynamics with the known pixels clamped (as in STGConvNet's recovery
experiments: Xie, Zhu, Wu, CVPR 2017) (:class:`MaskedClip`). A trained run fills a new masked
clip the same way, without training (:func:`fill`).

Masks are boolean ``(T, S, S)`` arrays, True = missing, at the training resolution: read from a
file (:func:`load_mask`) or drawn (:func:`occlusion_mask`: ``pepper:P``, ``block:B``,
``frames:P``). The first guess at the missing pixels, and the simplest baseline, is temporal
linear interpolation per pixel (:func:`interpolate_missing`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .errors import ConfigError, InputError
from .langevin import infer_latent
from .video import IMAGE_EXTS, read_video, resize_crop, to_model

OCCLUSIONS = ("pepper", "block", "frames")
ARRAY_EXTS = (".npy", ".mat")


# --------------------------------------------------------------------------- masks


def parse_occlusion(spec: str) -> tuple[str, float]:
    """``"pepper:0.5"`` -> ("pepper", 0.5); checks the kind and its value's range."""
    kind, _, value = spec.partition(":")
    kind = kind.strip().lower()
    if kind not in OCCLUSIONS or not value:
        raise ConfigError(f"--occlude must be pepper:P, block:B or frames:P, got {spec!r}")
    try:
        v = float(value)
    except ValueError:
        raise ConfigError(f"--occlude {spec!r}: {value!r} is not a number") from None
    if kind in ("pepper", "frames") and not 0.0 < v < 1.0:
        raise ConfigError(f"--occlude {kind}:P needs 0 < P < 1, got {value}")
    if kind == "block" and (v != int(v) or v < 1):
        raise ConfigError(f"--occlude block:B needs a whole block side B >= 1, got {value}")
    return kind, v


def occlusion_mask(spec: str, frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A drawn mask (frames, size, size), True = missing: ``pepper:P`` each pixel missing with
    probability P (the same pixel in all three channels); ``block:B`` one B x B block per frame at
    a uniformly random place; ``frames:P`` round(P T) whole frames missing (at least one, and at
    least one kept)."""
    kind, v = parse_occlusion(spec)
    if kind == "pepper":
        return rng.random((frames, size, size)) < v
    mask = np.zeros((frames, size, size), bool)
    if kind == "block":
        b = int(v)
        if b > size:
            raise ConfigError(f"--occlude block:{b} is larger than the {size} x {size} frames")
        for t in range(frames):
            y, x = rng.integers(0, size - b + 1, 2)
            mask[t, y:y + b, x:x + b] = True
        return mask
    n = min(frames - 1, max(1, int(round(v * frames))))
    mask[rng.choice(frames, n, replace=False)] = True
    return mask


def _read_array(path: Path) -> np.ndarray:
    """A mask array as (T, H, W) or (H, W) floats: ``.npy`` in numpy order H x W, T x H x W or
    T x H x W x C; ``.mat`` in MATLAB order H x W [x T [x C]] (the variable ``masks``, or the only
    array)."""
    try:
        if path.suffix.lower() == ".npy":
            arr = np.load(path, allow_pickle=False)
            matlab = False
        else:
            import scipy.io

            data = {k: v for k, v in scipy.io.loadmat(path).items()
                    if not k.startswith("__") and isinstance(v, np.ndarray) and v.ndim >= 2}
            if "masks" in data:
                arr = data["masks"]
            elif len(data) == 1:
                arr = next(iter(data.values()))
            else:
                raise ValueError(f"no variable 'masks' and {len(data)} arrays to choose from")
            matlab = True
    except (OSError, ValueError, NotImplementedError, TypeError) as e:
        raise InputError(f"{path}: not a readable mask array ({e})") from None
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) or not 2 <= arr.ndim <= 4:
        raise InputError(f"{path}: a mask array must be 2-D to 4-D numbers, got {arr.ndim}-D "
                         f"{arr.dtype}")
    arr = arr.astype(np.float32)
    if matlab and arr.ndim >= 3:
        arr = np.moveaxis(arr, 2, 0)                  # H x W x T [x C] -> T x H x W [x C]
    return arr.max(axis=-1) if arr.ndim == 4 else arr  # any channel nonzero = missing


def load_mask(path: str | Path, frames: int, size: int, video_hw: tuple[int, int],
              start: int = 0) -> np.ndarray:
    """A mask file as a boolean (frames, size, size) array, True = missing.

    ``path``: a video or frame folder (``frames`` frames from ``start``), a single image (the
    same mask every frame) or an array file (see :func:`_read_array`); nonzero = missing. A
    video or image mask must have the video's frame size ``video_hw`` (H, W) and is resized and
    cropped as the frames are (:func:`dyntex.video.resize_crop`; a pixel is missing if any part
    of it was); an array of another frame size is taken as the whole frame resampled (the
    authors' 128 x 128 ``mask128.mat``) and is first stretched to the video's size (nearest).

    Raises:
        InputError: unreadable, not an image/video/array, the wrong frame size, or too few frames.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"mask {path}: no such file or folder")
    suffix = path.suffix.lower()
    if suffix in ARRAY_EXTS:
        arr = _read_array(path)
    elif suffix in IMAGE_EXTS:
        try:
            from PIL import Image

            with Image.open(path) as img:
                arr = np.asarray(img.convert("L"), np.float32)
        except (OSError, ValueError, SyntaxError) as e:
            raise InputError(f"mask {path}: cannot decode image ({e})") from None
    else:
        try:
            arr = read_video(path, frames=start + frames).frames[start:].max(axis=-1)
        except InputError as e:
            raise InputError(f"mask {path}: not an image, video or mask array "
                             f"({str(e).removeprefix(str(path) + ': ')})") from None
        arr = arr.astype(np.float32)
    hw = arr.shape[-2:]
    if tuple(hw) != tuple(video_hw):
        if suffix not in ARRAY_EXTS:
            raise InputError(f"mask {path} is {hw[1]}x{hw[0]} but the video is "
                             f"{video_hw[1]}x{video_hw[0]}")
        import cv2

        arr = np.stack([cv2.resize(a, video_hw[::-1], interpolation=cv2.INTER_NEAREST)
                        for a in arr.reshape(-1, *hw)]).reshape(*arr.shape[:-2], *video_hw)
    if arr.ndim == 2:
        arr = np.broadcast_to(arr, (frames, *arr.shape))
    elif suffix in ARRAY_EXTS:
        arr = arr[start:start + frames]
    if len(arr) < frames:
        raise InputError(f"mask {path} has {len(arr)} frames from frame {start}; the clip needs "
                         f"{frames}")
    missing = np.stack([resize_crop((a > 0).astype(np.float32), size) > 0 for a in arr[:frames]])
    return missing


def check_mask(missing: np.ndarray) -> None:
    """Refuse a mask that leaves nothing to learn from."""
    if missing.all():
        raise InputError("every pixel of the clip is missing under this mask; nothing to learn from")


# --------------------------------------------------------------------------- filling


def interpolate_missing(clip: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """Temporal linear interpolation per pixel: each missing value from the nearest known values
    of that pixel before and after it in time (the nearest one at either end). A pixel missing
    in every frame takes the mean of the known pixels of its frame (of the clip when its frame
    has none). ``clip`` (T, H, W, C) float, ``missing`` (T, H, W) bool; known values unchanged."""
    out = np.array(clip, dtype=np.float32, copy=True)
    T = len(clip)
    known = ~missing
    t = np.arange(T, dtype=np.float32)
    flat_out = out.reshape(T, -1, out.shape[-1])
    flat_known = known.reshape(T, -1)
    for p in np.flatnonzero(~flat_known.all(axis=0) & flat_known.any(axis=0)):
        k = flat_known[:, p]
        for c in range(out.shape[-1]):
            flat_out[~k, p, c] = np.interp(t[~k], t[k], flat_out[k, p, c])
    never = ~flat_known.any(axis=0)
    if never.any():
        overall = clip[known].mean(axis=0) if known.any() else np.full(clip.shape[-1], 0.5)
        for f in range(T):
            frame_known = flat_known[f]
            fill = clip[f][known[f]].mean(axis=0) if frame_known.any() else overall
            flat_out[f, never] = fill
    return out


class MaskedClip:
    """A clip with missing pixels as training data: its known pixels, its mask and the current
    completed clip (model space, (1, C, T, S, S)) that the cooperative update learns from.

    Each training iteration first lets the generator explain the known pixels (:meth:`explain`:
    alternating back-propagation on the known pixels only), then sets the missing pixels to the
    generator's rendering and revises them by descriptor Langevin with the known pixels clamped
    (:meth:`revise`). The recovery (:meth:`estimate`) is the generator's rendering of the clip's
    inferred latent at the missing pixels: the revised completion is one Langevin sample, whose
    noise and drift cost more than they add (docs/research_questions.md). Its ``state_dict``
    (the completion and the clip's latent) goes into checkpoints, so a resumed run continues
    from the same state."""

    def __init__(self, clip: np.ndarray, missing: np.ndarray):
        check_mask(missing)
        self.free = torch.from_numpy(np.ascontiguousarray(missing))[None, None]
        self.completed = to_model(interpolate_missing(clip, missing))[None]
        self.latent: torch.Tensor | None = None   # X of the observed clip, drawn at first use

    def estimate(self, model) -> torch.Tensor:
        """The recovery (model space): the known pixels as loaded, the missing ones the
        generator's rendering of the clip's latent (before any iteration: the interpolated start)."""
        if self.latent is None:
            return self.completed
        with torch.no_grad():
            rendered = model.render(self.latent.to(model.device)).cpu()
        return torch.where(self.free, rendered.to(self.completed.dtype), self.completed)

    def explain(self, model, generator: torch.Generator | None = None,
                optimizer: torch.optim.Optimizer | None = None) -> torch.Tensor:
        """The generator's account of the known pixels, as alternating back-propagation (Han, Lu,
        Zhu, Wu, AAAI 2017) learns from incomplete images: the observed clip's latent X takes l'
        Langevin steps on p(X | known pixels; alpha) (Eq. 16 with only the known pixels in the
        likelihood; l' = ``infer_steps``, or l when that is 0); with ``optimizer`` (training),
        alpha then takes one step on |known (Y - g(X))|^2 / (2 sigma^2) (Eq. 17 on the known
        pixels). Returns g(X) (model space, detached, rendered before that step). The missing
        pixels never enter either step."""
        cfg = model.config
        device = model.device
        target, seen = self.completed.to(device), ~self.free.to(device)
        if self.latent is None:
            self.latent = model.draw_latents(1, generator=generator).cpu()
        z = infer_latent(model.render, self.latent.to(device), target,
                         cfg.infer_steps or cfg.langevin_steps, cfg.infer_step_size,
                         cfg.gen_sigma, generator, seen)
        self.latent = z.cpu()
        with torch.set_grad_enabled(optimizer is not None):
            rendered = model.render(z)
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
            loss = ((target - rendered) * seen).pow(2).flatten(1).sum(1).mean() \
                / (2 * cfg.gen_sigma ** 2)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return rendered.detach()

    def revise(self, model, generator: torch.Generator | None = None,
               start: torch.Tensor | None = None) -> None:
        """The missing pixels from ``start`` (the generator's rendering, when given), then l
        Langevin steps on them (Alg. 1 step D1 with the known ones clamped), clipped to the pixel
        range [-1, 1] (the chain must stay a possible clip: unclipped, missing values ran away to
        extremes the energy then rewarded)."""
        free = self.free.to(model.device)
        y = self.completed.to(model.device)
        if start is not None:
            y = torch.where(free, start.to(y.dtype), y)
        self.completed = model.revise(y, generator=generator, free=free).clamp(-1.0, 1.0).cpu()

    def observed(self, batch: int | None = None, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
        return self.completed

    def first_window(self) -> torch.Tensor:
        return self.completed[0]

    def mean_frame(self) -> torch.Tensor:
        return self.completed[0].mean(dim=1)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"completed": self.completed.clone(),
                **({"latent": self.latent.clone()} if self.latent is not None else {})}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if tuple(state["completed"].shape) != tuple(self.completed.shape):
            raise ConfigError("the checkpoint's completed clip does not fit this clip")
        self.completed = state["completed"].clone()
        latent = state.get("latent")   # absent: saved before the generator explained the clip
        self.latent = latent.clone() if latent is not None else None


def fill(model, clip: np.ndarray, missing: np.ndarray, steps: int,
         generator: torch.Generator | None = None) -> np.ndarray:
    """Fill the missing pixels of ``clip`` (T, S, S, 3) in [0, 1] with a trained model: the
    clip's latent takes ``steps`` Langevin steps on its posterior given the known pixels (in
    rounds of l', :meth:`MaskedClip.explain` without the parameter update), and the generator
    renders the missing pixels (:meth:`MaskedClip.estimate`)."""
    data = MaskedClip(clip, missing)
    per_round = model.config.infer_steps or model.config.langevin_steps
    for _ in range(max(1, -(-steps // per_round))):
        data.explain(model, generator)
    return completed_clip(clip, missing, data.estimate(model))


def completed_clip(clip: np.ndarray, missing: np.ndarray, completed: torch.Tensor) -> np.ndarray:
    """The recovered clip (T, S, S, 3) in [0, 1]: the known pixels of ``clip`` bit for bit, the
    missing ones from ``completed`` (model space, (1, C, T, S, S))."""
    from .video import to_unit

    return np.where(missing[..., None], to_unit(completed[0]), clip).astype(np.float32)
