"""The ``dyntex`` command: parses options, calls the library, turns its errors into one line.

No maths here: every job lives in :mod:`dyntex.api` (and :mod:`dyntex.eval.benchmark`).
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import click

from dyntex import allocator
from dyntex.config import (DEFAULT_PRESET, PRESETS, config_from_sources, load_config_file,
                           load_saved_config)
from dyntex.errors import DyntexError, InputWarning

# Exit codes: 1 = bad input / settings / outputs (one line on stderr), 130 = interrupted.
EXIT_ERROR, EXIT_INTERRUPTED = 1, 130


class _Group(click.Group):
    """Runs a command and maps failures to one clear line and a non-zero exit (``--debug``:
    the full traceback instead)."""

    def invoke(self, ctx: click.Context) -> Any:
        debug = ctx.params.get("debug", False)
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except DyntexError as exc:
            if debug:
                raise
            _fail(f"error: {exc}", EXIT_ERROR)
        except KeyboardInterrupt:
            if debug:
                raise
            _fail("interrupted (a checkpoint was saved if training had started; continue with --resume)",
                  EXIT_INTERRUPTED)
        except MemoryError:
            if debug:
                raise
            _fail("error: out of memory (try a smaller --size, --frames or --chains)", EXIT_ERROR)
        except Exception as exc:  # a bug, not bad input: still one line unless --debug
            if debug:
                raise
            _fail(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback, "
                  "and please report it)", EXIT_ERROR)


def _fail(message: str, code: int) -> None:
    click.echo(message.splitlines()[0] if message else "error", err=True)
    sys.exit(code)


@click.group(cls=_Group)
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.version_option(package_name="dyntex")
def main(debug: bool) -> None:
    """dyntex: learn dynamic textures from video (CoopNets) and synthesize new clips."""
    allocator.configure()  # before anything imports torch (dyntex.allocator says why)
    if not debug:
        warnings.simplefilter("always", category=InputWarning)
        warnings.showwarning = lambda msg, *a, **k: click.echo(f"warning: {msg}", err=True)


def _training_options(f):
    """Options that override the config (None = not given, so the preset/config file decides)."""
    opts = [
        click.option("--preset", type=click.Choice(sorted(PRESETS)), default=None,
                     help="Starting settings: quality (default: stationary multi-scale "
                          "networks fitted to the clip's colours, ~9 min a clip on a 2-core "
                          "CPU), standard (the same networks without a full-resolution stage, "
                          "about 0.55x the time, blurrier), fast (an earlier, quicker "
                          "default), paper (the authors' exact Exp. 7 networks, 64 x 128^2), "
                          "tiny (smoke tests)."),
        click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
                     help="JSON file of settings (keys as in RUN_DIR/config.json)."),
        click.option("--frames", type=int, help="Frames T per training clip."),
        click.option("--size", type=int, help="Frame side S (aspect-preserving resize + centre crop)."),
        click.option("--window", type=click.Choice(["first", "random"]), default=None,
                     help="first: the first T frames; random: a random T-window per iteration."),
        click.option("--iters", type=int, help="Training iterations."),
        click.option("--chains", type=int, help="Synthesized clips (Langevin chains) per iteration."),
        click.option("--langevin-steps", type=int, help="Descriptor Langevin steps l per iteration."),
        click.option("--step-size", type=float, help="Langevin step size delta."),
        click.option("--ref-sigma", type=float, help="Std s of the descriptor's Gaussian reference."),
        click.option("--lr-des", type=float, help="Descriptor learning rate (Adam)."),
        click.option("--lr-gen", type=float, help="Generator learning rate (Adam)."),
        click.option("--seed", type=int, help="Seed of all random draws."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default=None,
                     help="Where to train (auto: CUDA, then MPS, then CPU)."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


_OVERRIDES = ("frames", "size", "window", "iters", "chains", "langevin_steps", "step_size",
              "ref_sigma", "lr_des", "lr_gen", "seed", "device")


@main.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(readable=False, path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path),
              help="Run folder: config.json, metrics.csv, checkpoints/, samples/.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its latest checkpoint.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--conditional", is_flag=True,
              help="One class-conditional model over every clip in the folder INPUT, each clip "
                   "(file or sub-folder name) a class; synthesize with --label.")
@_training_options
def train(input_path: Path, out: Path, resume: bool, quiet: bool, conditional: bool,
          preset: str | None, config_file: Path | None, **flags: Any) -> None:
    """Train a CoopNets model on INPUT (a video, a gif, a folder of frames, or a folder of clips;
    mask videos are skipped)."""
    from dyntex import api

    saved = out / "config.json"
    file_values = load_config_file(config_file) if config_file else None
    if resume and saved.exists() and file_values is None and preset is None:
        file_values = load_saved_config(out)  # continue with the run's own settings
    cfg = config_from_sources(preset, file_values, {k: flags[k] for k in _OVERRIDES})
    trainer = api.train(input_path, out, cfg, resume=resume, progress=not quiet,
                        conditional=conditional)
    last = trainer.last_stats
    click.echo(f"trained {out} to step {trainer.step}" + (
        f": des_loss {last['des_loss']:.4g}, gen_loss {last['gen_loss']:.4g}, "
        f"f(observed) {last['energy_obs']:.4g}, f(revised) {last['energy_syn']:.4g}" if last else ""))


@main.command()
@click.argument("run_dir", type=click.Path(readable=False, path_type=Path))
@click.option("-n", "n", type=int, default=3, show_default=True, help="Number of clips.")
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path),
              help="Output folder.")
@click.option("--format", "formats", default="mp4,gif", show_default=True,
              help="Comma-separated subset of mp4, gif, png (frame folders), npy (float [0,1]).")
@click.option("--frames", type=int, default=None,
              help="Frames per clip (default: the training length; longer is allowed).")
@click.option("--size", type=int, default=None,
              help="Frame side (default: the training size; another size needs the multiscale "
                   "networks of the quality and standard presets).")
@click.option("--langevin-steps", type=int, default=0, show_default=True,
              help="Refine the generator's clips by K descriptor Langevin steps.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto")
@click.option("--label", default=None,
              help="Class of a conditional run (trained with --conditional), or 'all': N clips "
                   "of each class, one sub-folder per class.")
@click.option("--interpolate", default=None, metavar="A,B",
              help="Conditional run: one clip (interpolation.mp4/.gif) of 5 panels blending "
                   "class A into class B, from the same latents.")
def synthesize(run_dir: Path, n: int, out: Path, formats: str, frames: int | None,
               size: int | None, langevin_steps: int, seed: int, device: str,
               label: str | None, interpolate: str | None) -> None:
    """Sample N new clips from the model trained in RUN_DIR."""
    from dyntex import api

    fmts = [f.strip().lower() for f in formats.split(",") if f.strip()]
    if interpolate is not None:
        pair = [p.strip() for p in interpolate.split(",")]
        if len(pair) != 2 or not all(pair):
            raise click.BadParameter("give two class names, e.g. --interpolate fire_pot,flag",
                                     param_hint="--interpolate")
        written = api.interpolate(run_dir, pair[0], pair[1], out, formats=fmts, frames=frames,
                                  seed=seed, device=device)
        click.echo(f"wrote {', '.join(map(str, written))}")
        return
    written = api.synthesize(run_dir, n, out, fmts, frames=frames, langevin_steps=langevin_steps,
                             seed=seed, device=device, size=size, label=label)
    click.echo(f"wrote {len(written)} outputs to {out}")


@main.command()
@click.argument("video", type=click.Path(readable=False, path_type=Path))
@click.option("--mask", type=click.Path(readable=False, path_type=Path), default=None,
              help="Missing pixels (nonzero): a video, a folder of frames, one image (every "
                   "frame) or a .npy / .mat array.")
@click.option("--occlude", default=None, metavar="SPEC",
              help="Drawn occlusion instead of a mask: pepper:P (each pixel missing with "
                   "probability P), block:B (a B x B block per frame), frames:P (whole frames).")
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path),
              help="Output folder: recovered.mp4/.gif/.npy, mask.npy, comparison.mp4/.gif, run/.")
@click.option("--run", "run_dir", type=click.Path(readable=False, path_type=Path), default=None,
              help="Fill with this trained run instead of training on VIDEO.")
@click.option("--steps", type=int, default=None,
              help="With --run: Langevin steps of the clip's latent on its posterior given the "
                   "known pixels, before the generator renders the missing ones (default: 30 l).")
@click.option("--resume", is_flag=True, help="Continue the training in --out/run.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@_training_options
def recover(video: Path, mask: Path | None, occlude: str | None, out: Path, run_dir: Path | None,
            steps: int | None, resume: bool, quiet: bool, preset: str | None,
            config_file: Path | None, **flags: Any) -> None:
    """Fill the missing pixels of the first T frames of VIDEO (--mask or --occlude), learning
    from the incomplete clip itself (or with a trained --run)."""
    from dyntex import api

    file_values = load_config_file(config_file) if config_file else None
    saved = out / "run" / "config.json"
    if resume and saved.exists() and file_values is None and preset is None:
        file_values = load_saved_config(out / "run")
    cfg = config_from_sources(preset, file_values, {k: flags[k] for k in _OVERRIDES})
    paths = api.recover(video, out, cfg, mask=mask, occlude=occlude, run=run_dir, steps=steps,
                        resume=resume, progress=not quiet, device=flags.get("device") or "auto")
    click.echo(f"wrote {out}/recovered.mp4, recovered.gif, recovered.npy, mask.npy, "
               f"comparison.mp4, comparison.gif, comparison.png"
               + (" and run/" if "run" in paths else ""))


@main.command()
@click.option("--out", "-o", default="demo_out", show_default=True,
              type=click.Path(path_type=Path))
@click.option("--preset", type=click.Choice(sorted(p for p in PRESETS if p != "tiny")),
              default=DEFAULT_PRESET, show_default=True,
              help="standard: the earlier default, about 0.55x the time, softer waves.")
@click.option("--iters", type=int, default=None, help="Training iterations (default: the preset's).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default=None)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def demo(out: Path, preset: str, iters: int | None, device: str | None, quiet: bool) -> None:
    """Train a preset (default: quality) on the shipped water clip and write samples and a
    contact sheet."""
    from dyntex import api

    paths = api.demo(out, iters=iters, progress=not quiet, preset=preset, device=device)
    click.echo(f"samples in {paths['samples']}/, contact sheet {paths['contact_sheet']}, "
               f"training report {paths['report']}")


@main.command()
@click.argument("run_dir", type=click.Path(readable=False, path_type=Path))
def report(run_dir: Path) -> None:
    """Write RUN_DIR/report.html: training curves, preview contact sheets, latest samples."""
    from dyntex.report import write_run_report

    click.echo(f"wrote {write_run_report(run_dir)}")


@main.command()
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option("--methods", default="coop,coop+langevin,lds,lds-new,hosvd,hosvd-new,fftlds,fftlds-new",
              show_default=True,
              help="Comma-separated subset of coop, coop+langevin (CoopNets' samples after l "
                   "descriptor Langevin steps), descriptor, generator (each network trained "
                   "alone; a training each), lds, lds-new, hosvd, hosvd-new, fftlds, fftlds-new "
                   "(X: continues the observed clip; X-new: a new sample from the fitted "
                   "model's stationary distribution).")
@click.option("--clips", default=None, help="Comma-separated clip names (default: every clip).")
@click.option("--frames", type=int, default=32, show_default=True,
              help="T: each method is fit on the first T frames and synthesizes T frames.")
@click.option("--size", type=int, default=64, show_default=True, help="Frame side S.")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default=DEFAULT_PRESET,
              show_default=True, help="CoopNets preset: its networks and optimisation (T and S are --frames and --size).")
@click.option("--iters", type=int, default=None, help="CoopNets iterations (default: the preset's).")
@click.option("--config", "config_file", type=click.Path(path_type=Path), default=None,
              help="JSON file of CoopNets settings on top of --preset (keys as in "
                   "RUN_DIR/config.json; T, S, iterations and seed stay the options above).")
@click.option("--samples", type=int, default=3, show_default=True, help="K: samples per method.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", "-o", default="results", show_default=True, type=click.Path(path_type=Path),
              help="Results folder (tables, videos, contact sheet, cache/).")
@click.option("--noise/--no-noise", default=True, show_default=True,
              help="Baselines roll out with their noise term; --no-noise: deterministic "
                   "rollouts, labelled 'reconstruction'.")
@click.option("--stabilize", is_flag=True, help="Reflect unstable eigenvalues of the fitted A.")
@click.option("--rgb", is_flag=True, help="PSNR/SSIM on RGB instead of luma.")
@click.option("--hosvd-energy", type=float, default=0.999, show_default=True,
              help="Fraction of each spatial mode's energy HOSVD's ranks keep (1: full spatial "
                   "ranks, the shared reference's setting).")
@click.option("--ps/--no-ps", default=True, show_default=True,
              help="Score the Portilla-Simoncelli statistics (the slowest scores, ~0.4 s a "
                   "32 x 64^2 clip).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default=None,
              help="Where CoopNets trains (default: the preset's, auto).")
@click.option("--task", type=click.Choice(["synthesis", "recovery"]), default="synthesis",
              show_default=True,
              help="recovery: occlude the first T frames (--occlude) and fill them in, scored "
                   "on the missing pixels (methods coop, interp, telea, lds).")
@click.option("--occlude", default="pepper:0.5", show_default=True, metavar="SPEC",
              help="--task recovery: pepper:P, block:B, frames:P, or own (each clip's own mask, "
                   "scored against its known background).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def benchmark(data_dir: Path, out: Path, quiet: bool, task: str, occlude: str,
              config_file: Path | None, **options: Any) -> None:
    """Compare CoopNets with LDS, HOSVD and FFT-LDS on the clips in DATA_DIR."""
    from dyntex.eval.benchmark import run_benchmark

    settings = load_config_file(config_file) if config_file else {}
    if "__preset__" in settings:                # refused with the other protocol keys
        settings["preset"] = settings.pop("__preset__")
    options["coop_settings"] = settings

    if task == "recovery":
        from dyntex.eval.recovery import run_recovery_benchmark

        given = click.get_current_context().get_parameter_source("methods")
        methods = options.pop("methods") if given != click.core.ParameterSource.DEFAULT else None
        options.pop("methods", None)
        keep = ("clips", "frames", "size", "seed", "preset", "iters", "device", "coop_settings")
        result = run_recovery_benchmark(data_dir, out, occlude, methods, progress=not quiet,
                                        **{k: options[k] for k in keep})
        click.echo(result["text"])
        click.echo(f"wrote {out}/recovery_*.md, .json and side-by-side videos "
                   f"({result['wall_seconds']:.1f} s)")
        return
    try:
        report = run_benchmark(data_dir, out, progress=not quiet, **options)
    except KeyboardInterrupt:
        if click.get_current_context().find_root().params.get("debug"):
            raise
        _fail(f"interrupted; finished results are cached in {out}/cache: run the same command "
              "again to continue", EXIT_INTERRUPTED)
    click.echo(report.text)
    click.echo(f"wrote {out}/table.md, results.csv, results.json, side_by_side/, "
               f"contact_sheet.png ({report.wall_seconds:.1f} s) and report.html (open it in a browser)")


@main.command()
@click.option("--preset", type=click.Choice(sorted(p for p in PRESETS if p != "tiny")),
              default="paper", show_default=True,
              help="Networks and settings to time.")
@click.option("--frames", type=int, default=None, help="Frames T (default: the preset's).")
@click.option("--size", type=int, default=None, help="Frame side S (default: the preset's).")
@click.option("--chains", type=int, default=None, help="Langevin chains (default: the preset's).")
@click.option("--langevin-steps", type=int, default=None, help="Langevin steps l (default: the preset's).")
@click.option("--iters", type=int, default=3, show_default=True,
              help="Timed iterations (the median is reported).")
@click.option("--warmup", type=int, default=1, show_default=True, help="Untimed iterations first.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="cpu",
              show_default=True)
@click.option("--threads", type=int, default=None, help="CPU threads (default: physical cores).")
@click.option("--precision", type=click.Choice(["fp32", "tf32", "bf16"]), default="fp32",
              show_default=True, help="tf32: TF32 matmuls/convs on CUDA; bf16: autocast.")
@click.option("--no-fastops", "no_fastops", is_flag=True,
              help="Time the plain PyTorch formulation (the 'before' of the fast layers).")
@click.option("--no-calibration", is_flag=True, help="Skip the peak-FLOP/s calibration kernels.")
@click.option("--no-baselines", is_flag=True, help="Skip the LDS/HOSVD timings.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def speed(no_fastops: bool, no_calibration: bool, no_baselines: bool, as_json: bool,
          **options: Any) -> None:
    """Time a training iteration (and synthesis, Langevin, baselines) against this machine's peak."""
    import json

    from dyntex.speed import format_table, measure

    say = None if as_json else (lambda msg: click.echo(f"... {msg}", err=True))
    result = measure(fast_ops=not no_fastops, calibration=not no_calibration, progress=say,
                     **options)
    if not no_baselines:
        from dyntex.eval.baselines import timing

        if say:
            say("LDS / HOSVD baselines")
        result.update(timing())
    click.echo(json.dumps(result, indent=2) if as_json else format_table(result))


if __name__ == "__main__":
    main()
