"""Crashes lose nothing: ``dyntex train`` killed with SIGKILL at random moments and resumed with
``--resume`` completes with a gapless step count, intact checkpoints and no temporary files; and
Ctrl-C (SIGINT) saves a checkpoint at the step reached and exits with code 130.

The training runs as a real subprocess (``python -m cli``) on a tiny clip with the ``tiny`` preset
and a checkpoint every 2 iterations. Kill moments come from a seeded RNG: a target step, then a
random delay inside that iteration (so a kill can land in the middle of a checkpoint write).
"""
from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dyntex.trainer import checkpoint_paths
from dyntex.video import write_video

REPO = Path(__file__).resolve().parents[1]
ITERS, EVERY, KILLS = 30, 2, 3
TIMEOUT = 120  # seconds for any one wait (a loaded CI machine), far above the usual

pytestmark = pytest.mark.skipif(os.name != "posix", reason="needs POSIX signals")


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("killresume")
    yy, xx = np.mgrid[0:24, 0:32] / 32
    frames = np.stack([np.stack([np.sin(2 * np.pi * (xx + 0.6 * yy) + 0.4 * i + p) for p in (0, 2, 4)], -1)
                       for i in range(12)])
    clip = write_video(folder / "clip.mp4", np.round(127.5 + 100 * frames).astype(np.uint8), 25)
    config = folder / "config.json"
    config.write_text(json.dumps({"checkpoint_every": EVERY, "preview_every": 1000}))
    return clip, config


def start(clip: Path, config: Path, run: Path, log: Path, resume: bool = False) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "cli", "train", str(clip), "--out", str(run), "--preset", "tiny",
           "--config", str(config), "--iters", str(ITERS), "--device", "cpu", "--quiet"]
    if resume:
        cmd.append("--resume")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with log.open("w") as fh:
        return subprocess.Popen(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, env=env)


def metric_rows(run: Path) -> list[dict[str, str]]:
    """The complete training rows of metrics.csv (divergence event rows left out)."""
    path = run / "metrics.csv"
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines = lines[:-1]  # a row being appended right now
    return [row for row in csv.DictReader(lines)
            if not row.get("event") and row.get("step", "").isdigit() and row.get("seconds")]


def metric_steps(run: Path) -> list[int]:
    return [int(row["step"]) for row in metric_rows(run)]


def random_moment(rng: random.Random, run: Path) -> None:
    """Sleep a random fraction of one iteration (timed from the metrics), so the kill lands
    anywhere in an iteration: in the maths, the metrics append or a checkpoint write."""
    rows = metric_rows(run)
    iteration = float(rows[-1]["seconds"]) - float(rows[-2]["seconds"]) if len(rows) > 1 else 0.1
    time.sleep(rng.uniform(0.0, min(max(iteration, 0.0), 1.0)))


def checkpoint_steps(run: Path) -> list[int]:
    return [int(p.stem.split("_")[1]) for p in checkpoint_paths(run)]


def wait_until(condition, proc: subprocess.Popen, log: Path, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"training exited (code {proc.returncode}) before {what}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()}")
        time.sleep(0.01)


def load_all_checkpoints(run: Path) -> list[int]:
    """Every checkpoint in the run loads weights-only; returns their steps."""
    steps = []
    for path in checkpoint_paths(run):
        state = torch.load(path, map_location="cpu", weights_only=True)
        assert state["step"] == int(path.stem.split("_")[1])
        steps.append(state["step"])
    return steps


def test_sigkill_three_times_then_resume_to_completion(setup, tmp_path):
    clip, config = setup
    run = tmp_path / "run"
    rng = random.Random(20240607)
    # seeded kill targets, one in each third of the run: steps 2-6, 12-16, 22-26
    third = ITERS // KILLS
    targets = [rng.randrange(k * third + EVERY, (k + 1) * third - 3) for k in range(KILLS)]
    kills = []
    resumed_from = 0
    for i, target in enumerate(targets):
        log = tmp_path / f"log{i}.txt"
        proc = start(clip, config, run, log, resume=i > 0)
        try:
            wait_until(lambda: any(s >= max(EVERY, resumed_from + 1) for s in checkpoint_steps(run))
                       and max(metric_steps(run), default=0) >= target, proc, log, f"step {target}")
            random_moment(rng, run)
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(TIMEOUT) == -signal.SIGKILL, "training ended before it was killed"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        killed_at = max(metric_steps(run))
        steps = load_all_checkpoints(run)  # a SIGKILL never leaves a corrupt checkpoint
        resume_step = steps[-1]
        assert killed_at - resume_step <= EVERY, (killed_at, steps)  # at most one interval lost
        assert resume_step > resumed_from or resumed_from == 0
        kills.append((killed_at, resume_step))
        resumed_from = resume_step

    log = tmp_path / "final.txt"
    proc = start(clip, config, run, log, resume=True)
    assert proc.wait(TIMEOUT) == 0, log.read_text()
    assert f"trained {run} to step {ITERS}" in log.read_text()

    assert len(kills) == KILLS
    assert checkpoint_steps(run)[-1] == ITERS
    assert load_all_checkpoints(run)[-1] == ITERS
    assert metric_steps(run) == list(range(1, ITERS + 1))  # no gap, no duplicate
    assert not [p for p in run.rglob("*") if p.name.endswith((".tmp", ".part"))]
    assert json.loads((run / "config.json").read_text())["iters"] == ITERS
    print(f"\nkills (step reached, resumed from): {kills}")


def test_sigint_saves_a_checkpoint_and_exits_130(setup, tmp_path):
    clip, config = setup
    run = tmp_path / "run"
    log = tmp_path / "log.txt"
    proc = start(clip, config, run, log)
    try:
        wait_until(lambda: any(s >= EVERY for s in checkpoint_steps(run)), proc, log, "a checkpoint")
        random_moment(random.Random(7), run)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = log.read_text().splitlines()
    assert code == 130, output
    assert output == ["interrupted (a checkpoint was saved if training had started; continue with --resume)"]
    reached = max(metric_steps(run))
    assert 0 < reached < ITERS
    assert checkpoint_steps(run)[-1] == reached  # saved at the step reached, nothing lost
    assert load_all_checkpoints(run)[-1] == reached
    assert not [p for p in run.rglob("*") if p.name.endswith((".tmp", ".part"))]
