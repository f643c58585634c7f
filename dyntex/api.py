"""High-level jobs: train on a path, synthesize from a run folder, the demo.

These are what the ``dyntex`` command calls (``cli.py`` only parses options and turns
:class:`~dyntex.errors.DyntexError` into one-line messages); they are equally usable from Python.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch

from . import distributed
from .clips import WindowSampler
from .config import DEFAULT_PRESET, Config, make_config
from .errors import ConfigError, OutputError
from .inputs import fps_of, load_inputs
from .report import write_run_report
from .trainer import Trainer, load_model
from .video import OUTPUT_FORMATS, Video, contact_sheet, from_model, to_pixels, write_outputs, write_png


def check_output_folder(out: str | Path) -> None:
    """Refuse an output folder that cannot be created or written, before any work is done.

    Nothing is created here: the nearest existing ancestor must be a writable folder.

    Raises:
        OutputError: ``out`` (or a parent) is a file, or the folder is not writable.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"output folder {out} is a file; choose another --out")
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"cannot create output folder {out}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write to {probe}: permission denied")


def train(inputs: str | Path | list[Video], out: str | Path, config: Config, resume: bool = False,
          progress: bool = False) -> Trainer:
    """Train into run folder ``out`` on ``inputs``: a path (video file, gif, frame folder or a
    folder of those) or videos already decoded with :func:`dyntex.inputs.load_inputs`.

    Inputs and the output folder are checked before the run folder is touched, so bad input
    leaves nothing behind."""
    check_output_folder(out)
    videos = inputs if isinstance(inputs, list) else load_inputs(inputs, config.frames, config.size)
    data = WindowSampler(videos, config.frames, config.window)  # refuses too-short clips etc.
    fps = fps_of(videos)
    source = ", ".join(v.name for v in videos) if isinstance(inputs, list) else str(inputs)
    joined_before = distributed.current().active
    # under torchrun: join the process group (and leave it after, unless the caller had joined)
    started = distributed.init_from_env(config.device).active and not joined_before
    try:
        trainer = Trainer(config, run_dir=out, resume=resume, progress=progress,
                          meta={"fps": fps, "source": source})
        trainer.fit(data)
    finally:
        if started:
            distributed.shutdown()
    return trainer


def synthesize(run_dir: str | Path, n: int, out: str | Path, formats: Sequence[str] = ("mp4", "gif"),
               frames: int | None = None, langevin_steps: int = 0, seed: int = 0,
               device: str = "auto", size: int | None = None) -> list[Path]:
    """Write ``n`` clips sampled from a trained run (``sample_000.mp4`` ...); returns the paths.
    ``size``: another frame side than the training one (multiscale networks only)."""
    if n < 1:
        raise ConfigError(f"-n must be at least 1, got {n}")
    if frames is not None and frames < 1:
        raise ConfigError(f"--frames must be at least 1, got {frames}")
    if size is not None and size < 1:
        raise ConfigError(f"--size must be at least 1, got {size}")
    if langevin_steps < 0:
        raise ConfigError(f"--langevin-steps must be 0 or more, got {langevin_steps}")
    unknown = set(formats) - set(OUTPUT_FORMATS)
    if unknown or not formats:
        raise ConfigError(f"unknown format(s) {', '.join(sorted(unknown)) or '(none given)'}; "
                          f"choose from {', '.join(OUTPUT_FORMATS)}")
    check_output_folder(out)
    model, meta = load_model(run_dir, device)
    g = torch.Generator(device=model.device).manual_seed(seed)
    clips = from_model(model.synthesize(n, frames=frames, langevin_steps=langevin_steps,
                                        generator=g, size=size))
    written: list[Path] = []
    for i, clip in enumerate(clips):
        written += write_outputs(out, f"sample_{i:03d}", clip, meta.get("fps", 25.0), formats)
    return written


def demo(out: str | Path, iters: int | None = None, progress: bool = True, **overrides: Any) -> dict[str, Path]:
    """The main job on the shipped sample: train the default preset on ``data/water.mp4``, then write
    three synthesized clips (mp4 + gif), a contact sheet (observed row above synthesized rows) and
    the run's ``report.html``."""
    from .sample_data import sample_clip

    out = Path(out)
    check_output_folder(out)
    cfg = make_config(DEFAULT_PRESET, iters=iters, **overrides)
    videos = load_inputs(sample_clip(), cfg.frames, cfg.size)
    trainer = train(videos, out / "run", cfg, resume=(out / "run" / "checkpoints").is_dir(), progress=progress)
    g = torch.Generator(device=trainer.device).manual_seed(cfg.seed)
    samples = from_model(trainer.model.synthesize(3, generator=g))
    fps = trainer.meta.get("fps", 25.0)
    for i, s in enumerate(samples):
        write_outputs(out, f"sample_{i:03d}", s, fps, ("mp4", "gif"))
    observed = to_pixels(videos[0].frames[: cfg.frames])
    sheet = write_png(out / "contact_sheet.png",
                      contact_sheet([observed, *samples], labels=["observed", "sample 1", "sample 2", "sample 3"]))
    return {"run": out / "run", "samples": out, "contact_sheet": sheet,
            "report": write_run_report(out / "run")}
