"""The ``dyntex benchmark`` comparison: CoopNets against LDS, HOSVD and FFT-LDS on a folder of clips.

Protocol (the README's "Benchmark" section says why it is built this way):

* Each clip: the first T frames, loaded by :mod:`dyntex.eval.loading` (``/ 255``, INTER_AREA so the
  shorter side is S, centre crop). A clip with fewer than T frames is used at its own length,
  rounded down to a multiple of 4 so that every method can run on it; below 8 frames it is
  skipped, with the reason in the tables.
* Every method is fit on those T observed frames and synthesizes K clips of T frames. The
  baselines roll out *with* their noise term (``noise=False``: the deterministic rollout,
  labelled "reconstruction") in two rows each: ``lds`` from the state fitted to frame 1 (the
  "continuation") and ``lds-new`` from a draw of the fitted model's stationary distribution (a
  "new sample", like CoopNets' samples; :func:`dyntex.eval.baselines.lds.stationary_start`), the same
  for ``hosvd`` and ``fftlds``; sample k uses its own ``np.random.default_rng(seed * K + k)``. CoopNets trains the given preset on the observed clip
  (``window="first"``) and draws K fresh latents from ``torch.Generator().manual_seed(seed)``.
* Scores of a synthesized clip against the observed one (:mod:`dyntex.eval.metrics`): PSNR and SSIM of
  frame t vs frame t (luma by default, RGB as an option; per-frame PSNR capped at 100 dB), the
  spectrum, motion and colour distances, the Portilla-Simoncelli appearance and dynamics
  distances, the diversity of the K samples and memorisation (highest PSNR against any
  T-window of up to ``memo_frames`` frames of the source video). Means over samples per clip;
  the tables show means over clips.
* Reference rows: "mean frame" (every frame = the observed mean frame) and "next window" (the
  real frames T+1..2T against 1..T; only where the video has 2T frames), and the calibration
  rows of :mod:`dyntex.eval.calibration` (noise, phase-randomised, shuffled, frozen; one clip each,
  from ``np.random.default_rng((seed, i))``), which show what each statistic is fooled by.

Results are cached per (clip, method, settings) under ``RESULTS_DIR/cache/`` (samples as
``.npy`` and an ``info.json``; CoopNets also keeps its run folder there, so an interrupted
training resumes from its last checkpoint), so a rerun computes only what is missing.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Iterable, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
from threadpoolctl import threadpool_limits

from dyntex.errors import ConfigError, DyntexError, InputError, OutputError
from dyntex.eval import calibration, metrics
from dyntex.eval.baselines import BASELINES, hosvd
from dyntex.eval.loading import read_head_tail
from dyntex.inputs import ClipSource, find_clips

__all__ = ["BASELINE_METHODS", "LABELS", "METHODS", "MIN_FRAMES", "REFERENCES", "Report",
           "Settings", "parse_list", "run_benchmark"]

NEW = "-new"                    # row key suffix: the baseline's new-sample (stationary start) row
BASELINE_METHODS = ("lds", "lds-new", "hosvd", "hosvd-new", "fftlds", "fftlds-new")
METHODS = ("coop",) + BASELINE_METHODS
CALIBRATION = ("noise", "phase-randomised", "shuffled", "frozen")
REFERENCES = ("meanframe", "nextwindow") + CALIBRATION
LABELS = {"coop": "CoopNets", "lds": "LDS", "hosvd": "HOSVD", "fftlds": "FFT-LDS",
          "lds-new": "LDS", "hosvd-new": "HOSVD", "fftlds-new": "FFT-LDS",
          "meanframe": "mean frame", "nextwindow": "next window", "noise": "noise",
          "phase-randomised": "phase-randomised", "shuffled": "shuffled", "frozen": "frozen",
          "observed": "observed"}
MIN_FRAMES = 8
MIN_SIZE = 14                   # metrics.ps_setting: one pyramid scale holding a 7 x 7 window
PSNR_CAP = 100.0
CACHE_VERSION = 2  # 2: the memorisation frames are loaded by the same rule as the observed ones
# Scores cached under another version are redone: 2 added the Portilla-Simoncelli statistics,
# 3 made SSIM the published one (Gaussian window).
METRICS_VERSION = 3
DASH = "–"

# (key, column title, format, legend name) of the statistics, in table order.
COLUMNS = (("psnr", "PSNR (dB) ↑", "{:.2f}", "PSNR"), ("ssim", "SSIM ↑", "{:.3f}", "SSIM"),
           ("spectrum", "spectrum ↓", "{:.3f}", "spectrum"),
           ("motion", "motion ↓", "{:.3f}", "motion"), ("color", "colour ↓", "{:.3f}", "colour"),
           ("ps_appearance", "PS appearance ↓", "{:.2f}", "PS appearance"),
           ("ps_dynamics", "PS dynamics ↓", "{:.2f}", "PS dynamics"),
           ("diversity", "diversity", "{:.3f}", "diversity"),
           ("memorisation", "memorisation (dB) ↓", "{:.2f}", "memorisation"))
_DOC_KEYS = {"psnr": "psnr", "ssim": "ssim", "spectrum": "spectrum_distance",
             "motion": "motion_distance", "color": "color_distance",
             "ps_appearance": "ps_appearance", "ps_dynamics": "ps_dynamics",
             "diversity": "diversity", "memorisation": "memorisation"}


@dataclass
class Settings:
    """Everything that decides the benchmark's numbers (and ``progress``, which does not)."""

    methods: tuple[str, ...] = METHODS
    clips: tuple[str, ...] | None = None        # clip names to run (None: all)
    frames: int = 32                            # T
    size: int = 64                              # S
    samples: int = 3                            # K
    seed: int = 0
    preset: str = "fast"                        # CoopNets preset
    iters: int | None = None                    # CoopNets iterations (None: the preset's)
    device: str | None = None                   # CoopNets device (None: the preset's, "auto")
    noise: bool = True                          # False: deterministic baseline rollouts
    stabilize: bool = False                     # reflect unstable eigenvalues of A
    rgb: bool = False                           # PSNR/SSIM on RGB instead of luma
    hosvd_energy: float = hosvd.ENERGY          # spatial energy HOSVD's ranks keep (1: full)
    memo_frames: int | None = None              # frames searched for copies (None: 8 T)
    motion_stride: int = 2                      # flow on every stride-th frame pair
    ps: bool = True                             # False: skip the Portilla-Simoncelli statistics
    progress: bool = True

    @property
    def memo(self) -> int:
        return self.memo_frames if self.memo_frames is not None else 8 * self.frames


@dataclass
class Report:
    """What a benchmark run produced."""

    text: str                          # summary table, per-clip table and legend (printed)
    markdown: str                      # ``table.md``: the text plus a detailed per-clip table
    results: dict[str, Any]            # ``results.json``
    paths: dict[str, Path]
    wall_seconds: float


def parse_list(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``"a, b,a"`` -> ``("a", "b")`` (order kept, duplicates dropped); ``None`` stays ``None``."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(dict.fromkeys(s.strip() for s in items if s.strip()))


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return DASH
    return spec.format(value)


@contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """Run numpy's BLAS on one thread inside the block (restored afterwards).

    The baselines and metrics multiply small matrices, where BLAS threads mostly wait for each
    other (and for any other busy process): on two cores one thread is several times faster.
    """
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _write_text(path: Path, text: str) -> None:
    from dyntex.fileio import atomic_write

    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def _write_npy(path: Path, arr: np.ndarray) -> None:
    from dyntex.fileio import atomic_write

    def write(p: Path) -> None:
        with p.open("wb") as fh:
            np.save(fh, arr)

    atomic_write(path, write)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _write_json(path: Path, data: Any) -> None:
    _write_text(path, json.dumps(data, indent=2, default=_json_default, allow_nan=False) + "\n")


def _clean(obj: Any) -> Any:
    """NaN/inf -> None, recursively (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# --------------------------------------------------------------------------- one clip's data


class _ClipData:
    """A clip's observed frames, source video and metadata, decoded lazily and cached.

    The metadata and the observed frames (float32, T x S x S x 3) are cached under
    ``cache/<clip>/clip-<key>/``; the longer video (for memorisation and the next window) is
    decoded only when a score that needs it is missing from the cache.
    """

    def __init__(self, src: ClipSource, st: Settings, cache: Path):
        self.src, self.st = src, st
        self.key = _digest({"v": CACHE_VERSION, "source": src.identity(), "path": str(src.path),
                            "T": st.frames, "S": st.size, "memo": st.memo})
        self.dir = cache / src.name / f"clip-{self.key}"
        self._meta: dict[str, Any] | None = None
        self._observed: np.ndarray | None = None
        self._head: np.ndarray | None = None
        self._tail: np.ndarray | None = None
        self._video_luma: np.ndarray | None = None
        self._ps: dict[bool, metrics.PSStats] = {}
        self.ps_seconds = 0.0

    # -- decoding ------------------------------------------------------------------------------
    def _decode(self) -> None:
        st, T = self.st, self.st.frames
        head, tail, fps, total = read_head_tail(self.src.path, 2 * T, max(st.memo, 2 * T), st.size)
        self._head, self._tail = head, tail
        n = len(head)
        notes = list(self.src.notes)
        skip = None
        if n < T:
            if n < MIN_FRAMES:
                skip = f"only {n} frames (fewer than {MIN_FRAMES})"
                used = 0
            else:
                used = n - n % 4
                notes.append(f"{n} frames (< T={T}): used the first {used}")
        else:
            used = T
        self._meta = {"frames_used": used, "frames_decoded": n + len(tail), "fps": fps,
                      "source_frames": total, "skip": skip, "notes": notes,
                      "has_next_window": used > 0 and n >= 2 * used}
        self._observed = head[:used]
        self.dir.mkdir(parents=True, exist_ok=True)
        if used:
            _write_npy(self.dir / "observed.npy", self._observed)
        _write_json(self.dir / "meta.json", self._meta)

    @property
    def meta(self) -> dict[str, Any]:
        if self._meta is None:
            try:
                meta = json.loads((self.dir / "meta.json").read_text())
                observed = (np.load(self.dir / "observed.npy") if meta["frames_used"]
                            else np.zeros((0,), np.float32))
                if meta["frames_used"] and observed.shape != (meta["frames_used"], self.st.size,
                                                              self.st.size, 3):
                    raise ValueError("stale observed.npy")
                self._meta, self._observed = meta, observed
            except (OSError, ValueError, KeyError):
                self._decode()
        assert self._meta is not None
        return self._meta

    @property
    def observed(self) -> np.ndarray:
        self.meta
        assert self._observed is not None
        return self._observed

    @property
    def T(self) -> int:
        return int(self.meta["frames_used"])

    def video_luma(self) -> np.ndarray:
        """Luma (L, S, S) of the source video (up to ``memo`` frames), for the copy search."""
        if self._video_luma is None:
            if self._head is None:
                self._decode()
            self._video_luma = metrics.luma(np.concatenate([self._head, self._tail]))
        return self._video_luma

    def ps(self, temporal: bool) -> metrics.PSStats:
        """PS statistics of the observed frames (``temporal``: of their differences), once."""
        if temporal not in self._ps:
            t0 = time.perf_counter()
            self._ps[temporal] = metrics.ps_statistics(self.observed, temporal=temporal)
            self.ps_seconds += time.perf_counter() - t0
        return self._ps[temporal]

    def next_window(self) -> np.ndarray | None:
        if not self.meta["has_next_window"]:
            return None
        if self._head is None:
            self._decode()
        return self._head[self.T:2 * self.T]


# --------------------------------------------------------------------------- methods


def _coop_config(st: Settings, frames: int):
    from dyntex.config import make_config

    return make_config(st.preset, frames=frames, size=st.size, iters=st.iters, seed=st.seed,
                       device=st.device, window="first")


def _baseline_of(row: str) -> tuple[str, str]:
    """(baseline name, rollout start) of a baseline row key: ``lds`` -> (lds, first),
    ``lds-new`` -> (lds, stationary)."""
    return (row[:-len(NEW)], "stationary") if row.endswith(NEW) else (row, "first")


def _fit_baseline(row: str, observed: np.ndarray, st: Settings) -> tuple[np.ndarray, dict]:
    """Fit the row's baseline once and draw K rollouts, sample k from its own seeded Generator
    (a new-sample row draws its start from it first)."""
    name, start = _baseline_of(row)
    baseline = BASELINES[name]
    extra = {"energy": st.hosvd_energy} if name == "hosvd" else {}
    t0 = time.perf_counter()
    model = baseline.fit(observed, stabilize=st.stabilize, **extra)
    t1 = time.perf_counter()
    K, T = st.samples, len(observed)
    clips = [baseline.sample(model, T, np.random.default_rng(st.seed * K + k), noise=st.noise,
                             start=start) for k in range(K)]
    t2 = time.perf_counter()
    info = {"fit_seconds": t1 - t0, "sample_seconds": t2 - t1,
            "max_abs_eig": float(model.max_abs_eig), "start": start}
    if start == "stationary":                   # how the start covariance was found
        info["start_covariance"] = model.lds.start_law[2] if name == "fftlds" \
            else model.start_law[2]
    if name == "hosvd":
        info["ranks"] = list(model.ranks)
    return np.stack(clips).astype(np.float32), info


def _fit_coop(observed: np.ndarray, st: Settings, run_dir: Path) -> tuple[np.ndarray, dict]:
    """Train CoopNets on the observed clip (run folder ``run_dir``, resumable); K fresh samples."""
    import torch

    from dyntex.trainer import Trainer
    from dyntex.video import to_unit

    cfg = _coop_config(st, len(observed))
    x = torch.from_numpy(np.ascontiguousarray(observed)).permute(3, 0, 1, 2)[None] * 2.0 - 1.0
    trainer = Trainer(cfg, run_dir=run_dir, resume=True, progress=st.progress, previews=False)
    resumed_at = trainer.step
    t0 = time.perf_counter()
    model = trainer.fit(x)
    t1 = time.perf_counter()
    fit_seconds = t1 - t0
    if resumed_at:
        try:
            from dyntex.trainer import read_metrics

            fit_seconds = float(read_metrics(run_dir)[-1]["seconds"])
        except (ImportError, OSError, IndexError, KeyError, ValueError):
            pass
    g = torch.Generator(device=trainer.device).manual_seed(st.seed)
    out = model.synthesize(st.samples, generator=g)
    t2 = time.perf_counter()
    return to_unit(out), {"fit_seconds": fit_seconds, "sample_seconds": t2 - t1,
                          "max_abs_eig": None, "iters": cfg.iters, "device": str(trainer.device),
                          "resumed_at_step": resumed_at}


def _entry_params(method: str, st: Settings, clip: _ClipData) -> dict[str, Any]:
    """The settings a method's samples depend on (its cache key is their digest)."""
    base = {"v": CACHE_VERSION, "clip": clip.key, "method": method}
    if method in BASELINE_METHODS:
        params = {**base, "K": st.samples, "seed": st.seed, "noise": st.noise,
                  "stabilize": st.stabilize}
        if _baseline_of(method)[0] == "hosvd":
            params["hosvd_energy"] = st.hosvd_energy
        return params
    if method == "coop":
        return {**base, "K": st.samples, "seed": st.seed,
                "config": _coop_config(st, clip.T).to_dict()}
    if method in CALIBRATION and method != "frozen":
        return {**base, "seed": st.seed}            # drawn from np.random.default_rng((seed, i))
    return base                                     # the other references are deterministic


def _metric_key(st: Settings) -> str:
    return (f"v{METRICS_VERSION}-{'rgb' if st.rgb else 'luma'}-stride{st.motion_stride}"
            f"-memo{st.memo}-cap{PSNR_CAP:g}{'' if st.ps else '-nops'}")


def _score(method: str, samples: np.ndarray, clip: _ClipData, st: Settings) -> dict[str, Any]:
    """The statistics of ``samples`` (K, T, S, S, 3) against the observed clip (means over K)."""
    obs, gray = clip.observed, not st.rgb
    per: dict[str, list[float]] = {k: [] for k in ("psnr", "ssim", "spectrum", "motion", "color",
                                                    "ps_appearance", "ps_dynamics",
                                                    "memorisation")}
    capped, ps_seconds = 0, 0.0
    video = clip.video_luma()           # memorisation compares luma
    for s in samples:
        per["psnr"].append(metrics.psnr(s, obs, gray=gray, cap=PSNR_CAP))
        capped += sum(metrics.psnr(s[t:t + 1], obs[t:t + 1], gray=gray, cap=PSNR_CAP) >= PSNR_CAP
                      for t in range(len(s)))
        per["ssim"].append(metrics.ssim(s, obs, gray=gray))
        per["spectrum"].append(metrics.spectrum_distance(s, obs))
        per["motion"].append(metrics.motion_distance(s, obs, stride=st.motion_stride))
        per["color"].append(metrics.color_distance(s, obs))
        if st.ps:
            t0 = time.perf_counter()
            per["ps_appearance"].append(metrics.ps_distance(metrics.ps_statistics(s),
                                                            clip.ps(False)))
            per["ps_dynamics"].append(metrics.ps_distance(metrics.ps_statistics(s, temporal=True),
                                                          clip.ps(True)))
            ps_seconds += time.perf_counter() - t0
        if method == "nextwindow":
            # Windows overlapping the next window itself would find it; search the others.
            T = clip.T
            found = [metrics.memorisation(s, video[:T], cap=PSNR_CAP)]
            if len(video) - 2 * T >= T:
                found.append(metrics.memorisation(s, video[2 * T:], cap=PSNR_CAP))
            per["memorisation"].append(max(found))
        else:
            per["memorisation"].append(metrics.memorisation(s, video, cap=PSNR_CAP))
    out: dict[str, Any] = {k: float(np.mean(v)) if v else None for k, v in per.items()}
    out["psnr_per_sample"] = per["psnr"]
    out["psnr_capped_frames"] = int(capped)
    out["ps_seconds"] = ps_seconds if st.ps else None   # the samples' PS statistics, all K
    if method == "meanframe":
        out["diversity"] = 0.0                          # deterministic: every draw is the same
    elif method in REFERENCES or len(samples) < 2:
        out["diversity"] = None
    else:
        out["diversity"] = metrics.diversity(list(samples))
    return out


def _produce(method: str, clip: _ClipData, st: Settings, entry: Path) -> tuple[np.ndarray, dict]:
    if method in BASELINE_METHODS:
        return _fit_baseline(method, clip.observed, st)
    if method == "coop":
        return _fit_coop(clip.observed, st, entry / "run")
    if method == "meanframe":
        obs = clip.observed
        return np.broadcast_to(obs.mean(axis=0), obs.shape)[None].astype(np.float32), {}
    if method in CALIBRATION:
        obs, rng = clip.observed, np.random.default_rng((st.seed, CALIBRATION.index(method)))
        made = {"noise": lambda: calibration.noise(obs, rng),
                "phase-randomised": lambda: calibration.phase_randomised(obs, rng),
                "shuffled": lambda: calibration.shuffled(obs, rng),
                "frozen": lambda: calibration.frozen(obs)}[method]()
        return made[None].astype(np.float32), {}
    nw = clip.next_window()
    assert nw is not None
    return nw[None].astype(np.float32), {}


def _run_entry(method: str, clip: _ClipData, st: Settings, cache: Path) -> dict[str, Any]:
    """A method's (or reference's) samples and scores on one clip, from the cache or computed."""
    key = _digest(_entry_params(method, clip=clip, st=st))
    entry = cache / clip.src.name / f"{method}-{key}"
    info_path, samples_path = entry / "info.json", entry / "samples.npy"
    want = (st.samples if method in METHODS else 1, clip.T, st.size, st.size, 3)
    info: dict[str, Any] | None = None
    samples: np.ndarray | None = None
    try:
        info = json.loads(info_path.read_text())
        samples = np.load(samples_path)
        if samples.shape != want:
            raise ValueError("stale samples")
        cached = True
    except (OSError, ValueError, KeyError):
        # CoopNets trains with torch's own threads; numpy's BLAS is for the rest.
        with nullcontext() if method == "coop" else _single_threaded_blas():
            samples, timing = _produce(method, clip, st, entry)
        info = {"key": key, "method": method, **timing, "metrics": {}}
        _write_npy(samples_path, samples)
        _write_json(info_path, _clean(info))
        cached = False
        # A finished CoopNets run keeps config.json and metrics.csv; its checkpoints (tens to
        # hundreds of MB each) were only needed to resume an interrupted training.
        shutil.rmtree(entry / "run" / "checkpoints", ignore_errors=True)
    mkey = _metric_key(st)
    if mkey not in info.get("metrics", {}):
        with _single_threaded_blas():
            info.setdefault("metrics", {})[mkey] = _score(method, samples, clip, st)
        _write_json(info_path, _clean(info))
    scores = info["metrics"][mkey]
    result = {k: v for k, v in info.items() if k not in ("metrics", "method")}
    return {**result, **scores, "cached": cached, "first_sample": samples[0]}


# --------------------------------------------------------------------------- outputs


def _energy_text(energy: float) -> str:
    return "every row and column (full ranks)" if energy >= 1.0 else \
        f"{100 * energy:g} % of each spatial mode's energy"


def _label(method: str, st: Settings) -> str:
    if method not in BASELINE_METHODS:
        return LABELS[method]
    new = _baseline_of(method)[1] == "stationary"
    how = ["new sample"] if new else ["continuation" if st.noise else "reconstruction"]
    if new and not st.noise:
        how.append("no noise")
    if st.stabilize:
        how.append("stabilised")
    return f"{LABELS[method]} ({', '.join(how)})"


def _to_uint8(clip: np.ndarray) -> np.ndarray:
    return np.clip(np.round(clip * 255.0), 0, 255).astype(np.uint8)


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


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _summary(clip_results: list[dict], rows: Sequence[str]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        got = [c["rows"][row] for c in clip_results if row in c["rows"] and "error" not in c["rows"][row]]
        entry: dict[str, Any] = {"row": row, "clips": len(got)}
        for key, *_ in COLUMNS:
            vals = [g[key] for g in got if g.get(key) is not None]
            entry[key] = float(np.mean(vals)) if vals else None
        entry["psnr_capped_frames"] = int(sum(g.get("psnr_capped_frames", 0) for g in got))
        eigs = [g["max_abs_eig"] for g in got if g.get("max_abs_eig") is not None]
        entry["unstable_fits"] = sum(e > 1.0 for e in eigs) if eigs else None
        out.append(entry)
    return out


def _render(st: Settings, clip_results: list[dict], summary: list[dict], rows: Sequence[str],
            n_clips: int) -> tuple[str, str]:
    """(printed text, table.md)."""
    mode = "RGB" if st.rgb else "luma"
    coop = f"; CoopNets: preset {st.preset}, {_coop_config(st, st.frames).iters} iterations" \
        if "coop" in st.methods else ""
    head = (f"Each method fit on the first T={st.frames} frames at {st.size}x{st.size}, "
            f"K={st.samples} samples of T frames; baselines {'roll out with noise' if st.noise else 'deterministic (reconstruction)'}"
            f"{', stabilised' if st.stabilize else ''}{coop}; PSNR/SSIM on {mode}; "
            f"{'' if st.ps else 'Portilla-Simoncelli statistics skipped (--no-ps); '}"
            f"means over clips ({n_clips} used).")
    sum_rows = []
    for s in summary:
        cells = [_label(s["row"], st), str(s["clips"])]
        for key, _, spec, _ in COLUMNS:
            cell = _fmt(s[key], spec) if s["clips"] else DASH
            if key == "psnr" and s["psnr_capped_frames"] and cell != DASH:
                cell += "*"
            cells.append(cell)
        sum_rows.append(cells)
    summary_md = _table(["method", "clips"] + [c[1] for c in COLUMNS], sum_rows)

    # One spectral radius per fitted baseline (its continuation and new-sample rows share A).
    baselines = list(dict.fromkeys(_baseline_of(m)[0] for m in st.methods
                                   if m in BASELINE_METHODS))
    pc_header = ["clip", "frames"] + [_label(r, st) for r in rows] + \
        ([f"max abs eig ({' / '.join(LABELS[b] for b in baselines)})"] if baselines else []) + ["note"]
    pc_rows = []
    for c in clip_results:
        cells = [c["clip"], str(c["frames_used"]) if not c["skip"] else DASH]
        notes = list(c["notes"])
        if c["skip"]:
            notes.insert(0, f"skipped: {c['skip']}")
        for r in rows:
            res = c["rows"].get(r)
            if res is None:
                cells.append(DASH)
            elif "error" in res:
                cells.append("failed")
                notes.append(f"{LABELS[r]} failed: {res['error']}")
            else:
                star = "*" if res["psnr_capped_frames"] else ""
                cells.append(f"{_fmt(res['psnr'], '{:.2f}')}{star} / {_fmt(res['ssim'], '{:.3f}')}")
        if baselines:
            cells.append(" / ".join(_fmt((c["rows"].get(b) or c["rows"].get(b + NEW) or {})
                                         .get("max_abs_eig"), "{:.4f}") for b in baselines))
        cells.append("; ".join(notes))
        pc_rows.append(cells)
    per_clip_md = _table(pc_header, pc_rows)

    legend = [f"- **{name}**: {metrics.METRIC_DOCS[_DOC_KEYS[key]]}"
              for key, _, _, name in COLUMNS]
    legend += [
        "- **max abs eig**: spectral radius of the fitted state transition A (> 1: the noise-free "
        "rollout grows without bound); CoopNets has none",
        "- **(continuation)** / **(new sample)**: a baseline's rollouts start from the state "
        "fitted to frame 1, so their first frames continue the observed clip, or from a draw "
        "of the fitted model's stationary distribution, a new clip as CoopNets draws one "
        "(covariance from the discrete Lyapunov equation P = A P A^T + B B^T when A is stable, "
        "the empirical covariance of the fitted states otherwise)",
        f"- HOSVD's spatial ranks keep {_energy_text(st.hosvd_energy)}; temporal rank "
        "min(40, T/2)",
        "- **mean frame**: every frame is the observed clip's mean frame (what blur scores); its "
        "diversity is 0 by construction",
        "- **next window**: the real frames T+1..2T scored against frames 1..T (what a perfect new "
        "sample scores); only for videos of at least 2T frames, no diversity (one clip); its "
        "memorisation searches only the windows that do not overlap it",
        "- calibration rows (one clip each, no diversity; a statistic that scores one as well as "
        "the next window is fooled by it): **noise** i.i.d. Gaussian pixels with the clip's "
        "per-channel mean and standard deviation, clipped to [0, 1]; **phase-randomised** the "
        "clip's 3-D Fourier amplitudes with random phases (one noise phase field for all "
        "channels, so the luma spectrum is kept), clipped to [0, 1]; **shuffled** the observed "
        "frames in a random order, none in its place; **frozen** the first frame repeated",
        f"- memorisation searches up to {st.memo} frames of the source video; samples and "
        "windows are compared on luma",
        "- PSNR/SSIM cells in the per-clip table are PSNR (dB) / SSIM; `*`: some synthesized "
        f"frames equal the observed ones, their PSNR counts as {PSNR_CAP:g} dB",
    ]
    legend_md = "\n".join(legend)
    text = (f"## Benchmark: means over clips\n\n{head}\n\n{summary_md}\n\n"
            f"## Per clip (PSNR / SSIM)\n\n{per_clip_md}\n\n## Legend\n\n{legend_md}\n")

    detail_rows = []
    for c in clip_results:
        for r in rows:
            res = c["rows"].get(r)
            if res is None or "error" in res:
                continue
            detail_rows.append([c["clip"], _label(r, st)]
                               + [_fmt(res.get(k), spec) for k, _, spec, _ in COLUMNS]
                               + [_fmt(res.get("max_abs_eig"), "{:.4f}"),
                                  _fmt(res.get("fit_seconds"), "{:.2f}"),
                                  _fmt(res.get("sample_seconds"), "{:.2f}"),
                                  _fmt(res.get("ps_seconds"), "{:.2f}")])
    detail_md = _table(["clip", "method"] + [c[1] for c in COLUMNS]
                       + ["max abs eig", "fit s", "synthesis s", "PS s"], detail_rows)
    markdown = f"{text}\n## Per clip, all statistics\n\n{detail_md}\n"
    return text, markdown


_CSV_FIELDS = ("clip", "row", "label", "frames", "psnr", "ssim", "spectrum", "motion", "color",
               "ps_appearance", "ps_dynamics", "diversity", "memorisation", "psnr_capped_frames",
               "max_abs_eig", "fit_seconds", "sample_seconds", "ps_seconds", "cached", "note")


def _csv(st: Settings, clip_results: list[dict], rows: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, _CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for c in clip_results:
        if c["skip"]:
            w.writerow({"clip": c["clip"], "note": f"skipped: {c['skip']}"})
            continue
        for r in rows:
            res = c["rows"].get(r)
            if res is None:
                continue
            line = {"clip": c["clip"], "row": r, "label": _label(r, st), "frames": c["frames_used"],
                    "note": res.get("error", "")}
            for k in _CSV_FIELDS[4:-1]:
                v = res.get(k)
                line[k] = "" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)
            w.writerow(line)
    return buf.getvalue()


def _versions() -> dict[str, str]:
    import skimage
    import torch

    import dyntex

    return {"dyntex": dyntex.__version__, "torch": torch.__version__, "numpy": np.__version__,
            "opencv": cv2.__version__, "scikit-image": skimage.__version__,
            "python": platform.python_version()}


def _machine() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "machine": platform.machine(),
                            "processor": platform.processor(), "cpu_count": os.cpu_count()}
    try:
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    return info


# --------------------------------------------------------------------------- the benchmark


def _check(st: Settings) -> None:
    if not st.methods:
        raise ConfigError(f"no methods given; choose from {', '.join(METHODS)}")
    unknown = [m for m in st.methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    if st.frames < MIN_FRAMES:
        raise ConfigError(f"--frames must be at least {MIN_FRAMES}, got {st.frames}")
    if st.size < MIN_SIZE:
        raise ConfigError(f"--size must be at least {MIN_SIZE} (the Portilla-Simoncelli "
                          f"statistics' 7x7 correlations need 14 px), got {st.size}")
    if st.samples < 1:
        raise ConfigError(f"--samples must be at least 1, got {st.samples}")
    if not 0.0 < st.hosvd_energy <= 1.0:
        raise ConfigError(f"--hosvd-energy must be in (0, 1], got {st.hosvd_energy}")
    if st.iters is not None and st.iters < 1:
        raise ConfigError(f"--iters must be at least 1, got {st.iters}")
    if st.motion_stride < 1:
        raise ConfigError(f"motion stride must be at least 1, got {st.motion_stride}")
    if st.memo < 2 * st.frames:
        raise ConfigError(f"memo_frames must be at least 2 T = {2 * st.frames}, got {st.memo}")
    if "coop" in st.methods:
        _coop_config(st, st.frames)                # a bad preset / T / S fails before any work


def run_benchmark(data_dir: str | os.PathLike, out: str | os.PathLike = "results",
                  settings: Settings | None = None, **overrides: Any) -> Report:
    """Run the benchmark on the clips of ``data_dir`` and write its outputs to ``out``.

    ``settings`` (or keyword overrides of :class:`Settings` fields) choose methods, clips, T,
    S, K, seed, the CoopNets preset and the options. Writes ``out/table.md``, ``results.csv``,
    ``results.json``, ``side_by_side/<clip>.mp4`` and ``.gif`` (observed | methods, first
    sample) and ``contact_sheet.png``; caches under ``out/cache/``.

    Raises:
        InputError: ``data_dir`` is missing or holds no clip.
        ConfigError: an unknown method or clip name, or unusable settings.
        OutputError: ``out`` cannot be written.
    """
    st = settings if settings is not None else Settings()
    if overrides:
        st = Settings(**{**asdict(st), **overrides})
    st.methods = parse_list(st.methods) or ()
    st.clips = parse_list(st.clips)
    _check(st)
    start = time.perf_counter()
    out = Path(out)
    sources = find_clips(data_dir)
    if all(s.skip for s in sources):
        raise InputError(f"{data_dir}: no usable video, GIF or frame folder found")
    if st.clips:
        names = {s.name for s in sources}
        missing = [c for c in st.clips if c not in names]
        if missing:
            raise ConfigError(f"unknown clip(s) {', '.join(missing)}; {data_dir} has "
                              f"{', '.join(sorted(names))}")
        sources = [s for s in sources if s.name in st.clips]
    if out.exists() and not out.is_dir():
        raise OutputError(f"cannot write results to {out}: it is a file, not a folder")
    cache = out / "cache"
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create {cache}: {e.strerror or e}") from e

    from tqdm.auto import tqdm

    rows = tuple(st.methods) + REFERENCES
    clip_results: list[dict[str, Any]] = []
    bar = tqdm(total=len(sources) * len(st.methods), desc="benchmark", unit="fit",
               disable=not st.progress, dynamic_ncols=True, file=sys.stderr)
    try:
        for src in sources:
            clip_results.append(_run_clip(src, st, cache, rows, bar))
    finally:
        bar.close()

    used = [c for c in clip_results if not c["skip"]]
    summary = _summary(clip_results, rows)
    text, markdown = _render(st, clip_results, summary, rows, len(used))
    paths = _write_outputs(out, st, clip_results, rows, markdown)
    wall = time.perf_counter() - start
    results = {
        "settings": {**{k: v for k, v in asdict(st).items() if k != "progress"},
                     "memo_frames": st.memo, "data_dir": str(data_dir), "psnr_cap": PSNR_CAP},
        "coop_config": _coop_config(st, st.frames).to_dict() if "coop" in st.methods else None,
        "versions": _versions(), "machine": _machine(),
        "wall_seconds": wall,
        "summary": summary,
        "clips": [{k: v for k, v in c.items() if k not in ("rows", "observed")} | {
            "rows": {r: {k: v for k, v in res.items() if k != "first_sample"}
                     for r, res in c["rows"].items()}} for c in clip_results],
        "metric_docs": metrics.METRIC_DOCS,
    }
    paths["results.json"] = out / "results.json"
    _write_json(paths["results.json"], _clean(results))
    from dyntex.eval.report import write_report

    paths["report.html"] = write_report(out, _clean(results), clip_results, st, text)
    return Report(text=text, markdown=markdown, results=_clean(results), paths=paths,
                  wall_seconds=wall)


def _run_clip(src: ClipSource, st: Settings, cache: Path, rows: Sequence[str], bar) -> dict:
    base = {"clip": src.name, "source": str(src.path) if src.path else None, "skip": src.skip,
            "notes": list(src.notes), "frames_used": 0, "fps": None, "rows": {}}
    if src.skip:
        bar.update(len(st.methods))
        return base
    clip = _ClipData(src, st, cache)
    try:
        meta = clip.meta
    except DyntexError as e:
        bar.update(len(st.methods))
        return {**base, "skip": str(e)}
    base.update(frames_used=meta["frames_used"], fps=meta["fps"], notes=meta["notes"],
                skip=meta["skip"], frames_decoded=meta["frames_decoded"],
                source_frames=meta["source_frames"])
    if meta["skip"]:
        bar.update(len(st.methods))
        return base
    base["observed"] = clip.observed
    base["clip_key"] = clip.key
    for method in rows:
        if method in REFERENCES:
            if method == "nextwindow" and not meta["has_next_window"]:
                continue
        else:
            bar.set_postfix_str(f"{src.name}: {method}")
        try:
            base["rows"][method] = _run_entry(method, clip, st, cache)
        except DyntexError as e:
            base["rows"][method] = {"error": str(e).splitlines()[0]}
        if method not in REFERENCES:
            bar.update(1)
    base["ps_observed_seconds"] = clip.ps_seconds      # 0 when every score came from the cache
    return base


def _write_outputs(out: Path, st: Settings, clip_results: list[dict], rows: Sequence[str],
                   markdown: str) -> dict[str, Path]:
    from dyntex.video import contact_sheet, write_png, write_video

    paths = {"table.md": out / "table.md", "results.csv": out / "results.csv"}
    _write_text(paths["table.md"], markdown)
    _write_text(paths["results.csv"], _csv(st, clip_results, rows))
    sheet_rows, sheet_labels = [], []
    for c in clip_results:
        shown = [m for m in st.methods if m in c["rows"] and "error" not in c["rows"][m]]
        if c["skip"] or c.get("observed") is None:
            continue
        panels = [_to_uint8(c["observed"])] + [_to_uint8(c["rows"][m]["first_sample"])
                                               for m in shown]
        labels = ["observed"] + [_label(m, st) for m in shown]
        fps = c["fps"] or 25.0
        # Rewriting unchanged videos is most of a fully cached rerun (GIF palettes are slow):
        # skip them when their inputs (the cache entries shown, labels, fps) are the same.
        digest = _digest([c["clip_key"], [c["rows"][m]["key"] for m in shown], labels, fps])
        stamp = out / "cache" / c["clip"] / "side_by_side.digest"
        targets = {ext: out / "side_by_side" / f"{c['clip']}.{ext}" for ext in ("mp4", "gif")}
        fresh = all(t.exists() for t in targets.values()) and stamp.exists() \
            and stamp.read_text().strip() == digest
        if not fresh:
            stamp.unlink(missing_ok=True)
            video = side_by_side(panels, labels)
            for ext, target in targets.items():
                write_video(target, video, fps)
            _write_text(stamp, digest + "\n")
        for ext, target in targets.items():
            paths[f"side_by_side/{c['clip']}.{ext}"] = target
        sheet_rows += panels
        sheet_labels += [f"{c['clip']} {lab}" for lab in labels]
    if sheet_rows:
        paths["contact_sheet.png"] = write_png(out / "contact_sheet.png",
                                               contact_sheet(sheet_rows, 8, sheet_labels))
    return paths
