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

This module runs the benchmark; :mod:`.settings` holds its settings, row names and columns,
:mod:`.runs` one clip's data and each (clip, method) fit, sample, score and cache entry,
:mod:`.tables` the tables and media, :mod:`.report` the ``report.html`` page.
"""
from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from dyntex.errors import ConfigError, DyntexError, InputError, OutputError
from dyntex.eval import metrics
from dyntex.eval.runs import ConditionalRun, _ClipData, _coop_config, _run_entry
# the names this module has always offered (dyntex.eval.report and the tests use them)
from dyntex.eval.settings import (BASELINE_METHODS, CALIBRATION, COLUMNS, DASH, LABELS,  # noqa: F401
                                  METHODS, MIN_FRAMES, MIN_SIZE, NEURAL_METHODS, PSNR_CAP, REFERENCES, _DOC_KEYS,
                                  Report, Settings, _clean, _fmt, _write_json, parse_list)
from dyntex.eval.tables import _label, _render, cooperation_counts, gap_curve, _summary, _to_uint8, _write_outputs, side_by_side  # noqa: F401
from dyntex.inputs import ClipSource, find_clips

__all__ = ["BASELINE_METHODS", "LABELS", "METHODS", "MIN_FRAMES", "REFERENCES", "Report",
           "Settings", "parse_list", "run_benchmark"]


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
    if any(m in NEURAL_METHODS for m in st.methods):
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
    conditional = _conditional_run(sources, st, cache) if "coop-conditional" in st.methods else None
    clip_results: list[dict[str, Any]] = []
    bar = tqdm(total=len(sources) * len(st.methods), desc="benchmark", unit="fit",
               disable=not st.progress, dynamic_ncols=True, file=sys.stderr)
    try:
        for src in sources:
            clip_results.append(_run_clip(src, st, cache, rows, bar, conditional))
    finally:
        bar.close()
    classification = None
    if conditional is not None:
        try:
            classification = conditional.classification()
        except DyntexError as e:
            classification = {"error": str(e).splitlines()[0]}

    used = [c for c in clip_results if not c["skip"]]
    summary = _summary(clip_results, rows)
    text, markdown = _render(st, clip_results, summary, rows, len(used), classification)
    paths = _write_outputs(out, st, clip_results, rows, markdown)
    wall = time.perf_counter() - start
    results = {
        "settings": {**{k: v for k, v in asdict(st).items() if k != "progress"},
                     "memo_frames": st.memo, "data_dir": str(data_dir), "psnr_cap": PSNR_CAP},
        "coop_config": _coop_config(st, st.frames).to_dict()
        if any(m in NEURAL_METHODS for m in st.methods) else None,
        "versions": _versions(), "machine": _machine(),
        "wall_seconds": wall,
        "summary": summary,
        "gap_curve": gap_curve(clip_results),
        "cooperation": cooperation_counts(clip_results),
        "conditional": classification,
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


def _conditional_run(sources: list[ClipSource], st: Settings, cache: Path) -> ConditionalRun:
    """The one conditional model over the usable clips (trained when first needed)."""
    clips = []
    for src in sources:
        if src.skip:
            continue
        clip = _ClipData(src, st, cache)
        try:
            if not clip.meta["skip"]:
                clips.append(clip)
        except DyntexError:
            continue
    return ConditionalRun(clips, st, cache)


def _run_clip(src: ClipSource, st: Settings, cache: Path, rows: Sequence[str], bar,
              conditional: ConditionalRun | None = None) -> dict:
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
            base["rows"][method] = _run_entry(method, clip, st, cache, conditional)
        except DyntexError as e:
            base["rows"][method] = {"error": str(e).splitlines()[0]}
        if method not in REFERENCES:
            bar.update(1)
    base["ps_observed_seconds"] = clip.ps_seconds      # 0 when every score came from the cache
    return base


