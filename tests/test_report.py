"""Reports: training curves (dyntex.curves), the run report (``dyntex report``), the benchmark's
``report.html`` (dyntex.eval.report), and both pages opened in headless Chromium."""
from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import dyntex.eval.benchmark as bm
import dyntex.eval.runs as runs
from cli import main
from dyntex import curves
from dyntex.config import make_config
from dyntex.errors import DivergenceError, InputError
from dyntex.report import write_run_report
from dyntex.trainer import Trainer, read_metrics
from dyntex.video import read_video, write_video
from dyntex.eval.baselines import BASELINES
from tests.browser import chromium_path
from tests.test_trainer import _clips, _inject

REPO = Path(__file__).resolve().parents[1]
SRC_RE = re.compile(r'\b(?:src|href)="([^"]+)"')


def local_links(page: Path) -> list[str]:
    """Every src/href of an HTML page; all must be relative links to files beside it."""
    links = SRC_RE.findall(page.read_text())
    assert links
    for link in links:
        assert "://" not in link and not link.startswith("/"), link
    return links


def fake_rows(n: int = 30, lr: bool = True, extra: bool = False) -> list[dict]:
    """Metrics rows shaped like a real run's: energies negative and 1e0..1e9, one event row."""
    rows = []
    for i in range(1, n + 1):
        r = {"step": float(i), "energy_obs": -(10.0 ** (i * 9 / n)), "energy_syn": 10.0 ** (i * 9 / n) / 2,
             "des_loss": (-1) ** i * 10.0 ** (i * 6 / n), "gen_loss": 50.0 + i, "langevin_rms": 0.01 * i,
             "seconds": 0.5 * i, "event": ""}
        if lr:
            r.update(lr_des=0.01 if i < 12 else 0.005, lr_gen=2e-4, step_size=0.002)
        if extra:
            r["a_new_column"] = "text"
        rows.append(r)
    rows.insert(12, {"step": 11.0, "event": "diverged at step 12 (...); rolled back to step 11"})
    return rows


# --------------------------------------------------------------------------- curves


def test_axis_scale_says_log_symlog_or_linear() -> None:
    assert curves.axis_scale([1.0, 2.0, 5.0]) == ("linear", None)
    assert curves.axis_scale([1e-3, 1.0, 1e3]) == ("log", None)
    assert curves.axis_scale([2e-4, 0.002, 0.01]) == ("log", None)          # the rates: 1.7 decades
    assert curves.axis_scale([-3e8, -2.0, 5.0, 1e9]) == ("symlog", 1.0)
    assert curves.axis_scale([-2.0, 3.0]) == ("linear", None)            # mixed signs, one decade
    assert curves.axis_scale([0.0, float("nan")]) == ("linear", None)


def test_curves_figure_panels_scales_and_events() -> None:
    fig = curves.curves_figure(fake_rows(extra=True), "run", diverge_rms=3.0)
    energy, loss, rms, rate = fig.axes[:4]
    assert energy.get_yscale() == "symlog" and "symlog" in energy.get_ylabel()
    assert loss.get_yscale() == "symlog"
    assert rms.get_yscale() == "log" and "log scale" in rms.get_ylabel()     # 0.01 .. 3 (threshold)
    assert rate.get_yscale() == "log" and len(rate.get_lines()) == 3 + 1     # 3 rates + the event
    assert [line.get_label() for line in energy.get_lines()][:2] == ["f(observed)", "f(revised)"]
    for ax in fig.axes[:4]:
        red = [line for line in ax.get_lines() if line.get_color() == "red"]
        assert len(red) == 1 and list(red[0].get_xdata()) == [11.0, 11.0]
    assert "1 divergence event" in fig.texts[0].get_text()
    # Missing columns leave their panel empty, saying so; nothing else changes.
    bare = curves.curves_figure(fake_rows(lr=False))
    assert [line.get_color() for line in bare.axes[3].get_lines()] == ["red"]
    assert "not logged" in bare.axes[3].texts[0].get_text()


def test_plot_curves_writes_a_png_atomically(tmp_path: Path) -> None:
    path = curves.plot_curves(fake_rows(), tmp_path / "c" / "curves.png", "run", 3.0)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (1100, 660)
        assert len(np.unique(np.asarray(im.convert("RGB")).reshape(-1, 3), axis=0)) > 20
    assert [p.name for p in path.parent.iterdir()] == ["curves.png"]


# --------------------------------------------------------------------------- the trainer's curves


@pytest.fixture
def plotted(monkeypatch) -> list[tuple[int, int]]:
    """Record each curves.png the trainer draws: (step of its last row, event rows)."""
    calls: list[tuple[int, int]] = []
    real = curves.plot_curves

    def spy(rows, path, *a, **k):
        calls.append((int(max(r["step"] for r in rows)), sum(bool(r["event"]) for r in rows)))
        return real(rows, path, *a, **k)

    monkeypatch.setattr(curves, "plot_curves", spy)
    return calls


def test_training_redraws_curves_with_previews_and_at_the_end(tmp_path: Path, plotted) -> None:
    seen = []

    def on_preview(folder: Path, step: int, clips: torch.Tensor) -> None:
        seen.append((step, (tmp_path / "run" / "curves.png").is_file()))

    cfg = make_config("tiny", window="random", iters=5, preview_every=2, checkpoint_every=2)
    Trainer(cfg, run_dir=tmp_path / "run", on_preview=on_preview).fit(_clips())
    assert seen == [(2, False), (4, True)] and plotted == [(2, 0), (4, 0), (5, 0)]
    rows = read_metrics(tmp_path / "run")
    assert [(r["lr_des"], r["lr_gen"], r["step_size"]) for r in rows] == [(0.01, 2e-4, 0.002)] * 5
    # Without previews (as the benchmark trains): once, at the end. Without a run folder: never.
    plotted.clear()
    Trainer(cfg.replace(iters=3), run_dir=tmp_path / "quiet", previews=False).fit(_clips())
    Trainer(cfg.replace(iters=2)).fit(_clips())
    assert plotted == [(3, 0)] and (tmp_path / "quiet" / "curves.png").is_file()


def test_metrics_log_the_lowered_rate_after_a_divergence(tmp_path: Path, monkeypatch, plotted) -> None:
    cfg = make_config("tiny", window="random", iters=6, checkpoint_every=2)
    _inject(monkeypatch, {4}, "nan")                        # rolled back to step 2, lr_des halved
    Trainer(cfg, run_dir=tmp_path / "recovered", previews=False).fit(_clips())
    rows = read_metrics(tmp_path / "recovered")
    assert [r["lr_des"] for r in rows if not r["event"]] == [0.01] * 2 + [0.005] * 4
    assert plotted == [(6, 1)]


def test_a_run_that_gives_up_leaves_its_curves(tmp_path: Path, monkeypatch, plotted) -> None:
    _inject(monkeypatch, set(range(3, 100)), "nan")
    cfg = make_config("tiny", window="random", iters=6, checkpoint_every=2, diverge_retries=2)
    with pytest.raises(DivergenceError):
        Trainer(cfg, run_dir=tmp_path, previews=False).fit(_clips())
    assert plotted == [(2, 2)] and (tmp_path / "curves.png").is_file()       # both recoveries on it


# --------------------------------------------------------------------------- dyntex report RUN


def tiny_run(run: Path, iters: int = 4) -> Path:
    cfg = make_config("tiny", window="random", iters=iters, preview_every=2, checkpoint_every=2)
    Trainer(cfg, run_dir=run).fit(_clips())                        # previews by default
    return run


def test_run_report_links_curves_sheets_and_latest_samples(tmp_path: Path) -> None:
    run = tiny_run(tmp_path / "run")
    (run / "curves.png").unlink()                                    # the report redraws it
    result = CliRunner().invoke(main, ["report", str(run)])
    assert result.exit_code == 0, result.output
    page = run / "report.html"
    assert result.output.strip() == f"wrote {page}"
    links = local_links(page)
    assert all((run / link).is_file() for link in links)
    assert links == ["curves.png", "samples/step_000004.gif", "samples/step_000002.png",
                     "samples/step_000004.png"]
    text = page.read_text()
    assert "Step 4 of 4" in text and "<h2>Divergence events</h2>\n<p>None.</p>" in text
    assert not list(run.rglob("*.tmp"))


def test_run_report_of_a_run_without_iterations(tmp_path: Path) -> None:
    (tmp_path / "metrics.csv").write_text("step,des_loss,event\n")
    page = write_run_report(tmp_path)
    assert "No iteration has been logged yet" in page.read_text() and (tmp_path / "curves.png").is_file()


def test_run_report_reads_metrics_columns_by_name(tmp_path: Path) -> None:
    """Columns in another order, a text column this dyntex does not know, no rate columns."""
    (tmp_path / "metrics.csv").write_text(
        "note,event,langevin_rms,step,energy_obs,energy_syn,des_loss,gen_loss\n"
        "warm-up,,0.01,1,-5,3e6,2,40\n"
        "warm-up,diverged at step 3 (...); rolled back to step 1,,1,,,,\n"
        "steady,,0.02,2,-7e8,4e8,-1e6,35\n")
    rows = curves.read_rows(tmp_path / "metrics.csv")
    assert [r["note"] for r in rows] == ["warm-up", "warm-up", "steady"] and rows[2]["energy_obs"] == -7e8
    assert rows[0]["event"] == "" and np.isnan(rows[1]["energy_obs"])
    text = write_run_report(tmp_path).read_text()
    assert "<li>diverged at step 3 (...); rolled back to step 1</li>" in text
    assert "<th>note</th>" in text and "<td>steady</td>" in text and "Step 2." in text
    with Image.open(tmp_path / "curves.png") as im:
        assert im.size == (1100, 660)


@pytest.mark.parametrize("case", ["missing", "empty", "file", "config only"])
def test_report_command_refuses_what_is_not_a_run(tmp_path: Path, case: str) -> None:
    target = tmp_path / "run"
    if case == "empty":
        target.mkdir()
    elif case == "file":
        target.write_text("x")
    elif case == "config only":
        target.mkdir()
        (target / "config.json").write_text("{}")
    result = CliRunner().invoke(main, ["report", str(target)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    want = {"missing": "does not exist", "empty": "no metrics.csv", "file": "is a file",
            "config only": "no metrics.csv"}[case]
    assert len(lines) == 1 and lines[0].startswith("error: ") and want in lines[0], result.output
    assert not (tmp_path / "run" / "report.html").exists()


# --------------------------------------------------------------------------- the benchmark's page


@pytest.fixture(scope="module")
def water_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's water clip, and a 5-frame clip the benchmark skips."""
    root = tmp_path_factory.mktemp("water")
    shutil.copy(REPO / "data" / "water.mp4", root / "water.mp4")
    write_video(root / "stub.mp4", read_video(REPO / "data" / "water.mp4", frames=5).frames, 25)
    return root


def test_benchmark_report_of_a_partly_failed_run(water_dir: Path, tmp_path: Path, monkeypatch) -> None:
    def broken(*a, **k):
        raise InputError("HOSVD broke on purpose")

    monkeypatch.setattr(runs, "BASELINES", {**BASELINES, "hosvd": BASELINES["hosvd"]._replace(fit=broken)})
    kw = dict(frames=16, size=16, samples=2, progress=False)
    report = bm.run_benchmark(water_dir, tmp_path, methods="lds,hosvd,fftlds", **kw)
    page = report.paths["report.html"]
    assert page == tmp_path / "report.html"
    text = page.read_text()
    summary = text.split('<table id="summary">')[1].split("</table>")[0]
    labels = re.findall(r"<tr(?: class=\"ref\")?><td>([^<]+)</td>", summary)
    calibration = ["noise", "phase-randomised", "shuffled", "frozen"]
    assert labels == ["LDS (continuation)", "HOSVD (continuation)", "FFT-LDS (continuation)",
                      "mean frame", "next window", *calibration]
    assert summary.count('class="ref"') == 2 + len(calibration)
    assert "clip <b>stub</b> skipped: only 5 frames" in text
    assert "clip <b>water</b>, HOSVD (continuation) failed: HOSVD broke on purpose" in text
    links = local_links(page)
    assert all((tmp_path / link).exists() for link in links)
    videos = re.findall(r'<video src="([^"]+)" autoplay loop muted playsinline>', text)
    assert [Path(v).name.split("-")[0] for v in videos] == ["observed", "lds", "fftlds", "meanframe",
                                                              "nextwindow", "noise", "phase",
                                                              "shuffled", "frozen"]
    assert len(re.findall(r'<img class="chart"', text)) == len(bm.COLUMNS)
    assert "<h2>Legend</h2>" in text and "<b>next window</b>:" in text
    # A rerun from the cache rewrites no media; files the page no longer shows are removed.
    lds_video = tmp_path / next(v for v in videos if "/lds-" in v)
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "report").rglob("*") if p.is_file()}
    monkeypatch.undo()
    bm.run_benchmark(water_dir, tmp_path, methods="lds", **kw)
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "report").rglob("*") if p.is_file()}
    assert after[lds_video] == before[lds_video]
    assert not any("fftlds" in p.name for p in after) and any("fftlds" in p.name for p in before)
    assert set(after) == {tmp_path / link for link in local_links(page) if link.startswith("report/")}


# --------------------------------------------------------------------------- in a real browser


def _check_in_chromium(page: Path, shot: Path, min_videos: int) -> dict:
    from tests.browser import inspect_page

    # a screen tall enough that the first picture sits below the summary table
    seen = inspect_page(page, screenshot=shot, height=1400)
    assert seen["console_errors"] == []
    assert len(seen["videos"]) >= min_videos
    for v in seen["videos"]:
        assert v["error"] is None and v["readyState"] >= 2, v
        assert v["now"] != v["start"] and v["muted"] and v["loop"] and v["autoplay"], v
    assert seen["images"] and all(i["complete"] and i["width"] > 0 for i in seen["images"]), seen["images"]
    screen = np.asarray(Image.open(io.BytesIO(seen["screenshot"])).convert("RGB")).astype(float)
    assert len(np.unique(screen.reshape(-1, 3), axis=0)) > 100                    # not blank
    box = seen["boxes"][0]                                                       # the first picture
    region = screen[int(box["y"]) + 2:int(box["y"] + box["h"]) - 2, int(box["x"]) + 2:int(box["x"] + box["w"]) - 2]
    assert region.std() > 10, box
    return seen


@pytest.mark.slow
@pytest.mark.skipif(chromium_path() is None, reason="no chromium executable (apt-get install "
                    "chromium, or set DYNTEX_CHROMIUM); .ci/run installs it")
def test_reports_play_in_chromium(water_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("playwright", reason="playwright is in the test extra: pip install -e '.[test]'")
    from dyntex.api import demo

    report = bm.run_benchmark(water_dir, tmp_path / "bench", methods="coop,lds,hosvd,fftlds",
                              preset="tiny", iters=2, device="cpu", frames=16, size=32, samples=2,
                              progress=False)
    seen = _check_in_chromium(report.paths["report.html"], tmp_path / "bench.png", min_videos=7)
    summary = next(t for t in seen["tables"] if t["id"] == "summary")
    assert summary["rows"] == ["CoopNets", "LDS (continuation)", "HOSVD (continuation)",
                               "FFT-LDS (continuation)", "mean frame", "next window", "noise",
                               "phase-randomised", "shuffled", "frozen"]
    assert "stub skipped: only 5 frames" in seen["text"]
    assert any(b["tag"] == "video" for b in seen["boxes"])                 # videos on the first screen

    paths = demo(tmp_path / "demo", iters=2, progress=False, preview_every=1, device="cpu", frames=16, size=32)
    seen = _check_in_chromium(paths["report"], tmp_path / "run.png", min_videos=0)
    assert [Path(i["src"]).name for i in seen["images"]][:3] == ["curves.png", "step_000002.gif",
                                                                  "step_000001.png"]
