"""Training curves: one PNG drawn from a run's metrics rows.

:func:`plot_curves` is a plain function of the rows of ``metrics.csv`` (as :func:`read_rows`
or :func:`dyntex.trainer.read_metrics` give them): the energies f of observed and revised clips,
both losses, the Langevin RMS shift and the learning rates against the iteration, with every
divergence event (a row whose ``event`` is set) as a red dashed line on all panels. Columns are
read by name; a missing one leaves its line out, extra ones are ignored.

An axis gets a log scale when its values are positive and span more than a decade, and a
symmetric-log scale (linear near zero) when they also reach zero or below and span decades
(energies are often negative and 1e0..1e9 in size); the axis label says which.
"""
from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .fileio import atomic_path

# (panel title, ((column, legend label), ...)) in drawing order.
PANELS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("energy f", (("energy_obs", "f(observed)"), ("energy_syn", "f(revised)"))),
    ("loss", (("des_loss", "descriptor loss"), ("gen_loss", "generator loss"))),
    ("Langevin RMS shift", (("langevin_rms", "RMS(revised - generated)"),)),
    ("rate", (("lr_des", "descriptor lr"), ("lr_gen", "generator lr"),
              ("step_size", "Langevin step size δ"))),
)


def read_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a metrics.csv by column name: numbers as floats, empty cells as NaN, other text
    (the ``event`` column, or a column added later that holds text) as it is."""
    def value(text: str | None) -> Any:
        if text is None or text == "":
            return math.nan
        try:
            return float(text)
        except ValueError:
            return text

    with open(path, newline="") as fh:
        return [{k: (v or "") if k == "event" else value(v) for k, v in r.items() if k is not None}
                for r in csv.DictReader(fh)]


def _num(value: Any) -> float:
    """A cell as a float (NaN when empty or not a number)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def axis_scale(values: Sequence[float] | np.ndarray) -> tuple[str, float | None]:
    """("linear" | "log" | "symlog", symlog's linear threshold or None) for these values.

    Log when every finite value is positive and they span more than a decade; symlog when some
    are zero or negative and the nonzero magnitudes span more than two decades (linear within
    ± the threshold, a power of ten near the smallest magnitudes); linear otherwise.
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    mags = np.abs(v[v != 0])
    if mags.size == 0:
        return "linear", None
    if v.min() > 0:
        return ("log", None) if v.max() / v.min() > 10 else ("linear", None)
    if mags.max() / mags.min() > 100:
        floor = max(float(np.percentile(mags, 5)), float(mags.max()) * 1e-9)
        return "symlog", 10.0 ** math.floor(math.log10(floor))
    return "linear", None


def scale_note(scale: str, linthresh: float | None) -> str:
    """What an axis label adds to say its scale ('' for linear)."""
    if scale == "log":
        return " (log scale)"
    if scale == "symlog":
        return f" (symlog: linear within ±{linthresh:g}, log beyond)"
    return ""


def apply_scale(ax: Any, values: Sequence[float] | np.ndarray, label: str) -> None:
    """Set ``ax``'s y scale by :func:`axis_scale` and its y label, saying the scale."""
    from matplotlib.ticker import FuncFormatter, LogFormatter, NullFormatter

    # Plain-text tick labels (1e+06): matplotlib's default mathtext ones take a third of the drawing.
    scale, linthresh = axis_scale(values)
    if scale == "symlog":
        ax.set_yscale("symlog", linthresh=linthresh)
        ax.set_yticks(_symlog_ticks(values, linthresh))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    elif scale == "log":
        ax.set_yscale("log")
        # LogFormatter labels in-between ticks only on axes spanning few decades; same text style.
        class Plain(LogFormatter):
            def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
                return f"{x:g}"

        ax.yaxis.set_major_formatter(Plain())
        ax.yaxis.set_minor_formatter(Plain(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    ax.set_ylabel(label + scale_note(scale, linthresh), fontsize=8)


def _symlog_ticks(values: Sequence[float] | np.ndarray, linthresh: float, most: int = 9) -> list[float]:
    """0 and powers of ten from the threshold up to the largest magnitude, on the sides the values
    reach, every k-th decade so that at most ``most`` ticks remain (matplotlib marks every one)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    lo, hi = math.floor(math.log10(linthresh)), math.ceil(math.log10(max(np.abs(v).max(), linthresh)))
    sides = [s for s in (-1, 1) if (s * v > linthresh).any()] or [1]
    step = 1
    while len(sides) * len(range(lo, hi + 1, step)) + 1 > most:
        step += 1
    return sorted([0.0] + [s * 10.0 ** e for s in sides for e in range(hi, lo - 1, -step)])


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Write a matplotlib Figure as PNG, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


def new_figure(width: float, height: float, layout: str | None = "constrained") -> Any:
    """A matplotlib Figure with the Agg canvas (no pyplot, no GUI, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(fig)
    return fig


def plot_curves(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike, title: str = "",
                diverge_rms: float | None = None) -> Path:
    """Draw the training curves of ``rows`` (metrics.csv rows) into the PNG ``path`` (atomically).

    ``diverge_rms`` (the run's divergence threshold) is drawn on the Langevin panel when given.
    Returns ``path``.
    """
    return save_figure(curves_figure(rows, title, diverge_rms), path)


def curves_figure(rows: Sequence[Mapping[str, Any]], title: str = "",
                  diverge_rms: float | None = None) -> Any:
    """The Figure :func:`plot_curves` saves: one panel per entry of :data:`PANELS`."""
    from matplotlib.ticker import MaxNLocator

    train = [r for r in rows if not r.get("event")]
    events = [r for r in rows if r.get("event")]
    steps = np.array([_num(r.get("step")) for r in train])
    # Fixed margins: the trainer redraws this often, and automatic layout doubles the drawing time.
    fig = new_figure(11, 6.6, layout=None)
    fig.subplots_adjust(left=0.07, right=0.99, bottom=0.08, top=0.93, wspace=0.2, hspace=0.08)
    axes = fig.subplots(2, 2, sharex=True).ravel()
    heading = title or "training curves"
    heading += f": {len(train)} iterations logged"
    if events:
        heading += f", {len(events)} divergence event{'s' * (len(events) > 1)} (red dashes)"
    fig.suptitle(heading, fontsize=10)
    for ax, (name, series) in zip(axes, PANELS):
        shown = []
        for column, label in series:
            y = np.array([_num(r.get(column)) for r in train])
            if y.size and np.isfinite(y).any():
                ax.plot(steps, y, label=label, linewidth=1.0)
                shown.append(y)
        if name == "Langevin RMS shift" and diverge_rms and shown:
            ax.axhline(diverge_rms, color="gray", linestyle=":", linewidth=1.0,
                       label=f"divergence threshold {diverge_rms:g}")
            shown.append(np.array([diverge_rms]))
        for i, r in enumerate(events):
            ax.axvline(_num(r.get("step")), color="red", linestyle="--", linewidth=0.9,
                       label="divergence: rolled back to this step" if i == 0 else None)
        if shown:
            apply_scale(ax, np.concatenate(shown), name)
            ax.legend(fontsize=7, loc="best")
        else:
            ax.set_ylabel(name, fontsize=8)
            ax.text(0.5, 0.5, "not logged in this run" if train else "no iterations logged yet",
                    ha="center", va="center", transform=ax.transAxes, color="gray")
        ax.grid(True, alpha=0.3)
        ax.tick_params(which="both", labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes[2:]:
        ax.set_xlabel("iteration", fontsize=8)
    return fig
