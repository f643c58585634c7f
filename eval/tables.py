"""The benchmark's tables (text, Markdown, CSV) and media (side-by-side videos, contact sheet)."""
from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dyntex.eval import metrics
from dyntex.writing import side_by_side
from dyntex.eval.runs import _baseline_of, coop_description
from dyntex.eval.settings import (BASELINE_METHODS, COLUMNS, DASH, LABELS, NEW, PSNR_CAP, Settings,
                                  _DOC_KEYS, _digest, _fmt, _write_text)

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
            n_clips: int, classification: dict[str, Any] | None = None) -> tuple[str, str]:
    """(printed text, table.md)."""
    mode = "RGB" if st.rgb else "luma"
    coop = f"; CoopNets: {coop_description(st)}" if "coop" in st.methods else ""
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
        "sample scores); only for videos of at least 2T frames; its diversity is that of K real "
        "windows of the video (frames 1..T, T+1..2T, ...), the reference of **diversity / "
        "real**; its memorisation searches only the windows that do not overlap it",
        "- **CoopNets + Langevin**: CoopNets' samples (the same latents) after l descriptor "
        "Langevin steps; **descriptor alone**: the descriptor trained without a generator, "
        "by persistent Langevin chains started at the reference mean (STGConvNet), its samples "
        "the chains' final states, so its fit time is also its synthesis time; **generator "
        "alone**: the generator trained by alternating back-propagation (Langevin inference "
        "of the observed clip's latent, then regression); all with CoopNets' networks, "
        "settings, iterations and seed",
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
            f"## Per clip (PSNR / SSIM)\n\n{per_clip_md}\n\n{_cooperation_section(clip_results)}"
            f"{_gap_section(clip_results)}"
            f"{_classification_section(classification)}"
            f"## Legend\n\n{legend_md}\n")

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


def gap_curve(clip_results: list[dict]) -> list[dict[str, Any]]:
    """Means over clips, per training step, of the CoopNets runs' gap curves (the generator's
    samples and the same after l Langevin steps; :func:`dyntex.eval.runs._gap_point`)."""
    by_step: dict[int, list[dict]] = {}
    for c in clip_results:
        for point in (c["rows"].get("coop") or {}).get("gap_curve") or []:
            by_step.setdefault(point["step"], []).append(point)
    return [{"step": step, "clips": len(points),
             **{row: {k: float(np.mean([p[row][k] for p in points]))
                      for k in ("spectrum", "motion", "color")}
                for row in ("coop", "coop+langevin")}}
            for step, points in sorted(by_step.items())]


def _gap_section(clip_results: list[dict]) -> str:
    """RQ4: does the generator absorb the descriptor's Langevin revision as it trains?"""
    curve = gap_curve(clip_results)
    if not curve:
        return ""
    rows = [[str(p["step"]), str(p["clips"])]
            + [f"{p['coop'][k]:.3f} / {p['coop+langevin'][k]:.3f}"
               for k in ("spectrum", "motion", "color")] for p in curve]
    table = _table(["step", "clips", "spectrum", "motion", "colour"], rows)
    return ("## CoopNets over training: generator / generator + l Langevin steps\n\n"
            "Means over clips of the distances of K generator samples (the benchmark's latents) "
            "and of the same after l descriptor Langevin steps; a gap that closes means the "
            f"generator has learned what the MCMC adds.\n\n{table}\n\n")


_DIRECTION = {"spectrum": -1, "motion": -1, "color": -1, "ps_appearance": -1, "ps_dynamics": -1,
              "diversity_ratio": 1}
TIE = 0.05   # relative difference below which two rows tie on a clip


def cooperation_counts(clip_results: list[dict]) -> dict[str, dict[str, list[int]]]:
    """RQ1 per statistic: on how many clips CoopNets beats, ties (within ``TIE`` relative) or
    loses to each network trained alone: {statistic: {"descriptor": [wins, ties, losses], ...}}."""
    out: dict[str, dict[str, list[int]]] = {}
    for key, sign in _DIRECTION.items():
        for alone in ("descriptor", "generator"):
            counts = [0, 0, 0]
            for c in clip_results:
                a, b = (c["rows"].get(m) or {} for m in ("coop", alone))
                if a.get(key) is None or b.get(key) is None:
                    continue
                diff = sign * (a[key] - b[key]) / max(abs(a[key]), abs(b[key]), 1e-12)
                counts[0 if diff > TIE else 1 if diff >= -TIE else 2] += 1
            if sum(counts):
                out.setdefault(key, {})[alone] = counts
    return out


def _cooperation_section(clip_results: list[dict]) -> str:
    counts = cooperation_counts(clip_results)
    if not counts:
        return ""
    names = {k: n for k, _, _, n in COLUMNS}
    rows = [[names[key]] + [" / ".join(map(str, by.get(alone, ()))) or DASH
                            for alone in ("descriptor", "generator")]
            for key, by in counts.items()]
    table = _table(["statistic", "vs descriptor alone", "vs generator alone"], rows)
    return ("## Cooperation vs each network alone\n\n"
            f"Clips on which CoopNets wins / ties (within {100 * TIE:g} %) / loses against the "
            "network trained alone, per statistic (check memorisation before reading a win of "
            f"the generator alone: on one clip it can copy its training clip).\n\n{table}\n\n")


def _classification_section(result: dict[str, Any] | None) -> str:
    """RQ5: how well the conditional model's class energies tell held-back windows apart."""
    if not result:
        return ""
    if "error" in result:
        return f"## Conditional model\n\nnot trained: {result['error']}\n\n"
    rows = [[name, str(c["windows"]), f"{c['accuracy_f']:.2f}", f"{c['accuracy_full']:.2f}"]
            for name, c in result["per_clip"].items()]
    rows.append(["all", str(result["windows"]), _fmt(result["accuracy_f"], "{:.2f}"),
                 _fmt(result["accuracy_full"], "{:.2f}")])
    table = _table(["clip (class)", "held-back windows", "accuracy by f(Y; θ_c)",
                    "accuracy by f(Y; θ_c) − ‖Y − μ_c‖² / 2s²"], rows)
    return ("## Conditional model: classification by energy\n\n"
            f"One class-conditional model over {len(result['labels'])} clips "
            f"({result['iters']} iterations, {_fmt(result.get('fit_seconds'), '{:.0f}')} s); "
            "real windows it never saw (frames T+1..2T, ...) classified by their highest class "
            f"energy (chance {result['chance']:.2f}); the log-partition functions are unknown "
            f"and left out.\n\n{table}\n\n")


_CSV_FIELDS = ("clip", "row", "label", "frames", "psnr", "ssim", "spectrum", "motion", "color",
               "ps_appearance", "ps_dynamics", "diversity", "diversity_ratio", "memorisation", "psnr_capped_frames",
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
