"""One clip's data, and one (clip, method) entry: fit, sample, score, cached under
``RESULTS_DIR/cache/`` (see :mod:`dyntex.eval.benchmark` for the protocol)."""
from __future__ import annotations

import json
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from dyntex.eval import calibration, metrics
from dyntex.eval.baselines import BASELINES
from dyntex.eval.loading import read_head_tail
from dyntex.errors import ConfigError
from dyntex.eval.settings import (BASELINE_METHODS, CACHE_VERSION, CALIBRATION,
                                  COOP_PROTOCOL_KEYS, METHODS, METRICS_VERSION, MIN_FRAMES,
                                  NEURAL_METHODS, NEW, PSNR_CAP,
                                  REFERENCES, Settings,
                                  _clean, _digest, _single_threaded_blas, _write_json, _write_npy)
from dyntex.inputs import ClipSource

# --------------------------------------------------------------------------- one clip's data


class _ClipData:
    """A clip's observed frames, source video and metadata, decoded lazily and cached.

    The metadata and the observed frames (float32, T x S x S x 3) are cached under
    ``cache/<clip>/clip-<key>/``; the longer video (for memorisation and the next window) is
    decoded only when a score that needs it is missing from the cache.
    """

    def __init__(self, src: ClipSource, st: Settings, cache: Path):
        self.src, self.st = src, st
        self.key = _digest({"v": CACHE_VERSION, "source": src.identity(),
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

    def windows(self, n: int) -> list[np.ndarray]:
        """Up to ``n`` non-overlapping T-frame windows of the decoded video (frames 1..T,
        T+1..2T, ...; the first is the observed clip), loaded as the observed frames are."""
        if self._head is None:
            self._decode()
        frames, T = np.concatenate([self._head, self._tail]), self.T
        return [frames[k * T:(k + 1) * T] for k in range(min(n, len(frames) // T))] if T else []

    def real_diversity(self) -> float | None:
        """Diversity of the video's first K non-overlapping T-frame windows (None with fewer
        than 2): how much the texture itself varies."""
        key = f"real_diversity_k{self.st.samples}"
        if key not in self.meta:
            windows = self.windows(self.st.samples)
            self._meta[key] = metrics.diversity(windows) if len(windows) >= 2 else None
            _write_json(self.dir / "meta.json", self._meta)
        return self.meta[key]

    def next_window(self) -> np.ndarray | None:
        if not self.meta["has_next_window"]:
            return None
        if self._head is None:
            self._decode()
        return self._head[self.T:2 * self.T]


# --------------------------------------------------------------------------- methods


def _coop_config(st: Settings, frames: int):
    from dyntex.config import MOTION_MIN_FRAMES, make_config

    fixed = set(st.coop_settings) & set(COOP_PROTOCOL_KEYS)
    if fixed:
        raise ConfigError(f"the benchmark sets {', '.join(sorted(fixed))} itself (--preset, "
                          f"--frames, --size, --iters, --seed, --device); remove it from the "
                          f"CoopNets settings")
    # a clip shorter than the motion branch needs trains without it (README, Protocol)
    short = {"motion_channels": 0} if frames < MOTION_MIN_FRAMES else {}
    return make_config(st.preset, **{**st.coop_settings, **short}, frames=frames, size=st.size,
                       iters=st.iters, seed=st.seed, device=st.device, window="first")


def coop_description(st: Settings) -> str:
    """``preset P, <--config settings>, N iterations``: what CoopNets trained, for legends."""
    extra = "".join(f", {k} {v}" for k, v in sorted(st.coop_settings.items()))
    return f"preset {st.preset}{extra}, {_coop_config(st, st.frames).iters} iterations"


# Config settings added after results were cached: at these values they leave cache keys as
# they were (a new setting at its default changes no result).
_ADDED_SETTINGS = {"labels": "", "persistent": 0, "noise_weight": 0.2, "fine_channels": 0,
                   "colour_sigma": 0.0, "fine_upsample": "transposed", "chroma_sigma": 0.0,
                   "data_noise": 0.0, "noise_flow": 0.0,
                   "noise_flow_field": "local", "marginal_weight": 0.0,
                   "flow_weight": 0.0}


def _config_key(cfg) -> dict[str, Any]:
    key = {k: v for k, v in cfg.to_dict().items()
           if not (k in _ADDED_SETTINGS and v == _ADDED_SETTINGS[k])}
    # before des_fine_channels existed, fine_channels built both networks' full-resolution
    # stages: a key without it means des_fine_channels == fine_channels
    if key["des_fine_channels"] == cfg.fine_channels:
        del key["des_fine_channels"]
    return key


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


GAP_POINTS = 4        # steps of the coop/coop+langevin gap curve: iters/4, iters/2, ...
COOP_VERSION = 2      # 2: the run keeps its last checkpoint and records the gap curve


def _observed_tensor(observed: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(observed)).permute(3, 0, 1, 2)[None] * 2.0 - 1.0


def _gap_point(model, observed: np.ndarray, st: Settings, step: int) -> dict[str, Any]:
    """Spectrum, motion and colour distances of K generator samples (latents from the benchmark
    seed) and of the same samples after l descriptor Langevin steps, at one training step."""
    import torch

    from dyntex.video import to_unit

    g = torch.Generator(device=model.device).manual_seed(st.seed)
    y = model.synthesize(st.samples, generator=g)
    point: dict[str, Any] = {"step": step}
    for name, clips in (("coop", y), ("coop+langevin", model.revise(y, generator=g))):
        unit = to_unit(clips)
        point[name] = {
            "spectrum": float(np.mean([metrics.spectrum_distance(c, observed) for c in unit])),
            "motion": float(np.mean([metrics.motion_distance(c, observed, stride=st.motion_stride)
                                     for c in unit])),
            "color": float(np.mean([metrics.color_distance(c, observed) for c in unit]))}
    return point


def _fit_coop(observed: np.ndarray, st: Settings, run_dir: Path) -> tuple[np.ndarray, dict]:
    """Train CoopNets on the observed clip (run folder ``run_dir``, resumable); K fresh samples.

    Training stops at ``GAP_POINTS`` steps to score the generator's samples against the same
    after l descriptor Langevin steps (the curve is kept in ``run_dir/gap_curve.json``)."""
    import torch

    from dyntex.trainer import Trainer, read_metrics
    from dyntex.video import to_unit

    cfg = _coop_config(st, len(observed))
    trainer = Trainer(cfg, run_dir=run_dir, resume=True, progress=st.progress, previews=False)
    resumed_at = trainer.step
    curve_path = run_dir / "gap_curve.json"
    try:
        curve = [p for p in json.loads(curve_path.read_text()) if p["step"] <= resumed_at]
    except (OSError, ValueError, TypeError, KeyError):
        curve = []
    x = _observed_tensor(observed)
    t0 = time.perf_counter()
    for point in sorted({max(1, cfg.iters * i // GAP_POINTS) for i in range(1, GAP_POINTS + 1)}):
        if point <= trainer.step:
            continue
        model = trainer.fit(x, iters=point)
        with _single_threaded_blas():
            curve.append(_gap_point(model, observed, st, point))
        _write_json(curve_path, curve)
    model = trainer.fit(x)                      # nothing left unless the points missed the end
    t1 = time.perf_counter()
    fit_seconds = t1 - t0
    if resumed_at:
        try:
            fit_seconds = float(read_metrics(run_dir)[-1]["seconds"])
        except (OSError, IndexError, KeyError, ValueError):
            pass
    g = torch.Generator(device=trainer.device).manual_seed(st.seed)
    out = model.synthesize(st.samples, generator=g)
    t2 = time.perf_counter()
    return to_unit(out), {"fit_seconds": fit_seconds, "sample_seconds": t2 - t1,
                          "max_abs_eig": None, "iters": cfg.iters, "device": str(trainer.device),
                          "resumed_at_step": resumed_at, "gap_curve": curve}


def _coop_langevin(clip: _ClipData, st: Settings, cache: Path) -> tuple[np.ndarray, dict]:
    """CoopNets' samples (same latents) after l descriptor Langevin steps, from the coop entry's
    trained model (trained first if it is not cached)."""
    import torch

    from dyntex.trainer import load_model
    from dyntex.video import to_unit

    coop = _run_entry("coop", clip, st, cache)
    model, _ = load_model(cache / clip.src.name / f"coop-{coop['key']}" / "run",
                          device=_coop_config(st, clip.T).device)
    t0 = time.perf_counter()
    g = torch.Generator(device=model.device).manual_seed(st.seed)
    out = model.synthesize(st.samples, langevin_steps=model.config.langevin_steps, generator=g)
    return to_unit(out), {"fit_seconds": coop.get("fit_seconds"),
                          "sample_seconds": time.perf_counter() - t0, "max_abs_eig": None}


HELD_BACK_WINDOWS = 7  # windows after the observed one classified by the conditional model


class ConditionalRun:
    """One class-conditional CoopNets model over every clip of the benchmark that has T frames
    (the clip names are its classes), trained once under ``cache/_conditional/<key>/run``
    (resumable); the ``coop-conditional`` row samples each clip's class from it, and
    :meth:`classification` classifies held-back windows of the videos by their class energies."""

    def __init__(self, clips: list[_ClipData], st: Settings, cache: Path):
        self.st = st
        self.clips = [c for c in clips if c.T == st.frames]
        self.labels = [c.src.name for c in self.clips]
        self.config = _coop_config(st, st.frames).replace(labels=",".join(self.labels)) \
            if len(self.clips) >= 2 else None
        self.key = _digest({"v": CACHE_VERSION, "coop_version": COOP_VERSION, "seed": st.seed,
                            "clips": [c.key for c in self.clips],
                            "config": None if self.config is None else _config_key(self.config)})
        self.dir = cache / "_conditional" / self.key
        self._model = None
        self.fit_seconds: float | None = None

    def model(self):
        """The trained model (trained here the first time; a finished run is only loaded)."""
        if self._model is None:
            from dyntex.clips import ClassWindows, TensorClips
            from dyntex.trainer import Trainer, read_metrics

            if self.config is None:
                raise ConfigError(f"the conditional model needs at least 2 clips of "
                                  f"T={self.st.frames} frames")
            run = self.dir / "run"
            trainer = Trainer(self.config, run_dir=run, resume=True, progress=self.st.progress,
                              previews=False)
            data = ClassWindows([TensorClips(_observed_tensor(c.observed)) for c in self.clips])
            self._model = trainer.fit(data)
            _keep_last_checkpoint(run)
            try:
                self.fit_seconds = float(read_metrics(run)[-1]["seconds"])
            except (OSError, IndexError, KeyError, ValueError):
                self.fit_seconds = None
        return self._model

    def samples(self, clip: _ClipData) -> tuple[np.ndarray, dict]:
        """K samples of ``clip``'s class (latents from the benchmark seed)."""
        import torch

        from dyntex.errors import ConfigError
        from dyntex.video import to_unit

        if clip.src.name not in self.labels:
            raise ConfigError(f"not in the conditional model: {clip.T} frames, not T="
                              f"{self.st.frames}")
        model = self.model()
        t0 = time.perf_counter()
        g = torch.Generator(device=model.device).manual_seed(self.st.seed)
        out = model.synthesize(self.st.samples, generator=g,
                               labels=[self.labels.index(clip.src.name)] * self.st.samples)
        return to_unit(out), {"fit_seconds": None, "sample_seconds": time.perf_counter() - t0,
                              "max_abs_eig": None, "conditional_run": self.key}

    def classification(self) -> dict[str, Any] | None:
        """Classification by energy of up to ``HELD_BACK_WINDOWS`` real windows per clip that
        training never saw (frames T+1..2T, ...): the share whose highest class energy is their
        own class, by the descriptor's f(Y; theta_c) alone and by the class model's whole
        unnormalised log-density f(Y; theta_c) - |Y - mu_c|^2 / (2 s^2) (the log-partition
        functions, unknown, are left out of both). Cached in ``classification.json``."""
        if self.config is None:
            return None
        path = self.dir / "classification.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            pass
        import torch

        from dyntex.langevin import reference_energy

        model = self.model()
        cfg = self.config
        per_clip, hits_f, hits_full = {}, 0, 0
        for i, clip in enumerate(self.clips):
            windows = clip.windows(HELD_BACK_WINDOWS + 1)[1:]
            if not windows:
                continue
            with torch.no_grad():
                y = torch.cat([_observed_tensor(w) for w in windows]).to(model.device)
                f = model.descriptor.energies(y)
                full = f - torch.stack([reference_energy(y, cfg.ref_sigma, mu, cfg.colour_sigma,
                                                         cfg.chroma_sigma)
                                        for mu in model.ref_mean], 1)
            right_f = int((f.argmax(1) == i).sum())
            right_full = int((full.argmax(1) == i).sum())
            hits_f, hits_full = hits_f + right_f, hits_full + right_full
            per_clip[clip.src.name] = {"windows": len(windows), "accuracy_f": right_f / len(windows),
                                       "accuracy_full": right_full / len(windows)}
        n = sum(c["windows"] for c in per_clip.values())
        result = {"labels": self.labels, "chance": 1.0 / len(self.labels), "windows": n,
                  "accuracy_f": hits_f / n if n else None,
                  "accuracy_full": hits_full / n if n else None, "per_clip": per_clip,
                  "fit_seconds": self.fit_seconds, "iters": self.config.iters}
        _write_json(path, result)
        return result


def _keep_last_checkpoint(run_dir: Path) -> None:
    """A finished run keeps its last checkpoint (the trained model, for coop+langevin and
    `dyntex synthesize`); the older ones were only needed to resume an interrupted training."""
    from dyntex.runfolder import checkpoint_paths

    for old in checkpoint_paths(run_dir)[:-1]:
        old.unlink(missing_ok=True)


def _fit_alone(method: str, observed: np.ndarray, st: Settings) -> tuple[np.ndarray, dict]:
    """One network trained alone (:mod:`dyntex.solo`) with CoopNets' networks, settings, budget
    and seeds; K samples (the descriptor's: its K persistent chains, so no separate synthesis)."""
    import torch

    from dyntex import solo
    from dyntex.coop import CoopNets
    from dyntex.trainer import resolve_device
    from dyntex.video import to_unit

    cfg = _coop_config(st, len(observed))
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)                 # network initialisation, as the trainer's
    model = CoopNets(cfg).to(device)
    x = _observed_tensor(observed).to(device)
    model.init_from_data(x[0].mean(dim=1))
    g = torch.Generator(device=device).manual_seed(cfg.seed)
    t0 = time.perf_counter()
    if method == "descriptor":
        out = solo.train_descriptor(model, x, chains=max(cfg.chains, st.samples), generator=g,
                                    progress=st.progress)[:st.samples]
        t1 = t2 = time.perf_counter()
    else:
        solo.train_generator(model, x, generator=g, progress=st.progress)
        t1 = time.perf_counter()
        with torch.no_grad():
            out = model.synthesize(st.samples, generator=torch.Generator(device=device)
                                   .manual_seed(st.seed))
        t2 = time.perf_counter()
    return to_unit(out), {"fit_seconds": t1 - t0,
                          "sample_seconds": None if method == "descriptor" else t2 - t1,
                          "max_abs_eig": None, "iters": cfg.iters, "device": str(device)}


def _entry_params(method: str, st: Settings, clip: _ClipData) -> dict[str, Any]:
    """The settings a method's samples depend on (its cache key is their digest)."""
    base = {"v": CACHE_VERSION, "clip": clip.key, "method": method}
    if method in BASELINE_METHODS:
        params = {**base, "K": st.samples, "seed": st.seed, "noise": st.noise,
                  "stabilize": st.stabilize}
        if _baseline_of(method)[0] == "hosvd":
            params["hosvd_energy"] = st.hosvd_energy
        return params
    if method in NEURAL_METHODS:
        return {**base, "K": st.samples, "seed": st.seed, "coop_version": COOP_VERSION,
                "config": _config_key(_coop_config(st, clip.T))}
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
    if method == "coop+langevin":
        return _coop_langevin(clip, st, entry.parent.parent)
    if method in ("descriptor", "generator"):
        return _fit_alone(method, clip.observed, st)
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


def _run_entry(method: str, clip: _ClipData, st: Settings, cache: Path,
               conditional: ConditionalRun | None = None) -> dict[str, Any]:
    """A method's (or reference's) samples and scores on one clip, from the cache or computed
    (``coop-conditional`` samples from ``conditional``)."""
    params = _entry_params(method, clip=clip, st=st)
    if method == "coop-conditional":
        assert conditional is not None
        params["conditional_run"] = conditional.key
    key = _digest(params)
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
        with nullcontext() if method in NEURAL_METHODS else _single_threaded_blas():
            samples, timing = (conditional.samples(clip) if method == "coop-conditional"
                               else _produce(method, clip, st, entry))
        info = {"key": key, "method": method, **timing, "metrics": {}}
        _write_npy(samples_path, samples)
        _write_json(info_path, _clean(info))
        cached = False
        _keep_last_checkpoint(entry / "run")
    mkey = _metric_key(st)
    if mkey not in info.get("metrics", {}):
        with _single_threaded_blas():
            info.setdefault("metrics", {})[mkey] = _score(method, samples, clip, st)
        _write_json(info_path, _clean(info))
    scores = dict(info["metrics"][mkey])
    # Diversity as a share of the texture's own (the next window's row shows the latter).
    if method == "nextwindow" or scores.get("diversity") is not None:
        real = clip.real_diversity()
        if method == "nextwindow":
            scores["diversity"] = real
        scores["diversity_ratio"] = scores["diversity"] / real if real else None
    result = {k: v for k, v in info.items() if k not in ("metrics", "method")}
    return {**result, **scores, "cached": cached, "first_sample": samples[0]}


# --------------------------------------------------------------------------- outputs


