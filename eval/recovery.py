"""The benchmark's recovery task (``dyntex benchmark DIR --task recovery --occlude SPEC``):
occlude the first T frames of each clip, recover the missing pixels, and score the recovery on
the missing pixels only, against the baselines a user would otherwise reach for.

Methods (``RECOVERY_METHODS``):

* ``coop``: CoopNets trained on the incomplete clip: every iteration the generator explains the
  known pixels (latent inference and a regression step on them alone) and renders the missing
  ones, which clamped descriptor Langevin then revises for the cooperative update
  (:class:`dyntex.recovery.MaskedClip`); the recovery is the generator's rendering of the clip's
  latent after the last iteration. Its seconds are the training's own (``metrics.csv``).
* ``interp``: temporal linear interpolation per pixel (:func:`dyntex.recovery.interpolate_missing`).
* ``telea``: OpenCV inpainting of each frame (``cv2.inpaint``, Telea, radius 3) on its uint8
  pixels; a frame with every pixel missing (``frames:P``) has nothing to inpaint from and is
  filled by ``interp``.
* ``lds``: the LDS's observation model (Doretto et al.: the mean frame plus n = min(50, T/2)
  principal components) fitted with the missing values as unknowns, by iterated imputation:
  start from ``interp``, then 10 times refit and replace the missing values by the rank-n
  reconstruction (the fitted states mapped through C; the dynamics A play no part in it).

Scores over the missing pixels only (every channel): mean absolute error on the 0-255 scale and
PSNR (dB, peak 1). The occlusion of a clip is drawn from ``numpy.random.default_rng((seed,
crc32(clip name)))``, the same for every method. ``--occlude own`` uses each clip's own mask
instead (:func:`own_mask_file`; of the shared clips, boats and chatelet_fountain), which hides an
object with no ground truth behind it: the recovered hole is scored against the clip's known
pixels (:func:`hole_statistics`), and clips without a mask are skipped. Results are cached per
(clip, method, occlusion, settings) under ``OUT/cache/CLIP/recovery-…``.
"""
from __future__ import annotations

import hashlib
import time
import zlib
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from dyntex.errors import ConfigError, DyntexError, InputError
from dyntex.eval.runs import _ClipData, _coop_config, coop_description
from dyntex.eval.settings import (CACHE_VERSION, Settings, _clean, _digest, _fmt, _write_json,
                                  _write_npy, _write_text)
from dyntex.inputs import find_clips
from dyntex.recovery import interpolate_missing, occlusion_mask, parse_occlusion
from dyntex.runfolder import RunFolder

RECOVERY_METHODS = ("coop", "interp", "telea", "lds")
RECOVERY_LABELS = {"coop": "CoopNets", "interp": "temporal interpolation",
                   "telea": "inpainting (Telea)", "lds": "LDS (missing-data fit)"}
LDS_IMPUTE_ITERS = 10
# CoopNets recovery's scheme, in its cache key: 2 = the generator explains the known pixels and
# renders the missing ones (the recovery), before the descriptor revises them for training
# (1: descriptor Langevin alone, the average of its revisions the recovery)
COOP_RECOVERY_SCHEME = 2
OWN = "own"                          # --occlude own: each clip's own mask (no ground truth)
SCORES = ("mae", "psnr")             # with ground truth: on the missing pixels
OWN_SCORES = ("spectrum", "motion")  # without: the hole against the clip's known pixels


def telea(clip: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """cv2.inpaint (Telea, radius 3) of each frame; all-missing frames from ``interp``."""
    import cv2

    out = interpolate_missing(clip, missing)
    pixels = np.clip(np.round(clip * 255.0), 0, 255).astype(np.uint8)
    for t in range(len(clip)):
        if missing[t].any() and not missing[t].all():
            done = cv2.inpaint(pixels[t], missing[t].astype(np.uint8), 3, cv2.INPAINT_TELEA)
            out[t][missing[t]] = done[missing[t]].astype(np.float32) / 255.0
    return out


def lds_impute(clip: np.ndarray, missing: np.ndarray, iters: int = LDS_IMPUTE_ITERS) -> np.ndarray:
    """The LDS observation model (mean + n principal components of the frames, n = min(50,
    T/2)) fitted with the missing values as unknowns, by iterated rank-n imputation."""
    T = len(clip)
    n = min(50, T // 2)
    y = interpolate_missing(clip, missing).reshape(T, -1).astype(np.float64)
    free = missing[..., None].repeat(clip.shape[-1], -1).reshape(T, -1)
    for _ in range(iters):
        mean = y.mean(axis=0)
        u, s, vt = np.linalg.svd(y - mean, full_matrices=False)
        recon = (u[:, :n] * s[:n]) @ vt[:n] + mean
        y[free] = recon[free]
    return np.clip(y.reshape(clip.shape), 0.0, 1.0).astype(np.float32)


def _coop(clip: np.ndarray, missing: np.ndarray, st: Settings, run_dir: Path) -> np.ndarray:
    from dyntex.recovery import MaskedClip, completed_clip
    from dyntex.trainer import Trainer

    data = MaskedClip(clip, missing)
    trainer = Trainer(_coop_config(st, len(clip)), run_dir=run_dir, resume=True,
                      progress=st.progress, previews=False)
    trainer.fit(data)
    return completed_clip(clip, missing, data.estimate(trainer.model))


def scores(recovered: np.ndarray, clip: np.ndarray, missing: np.ndarray) -> dict[str, float]:
    """Mean absolute error (0-255) and PSNR (dB, peak 1) over the missing pixels."""
    diff = (recovered - clip)[missing]
    mse = float(np.mean(diff ** 2))
    return {"mae": float(np.mean(np.abs(diff)) * 255.0),
            "psnr": 10.0 * np.log10(1.0 / mse) if mse > 0 else None}


# spatial band-pass scales of hole_statistics: differences of Gaussians between these sigmas (px)
HOLE_BANDS = (0.0, 1.0, 2.0, 4.0)


def hole_statistics(clip: np.ndarray, missing: np.ndarray) -> dict[str, float]:
    """How the pixels under the mask compare with the rest of the same clip (no ground truth).

    ``spectrum``: RMS over bands of the log-amplitude difference between the hole and the known
    pixels, the bands being three spatial octaves (differences of Gaussians, sigma 0-1-2-4 px)
    of the luma frames and of their frame-to-frame differences (static and moving detail): 0 =
    the hole has the background's energy in every band (the benchmark's spectrum distance, taken
    over an irregular region). ``motion``: the benchmark's motion distance between the Farneback
    flow histograms of the hole's pixels and of the known ones (:func:`dyntex.eval.metrics.
    motion_distance`, per pixel set). ``missing`` (T, H, W) is True at the hole."""
    import cv2

    from dyntex.eval.metrics import flow_histograms, luma

    g = luma(clip).astype(np.float32)
    blurred = [g if s == 0 else np.stack([cv2.GaussianBlur(f, (0, 0), s) for f in g])
               for s in HOLE_BANDS]
    diffs = []
    for fine, coarse in zip(blurred, blurred[1:]):
        band = fine - coarse
        for b, m in ((band, missing), (band[1:] - band[:-1], missing[1:] | missing[:-1])):
            inside, outside = (b[m] ** 2).mean(), (b[~m] ** 2).mean()
            diffs.append(0.5 * np.log((inside + 1e-12) / (outside + 1e-12)))
    hole, rest = flow_histograms(g, select=missing[:-1]), flow_histograms(g, select=~missing[:-1])
    motion = 0.25 * sum(np.abs(a - b).sum() for a, b in zip(hole, rest))
    return {"spectrum": float(np.sqrt(np.mean(np.square(diffs)))), "motion": float(motion)}


def own_mask_file(src, root: Path) -> Path | None:
    """A clip's own mask: a mask video beside it in its sub-folder of ``root``, else a mask
    array (``.mat``/``.npy`` with ``mask`` in its name) there; None for a clip at the top of the
    data folder (a sub-folder holds one clip, so its mask is unambiguous) or without one."""
    from dyntex.inputs import is_mask
    from dyntex.recovery import ARRAY_EXTS
    from dyntex.video import VIDEO_EXTS

    if src.path is None or not src.path.is_file() or src.path.parent == Path(root):
        return None
    folder = src.path.parent
    files = sorted(f for f in folder.iterdir() if f.is_file() and is_mask(f))
    videos = [f for f in files if f.suffix.lower() in VIDEO_EXTS]
    arrays = [f for f in files if f.suffix.lower() in ARRAY_EXTS]
    return (videos or arrays or [None])[0]


def own_case(src, root: str | Path, T: int, S: int) -> tuple[np.ndarray, np.ndarray, int]:
    """A clip with its own mask (:func:`own_mask_file`): ``(observed (T, S, S, 3), missing (T, S,
    S), start)`` for the T-frame window in which the mask hides the most pixels (boats' mask
    hides nothing in its first 32 frames), loaded as the benchmark loads clips."""
    from dyntex.recovery import check_mask, load_mask
    from dyntex.video import read_video

    path = own_mask_file(src, Path(root))
    if path is None:
        raise InputError("no mask of its own (a mask video or mask array in its folder)")
    video = read_video(src.path, size=S)
    n = len(video.frames)
    if n < T:
        raise InputError(f"{n} frames, fewer than T={T}")
    native = read_video(src.path, frames=1).frames.shape[1:3]
    missing = load_mask(path, n, S, native)
    hidden = missing.reshape(n, -1).sum(1).cumsum()
    start = int(np.argmax(hidden[T - 1:] - np.concatenate([[0], hidden[:n - T]])))
    missing = missing[start:start + T]
    check_mask(missing)
    if not missing.any():
        raise InputError(f"its mask {path.name} hides nothing")
    return video.frames[start:start + T], missing, start


def clip_mask(name: str, spec: str, T: int, S: int, seed: int) -> np.ndarray:
    return occlusion_mask(spec, T, S, np.random.default_rng((seed, zlib.crc32(name.encode()))))


def run_recovery(data_dir: str | Path, out: str | Path, st: Settings, occlude: str,
                 methods: tuple[str, ...] = RECOVERY_METHODS) -> dict[str, Any]:
    """Run the recovery task on the clips of ``data_dir``; write ``OUT/recovery_<occlusion>.md``
    and ``.json`` and ``OUT/recovery_<occlusion>/CLIP.mp4`` (observed | masked | methods);
    returns the results (``text``: the table)."""
    own = occlude.strip().lower() == OWN
    if not own:
        kind, value = parse_occlusion(occlude)
    unknown = [m for m in methods if m not in RECOVERY_METHODS]
    if unknown or not methods:
        raise ConfigError(f"unknown recovery method(s) {', '.join(unknown) or '(none)'}; choose "
                          f"from {', '.join(RECOVERY_METHODS)}")
    if "coop" in methods:
        _coop_config(st, st.frames)
    tag = OWN if own else f"{kind}-{value:g}"
    out, start = Path(out), time.perf_counter()
    cache = out / "cache"
    sources = [s for s in find_clips(data_dir) if not s.skip and (not st.clips or s.name in st.clips)]
    per_clip: list[dict[str, Any]] = []
    media = {}
    for src in sources:
        clip = _ClipData(src, st, cache)
        entry: dict[str, Any] = {"clip": src.name, "rows": {}}
        try:
            if clip.meta["skip"]:
                entry["skip"] = clip.meta["skip"]
                per_clip.append(entry)
                continue
            if own:
                observed, missing, entry["start"] = own_case(src, data_dir, st.frames, st.size)
            else:
                observed = clip.observed
                missing = clip_mask(src.name, occlude, clip.T, st.size, st.seed)
        except DyntexError as e:
            per_clip.append({**entry, "skip": str(e).splitlines()[0]})
            continue
        panels = [observed, np.where(missing[..., None], 0.0, observed)]
        if own:    # what the statistics say with the object still in place
            entry["observed"] = hole_statistics(observed, missing)
        for method in methods:
            key = _digest({"v": CACHE_VERSION, "clip": clip.key, "method": method, "occlude": tag,
                           "seed": st.seed, "config": _coop_config(st, clip.T).to_dict()
                           if method == "coop" else None,
                           **({"scheme": COOP_RECOVERY_SCHEME} if method == "coop" else {}),
                           **({"mask": hashlib.sha1(np.packbits(missing)).hexdigest(),
                               "start": entry["start"]} if own else {})})
            folder = cache / src.name / f"recovery-{method}-{key}"
            try:
                recovered = np.load(folder / "recovered.npy")
                info = _read_info(folder)
            except (OSError, ValueError):
                t0 = time.perf_counter()
                try:
                    recovered = {"interp": lambda: interpolate_missing(observed, missing),
                                 "telea": lambda: telea(observed, missing),
                                 "lds": lambda: lds_impute(observed, missing),
                                 "coop": lambda: _coop(observed, missing, st, folder / "run")}[method]()
                except DyntexError as e:
                    entry["rows"][method] = {"error": str(e).splitlines()[0]}
                    continue
                seconds = time.perf_counter() - t0
                if method == "coop":   # the training's own clock, which counts a resumed run's
                    seconds = RunFolder(folder / "run").elapsed_seconds() or seconds  # earlier part
                info = {"seconds": seconds, **(hole_statistics(recovered, missing) if own
                                               else scores(recovered, observed, missing))}
                _write_npy(folder / "recovered.npy", recovered.astype(np.float32))
                _write_json(folder / "info.json", _clean(info))
            entry["rows"][method] = info
            panels.append(recovered)
        entry["missing_share"] = float(missing.mean())
        per_clip.append(entry)
        media[src.name] = (panels, ["observed", "masked"] + [RECOVERY_LABELS[m] for m in methods
                                                            if m in entry["rows"]
                                                            and "error" not in entry["rows"][m]])
    results = {"task": "recovery", "occlude": tag if own else occlude, "methods": list(methods),
               "settings": {k: v for k, v in asdict(st).items() if k != "progress"},
               "clips": per_clip, "means": _means(per_clip, methods, OWN_SCORES if own else SCORES),
               "wall_seconds": time.perf_counter() - start}
    results["text"] = _table_text(results, st)
    _write_json(out / f"recovery_{tag}.json", _clean(results))
    _write_text(out / f"recovery_{tag}.md", results["text"])
    from dyntex.video import to_pixels, write_video
    from dyntex.writing import side_by_side

    for name, (panels, labels) in media.items():
        write_video(out / f"recovery_{tag}" / f"{name}.mp4",
                    side_by_side([to_pixels(p) for p in panels[:len(labels)]], labels), 25.0)
    return results


def run_recovery_benchmark(data_dir: str | Path, out: str | Path, occlude: str = "pepper:0.5",
                           methods: str | tuple[str, ...] | None = None,
                           **overrides: Any) -> dict[str, Any]:
    """:func:`run_recovery` with the benchmark's settings (keyword overrides of
    :class:`~dyntex.eval.settings.Settings`: clips, frames, size, seed, preset, iters, device,
    progress); ``methods`` defaults to every recovery method."""
    from dyntex.eval.settings import parse_list

    st = Settings(**overrides)
    st.clips = parse_list(st.clips)
    names = {s.name for s in find_clips(data_dir)}
    missing = [c for c in st.clips or () if c not in names]
    if missing:
        raise ConfigError(f"unknown clip(s) {', '.join(missing)}; {data_dir} has "
                          f"{', '.join(sorted(names))}")
    return run_recovery(data_dir, out, st, occlude, parse_list(methods) or RECOVERY_METHODS)


def _read_info(folder: Path) -> dict[str, Any]:
    import json

    return json.loads((folder / "info.json").read_text())


def _means(per_clip: list[dict], methods: tuple[str, ...], names: tuple[str, ...] = SCORES
           ) -> dict[str, dict[str, Any]]:
    """Per method: means over clips of each score in ``names`` and of the seconds, and (with
    ground truth) on how many clips its MAE is the lowest."""
    ok = [{m: r for m, r in c.get("rows", {}).items() if "error" not in r} for c in per_clip]
    out = {}
    for m in methods:
        got = [rows[m] for rows in ok if m in rows]
        out[m] = {"clips": len(got)}
        for name in (*names, "seconds"):
            values = [g[name] for g in got if g.get(name) is not None]
            out[m][name] = float(np.mean(values)) if values else None
        if "mae" in names:
            out[m]["wins"] = sum(m in rows and rows[m]["mae"] <= min(r["mae"] for r in rows.values())
                                 for rows in ok)
    return out


def _table_text(results: dict[str, Any], st: Settings) -> str:
    methods = results["methods"]
    own = results["occlude"] == OWN
    names = OWN_SCORES if own else SCORES
    cell = "{:.3f}" if own else "{:.2f}"
    if own:
        head = (f"## Recovery, each clip's own mask: the T={st.frames} frames at {st.size}x{st.size} "
                f"where it hides the most, the hole against the clip's known pixels (no ground "
                f"truth; spectrum ↓ / motion ↓, 0 = the hole looks like the background)\n\n")
    else:
        head = (f"## Recovery, {results['occlude']}: first T={st.frames} frames at "
                f"{st.size}x{st.size}, scored on the missing pixels only (MAE on 0-255 ↓ / "
                f"PSNR dB ↑)\n\n")
    if "coop" in methods:
        head += f"CoopNets: {coop_description(st)}.\n\n"
    first = ["object in place"] if own else []
    lines = ["| clip | missing | " + " | ".join(first + [RECOVERY_LABELS[m] for m in methods]) + " |",
             "|---|---|" + "---|" * (len(first) + len(methods))]

    def pair(r: dict[str, Any]) -> str:
        return " / ".join(_fmt(r.get(n), cell) for n in names)

    for c in results["clips"]:
        if c.get("skip"):
            lines.append(f"| {c['clip']} | skipped: {c['skip']} |" + " |" * (len(first) + len(methods)))
            continue
        cells = [pair(c["observed"])] if own else []
        cells += ["failed" if "error" in c["rows"].get(m, {}) else pair(c["rows"].get(m, {}))
                  for m in methods]
        where = f" (frames {c['start'] + 1}–{c['start'] + st.frames})" if own else ""
        lines.append(f"| {c['clip']} | {100 * c['missing_share']:.0f} %{where} | " + " | ".join(cells)
                     + " |")
    means = results["means"]
    lines.append("| **mean** | | " + " | ".join([""] * len(first) + [
        f"**{pair(means[m])}**" for m in methods]) + " |")
    if not own:
        lines.append("| lowest MAE on (clips) | | " + " | ".join(str(means[m]["wins"])
                                                              for m in methods) + " |")
    lines.append("| seconds per clip | | " + " | ".join([""] * len(first) + [
        _fmt(means[m]["seconds"], "{:.1f}") for m in methods]) + " |")
    return head + "\n".join(lines) + "\n"
