"""``dyntex report RUN``: a self-contained HTML page of a training run, and the HTML helpers the
benchmark report (:mod:`dyntex.eval.report`) shares.

``RUN/report.html`` shows the training curves (``curves.png``, redrawn from ``metrics.csv``),
the last logged iteration, divergence events, the latest preview samples (``samples/step_N.gif``),
the preview contact sheets over time (``samples/step_N.png``: observed row above the samples)
and the run's settings. Pages link only to files beside them by relative paths and use no
script and nothing from the network, so they open from disk or any static file server.
"""
from __future__ import annotations

import csv
import html
import json
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .errors import CheckpointError
from .fileio import atomic_write

_STEP_RE = re.compile(r"^step_(\d+)\.(png|gif)$")

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1400px;
       padding: 0 1em; color: #1d1d1f; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.05em; margin-bottom: .3em; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; font-variant-numeric: tabular-nums; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f2f2f2; }
tr.ref td { color: #555; background: #fafafa; font-style: italic; }
.note { background: #fff4d6; border: 1px solid #e0b84d; padding: .5em .8em; margin: 1em 0; }
.muted { color: #666; }
.row { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
figure { margin: 0; }
figure.clip video, figure.clip .missing { width: 160px; height: 160px; background: #000;
       image-rendering: pixelated; display: block; }
figure.clip .missing { background: #eee; color: #a00; display: flex; align-items: center;
       justify-content: center; text-align: center; padding: 6px; box-sizing: border-box; }
figure.clip figcaption { width: 160px; font-size: 12px; }
figure.clip table { font-size: 11px; margin: 2px 0; width: 160px; }
figure.clip th, figure.clip td { padding: 1px 4px; border-color: #ddd; }
img.chart, img.curves { max-width: 100%; }
figure.chart { display: table; max-width: 100%; }  /* the caption wraps at the chart's width */
figure.chart figcaption { display: table-caption; caption-side: bottom; }
img.sheet { max-width: 100%; image-rendering: pixelated; }
dl { display: grid; grid-template-columns: max-content auto; gap: 2px 12px; }
dt { font-weight: 600; } dd { margin: 0; font-family: ui-monospace, monospace; font-size: 12px; }
"""


# --------------------------------------------------------------------------- HTML helpers


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def href(path: str | Path) -> str:
    """A relative URL for a path relative to the page (each part percent-encoded)."""
    return esc(quote(Path(path).as_posix(), safe="/"))


def page(title: str, body: str) -> str:
    """A whole HTML document: the shared style, ``title`` and ``body`` (already HTML)."""
    stamp = time.strftime("%Y-%m-%d %H:%M")
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{esc(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n"
            f"<p class=\"muted\">written by dyntex on {stamp}</p>\n</body>\n</html>\n")


def table(header: Sequence[str], rows: Iterable[Sequence[str]], row_classes: Sequence[str] = (),
          escape: bool = True, id: str | None = None) -> str:
    """An HTML table; cells are escaped unless ``escape`` is False (then they are HTML)."""
    cell = esc if escape else str
    out = [f"<table id=\"{esc(id)}\">" if id else "<table>",
           "<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead>", "<tbody>"]
    for i, r in enumerate(rows):
        cls = row_classes[i] if i < len(row_classes) and row_classes[i] else ""
        attr = f" class=\"{esc(cls)}\"" if cls else ""
        out.append(f"<tr{attr}>" + "".join(f"<td>{cell(c)}</td>" for c in r) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def definitions(items: Mapping[str, Any]) -> str:
    """A ``<dl>`` of key: value (nested values as compact JSON)."""
    def show(v: Any) -> str:
        return json.dumps(v, default=str) if isinstance(v, (dict, list, tuple)) else str(v)

    return "<dl>" + "".join(f"<dt>{esc(k)}</dt><dd>{esc(show(v))}</dd>" for k, v in items.items()) + "</dl>"


def number(value: Any, spec: str = "{:.4g}") -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "–" if isinstance(value, float) and not math.isfinite(value) else spec.format(value)
    return "–" if value in (None, "") else str(value)


def write_html(path: str | Path, text: str) -> Path:
    path = Path(path)
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))
    return path


# --------------------------------------------------------------------------- the run report


def _by_step(folder: Path, ext: str) -> list[tuple[int, Path]]:
    """``folder/step_N.ext`` files, oldest step first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir()
             if (m := _STEP_RE.match(p.name)) and m.group(2) == ext]
    return sorted(found)


def write_run_report(run_dir: str | Path) -> Path:
    """Redraw ``RUN/curves.png`` and write ``RUN/report.html``; returns the page's path.

    Raises:
        CheckpointError: ``run_dir`` is missing, not a folder, or holds no ``metrics.csv``.
        OutputError: the page or the curves cannot be written.
    """
    from .curves import plot_curves, read_rows

    run = Path(run_dir)
    if not run.exists():
        raise CheckpointError(f"run folder {run} does not exist")
    if not run.is_dir():
        raise CheckpointError(f"{run} is a file, not a run folder")
    if not (run / "metrics.csv").is_file():
        raise CheckpointError(f"{run} holds no training run (no metrics.csv; train first: "
                              f"dyntex train VIDEO --out {run})")
    try:
        rows = read_rows(run / "metrics.csv")
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{run}/metrics.csv is not readable ({type(exc).__name__}: {exc})") from None
    config: dict[str, Any] = {}
    try:
        config = json.loads((run / "config.json").read_text())
    except (OSError, ValueError):
        pass
    plot_curves(rows, run / "curves.png", title=run.resolve().name,
                diverge_rms=config.get("diverge_rms"))

    train = [r for r in rows if not r.get("event")]
    events = [r for r in rows if r.get("event")]
    last = train[-1] if train else None
    body = [f"<h1>Training report: {esc(run.resolve().name)}</h1>"]
    if last is not None:
        total = config.get("iters")
        seconds = last.get("seconds")
        body.append(f"<p>Step {number(last.get('step'), '{:.0f}')}"
                    + (f" of {esc(total)}" if total else "")
                    + (f", {number(seconds, '{:.1f}')} s of training" if isinstance(seconds, float)
                       and math.isfinite(seconds) else "")
                    + (f"; preset {esc(config['preset'])}, {esc(config.get('frames'))} frames × "
                       f"{esc(config.get('size'))}²" if "preset" in config else "") + ".</p>")
        shown = {k: v for k, v in last.items() if k not in ("step", "event")}
        body.append("<h2>Last iteration</h2>"
                    + table(list(shown), [[number(v) for v in shown.values()]]))
    else:
        body.append("<p class=\"note\">No iteration has been logged yet.</p>")
    body.append("<h2>Divergence events</h2>")
    if events:
        body.append("<ul>" + "".join(f"<li>{esc(e['event'])}</li>" for e in events) + "</ul>")
    else:
        body.append("<p>None.</p>")
    body.append("<h2>Training curves</h2>"
                "<p class=\"muted\">Energies f of the observed and the revised clips, both losses, "
                "how far Langevin moved the generator's clips (RMS) and the rates, against the "
                "iteration; red dashes are divergence events. Each axis says its scale.</p>"
                "<img class=\"curves\" src=\"curves.png\" alt=\"training curves\">")

    gifs = _by_step(run / "samples", "gif")
    sheets = _by_step(run / "samples", "png")
    body.append("<h2>Latest samples</h2>")
    if gifs:
        step, gif = gifs[-1]
        body.append(f"<figure><img class=\"sheet\" src=\"{href(gif.relative_to(run))}\" "
                    f"alt=\"samples at step {step}\" style=\"height: 192px\">"
                    f"<figcaption>step {step}: the generator's clips from the fixed preview latents "
                    "(one clip per chain, side by side)</figcaption></figure>")
    else:
        body.append("<p class=\"muted\">No preview samples in this run (dyntex train and dyntex "
                    "demo write them every preview_every iterations; benchmark runs do not).</p>")
    body.append("<h2>Preview contact sheets over time</h2>")
    if sheets:
        body.append("<p class=\"muted\">Every preview: the observed clip in the top row, then one "
                    "row per sample; 8 frames evenly spaced in time.</p>")
        for step, sheet in sheets:
            body.append(f"<figure><figcaption>step {step}</figcaption>"
                        f"<img class=\"sheet\" src=\"{href(sheet.relative_to(run))}\" "
                        f"alt=\"contact sheet at step {step}\"></figure>")
    else:
        body.append("<p class=\"muted\">None.</p>")
    if config:
        body.append("<h2>Settings</h2>" + definitions(config))
    return write_html(run / "report.html", page(f"dyntex run {run.resolve().name}", "\n".join(body)))
