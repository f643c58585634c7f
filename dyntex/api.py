"""High-level jobs: train on a path, synthesize from a run folder, the demo.

These are what the ``dyntex`` command calls (``cli.py`` only parses options and turns
:class:`~dyntex.errors.DyntexError` into one-line messages); they are equally usable from Python.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch

from . import distributed
from .clips import ClassWindows, WindowSampler
from .config import DEFAULT_PRESET, Config, make_config
from .errors import ConfigError, InputError, InputWarning, OutputError
from .inputs import find_clips, fps_of, load_inputs
from .report import write_run_report
from .trainer import Trainer, load_model
from .video import (OUTPUT_FORMATS, Video, contact_sheet, from_model, to_pixels, write_outputs,
                    write_png, write_video)
from .writing import side_by_side


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
          progress: bool = False, conditional: bool = False) -> Trainer:
    """Train into run folder ``out`` on ``inputs``: a path (video file, gif, frame folder or a
    folder of those) or videos already decoded with :func:`dyntex.inputs.load_inputs`.

    ``conditional``: one class-conditional model over every clip in the folder ``inputs``, each
    clip (file or sub-folder name) a class; the class names go into the config's ``labels``.

    Inputs and the output folder are checked before the run folder is touched, so bad input
    leaves nothing behind."""
    check_output_folder(out)
    if config.labels and not conditional:
        raise ConfigError("these settings are for a class-conditional model (labels "
                          f"{config.labels}): train (or resume) it with --conditional")
    if conditional:
        names, groups = _classes(inputs, config)
        config = config.replace(labels=",".join(names))
        data: WindowSampler | ClassWindows = ClassWindows(
            [WindowSampler(g, config.frames, config.window) for g in groups])
        videos = [v for g in groups for v in g]
    else:
        videos = inputs if isinstance(inputs, list) else load_inputs(inputs, config.frames,
                                                                      config.size)
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


def _classes(path: str | Path | list[Video], config: Config) -> tuple[list[str], list[list[Video]]]:
    """The classes of a conditional training folder: (names, each one's decoded videos)."""
    if isinstance(path, list) or not Path(path).is_dir():
        raise ConfigError("--conditional needs a folder of clips (one class per clip or "
                          "sub-folder)")
    sources = find_clips(path)
    for src in sources:
        if src.skip:
            warnings.warn(f"skipped {src.path or src.name}: {src.skip}", InputWarning, stacklevel=3)
    used = [s for s in sources if not s.skip]
    return ([s.name for s in used],
            [load_inputs(s.path, config.frames, config.size) for s in used])


def synthesize(run_dir: str | Path, n: int, out: str | Path, formats: Sequence[str] = ("mp4", "gif"),
               frames: int | None = None, langevin_steps: int = 0, seed: int = 0,
               device: str = "auto", size: int | None = None, label: str | None = None
               ) -> list[Path]:
    """Write ``n`` clips sampled from a trained run (``sample_000.mp4`` ...); returns the paths.
    ``size``: another frame side than the training one (multiscale networks only). ``label``:
    the class of a conditional run, or ``"all"`` (``n`` clips of each class, in a sub-folder per
    class)."""
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
    if model.conditional and label is None:
        raise ConfigError(f"{run_dir} holds a class-conditional model: give --label (one of "
                          f"{', '.join(model.labels)}) or --label all")
    if not model.conditional and label is not None:
        raise ConfigError(f"{run_dir} is not class-conditional (train with --conditional); "
                          f"--label is not for it")
    if label is not None and label != "all" and label not in model.labels:
        raise ConfigError(f"unknown label '{label}'; {run_dir} knows {', '.join(model.labels)} "
                          f"(or all)")
    g = torch.Generator(device=model.device).manual_seed(seed)
    targets: list[tuple[Path, list[int] | None]] = [(Path(out), None)]
    if label == "all":
        targets = [(Path(out) / name, [i] * n) for i, name in enumerate(model.labels)]
    elif label is not None:
        targets = [(Path(out), [model.labels.index(label)] * n)]
    written: list[Path] = []
    for folder, labels in targets:
        clips = from_model(model.synthesize(n, frames=frames, langevin_steps=langevin_steps,
                                            generator=g, size=size, labels=labels))
        for i, clip in enumerate(clips):
            written += write_outputs(folder, f"sample_{i:03d}", clip, meta.get("fps", 25.0),
                                     formats)
    return written


def interpolate(run_dir: str | Path, first: str, second: str, out: str | Path, steps: int = 5,
                formats: Sequence[str] = ("mp4", "gif"), frames: int | None = None, seed: int = 0,
                device: str = "auto") -> list[Path]:
    """One clip of ``steps`` panels side by side: the same latents rendered with class weights
    going from ``first`` (1, 0) to ``second`` (0, 1) in equal steps (a blend of the two classes'
    embeddings and frame biases) by a conditional run; written as ``interpolation.<format>``."""
    if steps < 2:
        raise ConfigError(f"--steps must be at least 2, got {steps}")
    unknown = set(formats) - {"mp4", "gif"}
    if unknown or not formats:
        raise ConfigError(f"an interpolation is written as mp4 and/or gif, got "
                          f"{', '.join(sorted(unknown)) or '(none)'}")
    check_output_folder(out)
    model, meta = load_model(run_dir, device)
    if not model.conditional:
        raise ConfigError(f"{run_dir} is not class-conditional (train with --conditional); "
                          f"--interpolate needs two classes")
    for name in (first, second):
        if name not in model.labels:
            raise ConfigError(f"unknown label '{name}'; {run_dir} knows {', '.join(model.labels)}")
    weights = torch.zeros(steps, len(model.labels))
    w = torch.linspace(0.0, 1.0, steps)
    weights[:, model.labels.index(first)] += 1.0 - w
    weights[:, model.labels.index(second)] += w
    g = torch.Generator(device=model.device).manual_seed(seed)
    z = model.draw_latents(1, frames, g)
    weights = weights.to(model.device)
    with torch.no_grad():  # each panel rendered alone: it does not depend on the others
        clips = from_model(torch.cat([model.render(z, frames, weights[i:i + 1], model.sampler)
                                      for i in range(steps)]))
    video = side_by_side(list(clips), [f"{first} {1 - float(x):.2f}" for x in w])
    Path(out).mkdir(parents=True, exist_ok=True)
    return [write_video(Path(out) / f"interpolation.{ext}", video, meta.get("fps", 25.0))
            for ext in formats]


def recover(video: str | Path, out: str | Path, config: Config, mask: str | Path | None = None,
            occlude: str | None = None, run: str | Path | None = None, steps: int | None = None,
            resume: bool = False, progress: bool = False, device: str = "auto") -> dict[str, Path]:
    """Fill the missing pixels of the first T frames of ``video`` (``mask`` file, or ``occlude``:
    a drawn occlusion such as ``"pepper:0.5"``, seeded by the config's seed).

    Without ``run``: trains the config on the incomplete clip into ``out/run`` (each iteration
    the generator explains the known pixels and renders the missing ones, which descriptor
    Langevin revises with the known ones clamped; :class:`dyntex.recovery.MaskedClip`); the
    recovery is the generator's rendering of the clip's latent. With ``run``: a trained run
    fills them without training, after ``steps`` Langevin steps of the latent on its posterior
    given the known pixels (default: l x 30). Writes ``out/recovered.mp4``,
    ``.gif`` and ``.npy`` (float [0, 1]; the known pixels are the loaded clip's, bit for bit),
    ``out/mask.npy`` (True = missing) and ``out/comparison.mp4`` / ``.gif`` (observed | masked |
    recovered). Everything is checked before anything is written."""
    import numpy as np

    from . import recovery
    from .fileio import save_npy
    from .video import read_video, unit_frame

    if (mask is None) == (occlude is None):
        raise ConfigError("give exactly one of --mask FILE and --occlude SPEC")
    if steps is not None and steps < 1:
        raise ConfigError(f"--steps must be at least 1, got {steps}")
    check_output_folder(out)
    model = None
    if run is not None:
        model, _ = load_model(run, device)
        config = model.config
    T, S = config.frames, config.size
    native = read_video(video, frames=T)                # uint8 at its own size (the mask's)
    if len(native.frames) < T:
        raise InputError(f"{video} has {len(native.frames)} frames; recovery of T={T} frames "
                         f"needs {T} (use --frames)")
    clip = np.stack([unit_frame(f, S) for f in native.frames])   # as training loads it
    if mask is not None:
        missing = recovery.load_mask(mask, T, S, native.frames.shape[1:3])
    else:
        missing = recovery.occlusion_mask(occlude, T, S, np.random.default_rng(config.seed))
    if model is None:
        data = recovery.MaskedClip(clip, missing)
        trainer = Trainer(config, run_dir=Path(out) / "run", resume=resume, progress=progress,
                          meta={"fps": native.fps, "source": str(video)})
        trainer.fit(data)
        recovered = recovery.completed_clip(clip, missing, data.estimate(trainer.model))
    else:
        g = torch.Generator(device=model.device).manual_seed(config.seed)
        recovered = recovery.fill(model, clip, missing, steps or 30 * config.langevin_steps, g)
    out = Path(out)
    masked = np.where(missing[..., None], 0.0, clip).astype(np.float32)
    pixels = [to_pixels(a) for a in (clip, masked, recovered)]
    paths = {"recovered.npy": save_npy(out / "recovered.npy", recovered),
             "mask.npy": save_npy(out / "mask.npy", missing),
             "comparison.png": write_png(out / "comparison.png", contact_sheet(
                 pixels, labels=["observed", "masked", "recovered"]))}
    for ext in ("mp4", "gif"):
        paths[f"recovered.{ext}"] = write_video(out / f"recovered.{ext}", pixels[2], native.fps)
        paths[f"comparison.{ext}"] = write_video(
            out / f"comparison.{ext}", side_by_side(pixels, ["observed", "masked", "recovered"]),
            native.fps)
    if model is None:
        paths["run"] = out / "run"
    return paths


def demo(out: str | Path, iters: int | None = None, progress: bool = True,
         preset: str = DEFAULT_PRESET, **overrides: Any) -> dict[str, Path]:
    """The main job on the shipped sample: train ``preset`` on ``data/water.mp4``, then write
    three synthesized clips (mp4 + gif), a contact sheet (observed row above synthesized rows) and
    the run's ``report.html``."""
    from .sample_data import sample_clip

    out = Path(out)
    check_output_folder(out)
    cfg = make_config(preset, iters=iters, **overrides)
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
