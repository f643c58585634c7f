"""The benchmark's ``report.html``: one self-contained page of a ``dyntex benchmark`` run.

The page holds the settings and the machine, the summary table with the reference rows, per
clip the observed clip and every row's first sample as looping, muted, autoplaying videos side
by side with that clip's numbers under each, one bar chart per statistic (methods as bars per
clip, reference rows as marks) and the legend. It reads the rows, statistics and labels the
benchmark produced generically (whatever rows and ``COLUMNS`` it has), so new rows or statistics
appear without changes here.

Media go to ``RESULTS_DIR/report/`` under content-derived names (a video is named by its cache
entry's key, a chart by a digest of what it plots), so a rerun from the cache rewrites nothing
that did not change; files there that the page no longer shows are removed. Videos are H.264
mp4 (:func:`dyntex.video.write_video`), which Debian's Chromium plays; charts are matplotlib PNGs.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dyntex.report import definitions, esc, href, number, page, table, write_html
from dyntex.eval import benchmark as bm

CHART_VERSION = 3          # bump when the chart drawing changes, so cached charts are redrawn
MEDIA = "report"           # folder beside report.html holding its videos and charts
# Reference rows as marks: (colour, line style), cycled.
_MARKS = (("black", "-"), ("dimgray", "--"), ("saddlebrown", ":"), ("purple", "-."),
          ("darkgreen", (0, (5, 1))), ("navy", (0, (1, 1))))


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _md_inline(text: str) -> str:
    """The benchmark legend's inline Markdown (**bold**, `code`) as HTML."""
    out = esc(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def _section(text: str, heading: str) -> str:
    """The Markdown between ``## heading`` and the next ``## `` heading ('' if absent)."""
    m = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    return m.group(1).strip() if m else ""


class _Page:
    """Collects the media files the page uses, writing only those not already there."""

    def __init__(self, out: Path):
        self.out, self.used = out, set()

    def video(self, rel: str, clip: np.ndarray, fps: float) -> str:
        from dyntex.video import write_video

        path = self.out / MEDIA / rel
        if not path.is_file():
            write_video(path, bm._to_uint8(clip), fps)
        self.used.add(path)
        return f"{MEDIA}/{rel}"

    def chart(self, name: str, draw: Any) -> str:
        from dyntex.curves import save_figure

        path = self.out / MEDIA / "charts" / name
        if not path.is_file():
            save_figure(draw(), path)
        self.used.add(path)
        return f"{MEDIA}/charts/{name}"

    def prune(self) -> None:
        """Remove files under ``report/`` that this page does not show, and empty folders."""
        root = self.out / MEDIA
        if not root.is_dir():
            return
        for p in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if p.is_file() and p not in self.used:
                p.unlink(missing_ok=True)
            elif p.is_dir() and not any(p.iterdir()):
                p.rmdir()


def _clip_numbers(res: dict[str, Any]) -> str:
    """The per-clip numbers of one row, as a small two-column table."""
    cells = [(title, bm._fmt(res.get(key), spec) + ("*" if key == "psnr" and res.get("psnr_capped_frames") else ""))
             for key, title, spec, _ in bm.COLUMNS]
    for key, title, spec in (("max_abs_eig", "max |eig|", "{:.4f}"), ("fit_seconds", "fit s", "{:.2f}"),
                             ("sample_seconds", "synthesis s", "{:.2f}")):
        if res.get(key) is not None:
            cells.append((title, bm._fmt(res[key], spec)))
    return "<table>" + "".join(f"<tr><th>{esc(t)}</th><td>{esc(v)}</td></tr>" for t, v in cells) + "</table>"


def _bar_chart(title: str, clips: list[str], values: dict[str, list[float | None]],
               labels: dict[str, str], colours: dict[str, str], references: Sequence[str]):
    """Methods as bars per clip, reference rows as horizontal marks across each clip's group."""
    from dyntex.curves import apply_scale, new_figure

    methods = [r for r in values if r not in references]
    fig = new_figure(max(6.0, 1.0 * len(clips) + 3.5), 3.4)
    ax = fig.subplots()
    width = 0.8 / max(1, len(methods))
    x = np.arange(len(clips))
    for j, row in enumerate(methods):
        shown = [(x[i] - 0.4 + (j + 0.5) * width, y) for i, y in enumerate(values[row]) if y is not None]
        ax.bar([a for a, _ in shown], [b for _, b in shown], width * 0.92, label=labels[row],
               color=colours[row])
    for k, row in enumerate(r for r in values if r in references):
        colour, style = _MARKS[k % len(_MARKS)]
        shown = [(x[i], y) for i, y in enumerate(values[row]) if y is not None]
        ax.hlines([y for _, y in shown], [a - 0.45 for a, _ in shown], [a + 0.45 for a, _ in shown],
                  colors=colour, linestyles=style, linewidth=2, label=labels[row])
    every = [y for ys in values.values() for y in ys if y is not None]
    apply_scale(ax, every, title)
    if ax.get_yscale() == "log":                 # bars start at the bottom: keep the smallest one visible
        ax.set_ylim(bottom=min(every) / 1.6)
    slanted = len(clips) > 4
    ax.set_xticks(x, clips, rotation=30 if slanted else 0, ha="right" if slanted else "center", fontsize=8)
    ax.tick_params(axis="y", which="both", labelsize=8)
    ax.set_title(f"{title}, per clip", fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              title="bars: methods; lines: references", title_fontsize=7)
    return fig


def write_report(out: str | Path, results: dict[str, Any], clip_results: list[dict[str, Any]],
                 st: "bm.Settings", text: str) -> Path:
    """Write ``out/report.html`` (and its media under ``out/report/``); returns the page's path.

    ``results`` is what ``results.json`` holds, ``clip_results`` the benchmark's in-memory
    per-clip results (with the observed clip and each row's first sample), ``text`` the printed
    summary (its legend is reused).
    """
    out = Path(out)
    pg = _Page(out)
    rows = [s["row"] for s in results["summary"]]
    refs = [r for r in rows if r in bm.REFERENCES]

    def label(row: str) -> str:
        try:
            return bm._label(row, st)
        except KeyError:
            return row

    labels = {r: label(r) for r in rows}
    colours = {r: f"C{i % 10}" for i, r in enumerate(r for r in rows if r not in refs)}  # same in every chart
    body = ["<h1>dyntex benchmark</h1>"]
    head = next((p for p in _section(text, "Benchmark: means over clips").split("\n\n")
                 if p and not p.startswith("|")), "")
    if head:
        body.append(f"<p>{_md_inline(head)}</p>")

    # What did not run: skipped clips and failed rows, first, where nobody can miss it.
    problems = [f"<li>clip <b>{esc(c['clip'])}</b> skipped: {esc(c['skip'])}</li>"
                for c in results["clips"] if c.get("skip")]
    problems += [f"<li>clip <b>{esc(c['clip'])}</b>, {esc(labels.get(r, r))} failed: {esc(res['error'])}</li>"
                 for c in results["clips"] for r, res in c.get("rows", {}).items() if "error" in res]
    if problems:
        body.append("<div class=\"note\"><b>Not everything ran.</b><ul>" + "".join(problems)
                    + "</ul>The tables and charts hold the clips and methods that did.</div>")

    # Summary table: means over clips, reference rows in grey.
    header = ["method", "clips"] + [t for _, t, *_ in bm.COLUMNS]
    cells, classes = [], []
    for s in results["summary"]:
        line = [labels[s["row"]], str(s["clips"])]
        for key, _, spec, _ in bm.COLUMNS:
            cell = bm._fmt(s.get(key), spec) if s["clips"] else bm.DASH
            if key == "psnr" and s.get("psnr_capped_frames") and cell != bm.DASH:
                cell += "*"
            line.append(cell)
        cells.append(line)
        classes.append("ref" if s["row"] in refs else "")
    body.append("<h2>Means over clips</h2>"
                + table(header, cells, classes, id="summary")
                + "<p class=\"muted\">Grey rows are references, not methods (see the legend).</p>")

    # Per clip: observed clip and each row's first sample, numbers under each.
    body.append("<h2>Per clip</h2><p class=\"muted\">The observed clip and the first sample of "
                "each method and reference, looping; numbers are this clip's.</p>")
    for c in clip_results:
        name = c["clip"]
        notes = list(c.get("notes") or [])
        body.append(f"<h3 id=\"clip-{esc(name)}\">{esc(name)}</h3>")
        if c.get("skip") or c.get("observed") is None:
            body.append(f"<p class=\"note\">skipped: {esc(c.get('skip') or 'no frames')}</p>")
            continue
        if notes:
            body.append(f"<p class=\"muted\">{esc('; '.join(notes))}</p>")
        fps = c.get("fps") or 25.0
        src = pg.video(f"{name}/observed-{c['clip_key']}.mp4", c["observed"], fps)
        figs = [f"<figure class=\"clip\"><video src=\"{href(src)}\" "
                f"autoplay loop muted playsinline></video><figcaption><b>observed</b> "
                f"({c['frames_used']} frames)</figcaption></figure>"]
        for r in rows:
            res = c["rows"].get(r)
            if res is None:
                continue
            if "error" in res or res.get("first_sample") is None:
                figs.append(f"<figure class=\"clip\"><div class=\"missing\">failed: "
                            f"{esc(res.get('error', 'no sample'))}</div><figcaption><b>{esc(labels[r])}</b>"
                            "</figcaption></figure>")
                continue
            src = pg.video(f"{name}/{r}-{res['key']}.mp4", res["first_sample"], fps)
            figs.append(f"<figure class=\"clip\"><video src=\"{href(src)}\" autoplay loop muted "
                        f"playsinline></video><figcaption><b>{esc(labels[r])}</b>"
                        f"{' (reference)' if r in refs else ''}{_clip_numbers(res)}</figcaption></figure>")
        body.append("<div class=\"row\">" + "".join(figs) + "</div>")

    # One chart per statistic.
    scored = [c for c in results["clips"] if not c.get("skip") and c.get("rows")]
    body.append("<h2>Statistics per clip</h2>")
    if scored:
        names = [c["clip"] for c in scored]
        docs = results.get("metric_docs") or {}
        charts = []
        for key, title, *_ in bm.COLUMNS:
            values = {r: [(c["rows"].get(r) or {}).get(key) for c in scored] for r in rows}
            values = {r: v for r, v in values.items() if any(y is not None for y in v)}
            if not values:
                continue
            spec = [CHART_VERSION, key, title, names, [(r, labels[r], values[r]) for r in values], refs]
            src = pg.chart(f"{key}-{_digest(spec)}.png",
                           lambda: _bar_chart(title, names, values, labels, colours, refs))
            doc = docs.get(bm._DOC_KEYS.get(key, key), "")
            charts.append(f"<figure class=\"chart\"><img class=\"chart\" src=\"{href(src)}\" "
                          f"alt=\"{esc(title)} per clip\"><figcaption class=\"muted\">{esc(title)}: "
                          f"{esc(doc)}</figcaption></figure>")
        body.append("<div class=\"row\">" + "".join(charts) + "</div>")
    else:
        body.append("<p>No clip was scored.</p>")

    legend = [line[2:] for line in _section(text, "Legend").splitlines() if line.startswith("- ")]
    if legend:
        body.append("<h2>Legend</h2><ul>" + "".join(f"<li>{_md_inline(x)}</li>" for x in legend) + "</ul>")

    body.append("<h2>Settings and machine</h2>")
    body.append(f"<p>Benchmark wall time {number(results.get('wall_seconds'), '{:.1f}')} s "
                "(before this page).</p>")
    for title, key in (("Settings", "settings"), ("Versions", "versions"), ("Machine", "machine")):
        if results.get(key):
            body.append(f"<h3>{title}</h3>" + definitions(results[key]))
    if results.get("coop_config"):
        body.append("<details><summary>CoopNets configuration</summary>"
                    + definitions(results["coop_config"]) + "</details>")
    files = [n for n in ("table.md", "results.csv", "results.json", "contact_sheet.png", "side_by_side")
             if (out / n).exists()]
    if files:
        body.append("<p>Other outputs in this folder: " + ", ".join(
            f"<a href=\"{href(n)}\">{esc(n)}</a>" for n in files) + ".</p>")

    path = write_html(out / "report.html", page("dyntex benchmark", "\n".join(body)))
    pg.prune()
    return path
