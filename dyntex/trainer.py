"""The training loop around :func:`dyntex.coop.train_step`: run folder, checkpoints, metrics,
previews and resume.

A run folder holds::

    config.json            the run's settings (usable again with --config)
    metrics.csv            one row per iteration: losses, energies, Langevin shift, seconds
    checkpoints/step_N.pt  weights-only checkpoints (the newest ``keep_checkpoints`` are kept)
    samples/step_N.gif     preview samples from fixed latents, and a contact sheet PNG
"""
from __future__ import annotations

import csv
import copy
import json
import math
import pickle
import re
import signal
import threading
import time
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch

from .config import MODEL_KEYS, Config, config_from_dict
from . import distributed
from .coop import CoopNets, Optimizers, train_step
from .errors import CheckpointError, ConfigError, DivergenceError
from .fileio import TEMP_SUFFIX, atomic_write

CHECKPOINT_FORMAT = 1
METRIC_FIELDS = ("step", "des_loss", "gen_loss", "energy_obs", "energy_syn", "langevin_rms", "seconds",
                 "lr_des", "lr_gen", "step_size", "event")
PREVIEW_SEED = 12345  # fixed latents for previews, so they are comparable from step to step
_CKPT_RE = re.compile(r"step_(\d+)\.pt$")


# ----------------------------------------------------------------------------------------------
# Devices and atomic files
# ----------------------------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA, then Apple MPS, then the CPU; an unavailable explicit choice is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is available (try --device auto)")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("--device mps was asked for but Apple MPS is not available (try --device auto)")
    return torch.device(name)


def remove_stale_temps(run_dir: Path) -> None:
    """Delete temporary files left by writes that a crash (SIGKILL, power loss) cut short:
    ``.NAME.*.tmp`` from :func:`dyntex.fileio.atomic_path`. Only
    called when a run starts or resumes, when no other process writes to the run folder."""
    for folder in (run_dir, run_dir / "checkpoints", run_dir / "samples"):
        if folder.is_dir():
            for stale in folder.glob(f".*{TEMP_SUFFIX}"):
                stale.unlink(missing_ok=True)


def write_json(path: Path, data: Any) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(data, indent=2) + "\n"))


# ----------------------------------------------------------------------------------------------
# Checkpoints: tensors and plain values only, loadable with weights_only=True
# ----------------------------------------------------------------------------------------------
def checkpoint_paths(run_dir: Path) -> list[Path]:
    """The run's checkpoints, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    found = [(int(m.group(1)), p) for p in folder.glob("step_*.pt") if (m := _CKPT_RE.search(p.name))]
    return [p for _, p in sorted(found)]


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``) onto the CPU, or raise CheckpointError."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except pickle.UnpicklingError:
        raise CheckpointError(f"refusing to load {path}: it holds Python objects, not just tensors "
                              "(a weights-only checkpoint is required; it may be unsafe)") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable ({type(exc).__name__})") from None
    needed = {"format", "step", "config", "descriptor", "generator"}
    if not isinstance(state, dict) or not needed <= state.keys():
        raise CheckpointError(f"{path} is not a dyntex checkpoint")
    if state["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} has checkpoint format {state['format']}, this dyntex reads "
                              f"format {CHECKPOINT_FORMAT}")
    return state


def config_from_checkpoint(state: dict[str, Any]) -> Config:
    try:
        return config_from_dict(state["config"])
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint holds an unusable config: {exc}") from None


def load_model(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[CoopNets, dict[str, Any]]:
    """The newest model of a run folder, and its checkpoint's metadata (step, fps, source)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run folder {run_dir} does not exist")
    paths = checkpoint_paths(run_dir)
    if not paths:
        raise CheckpointError(f"no checkpoint in {run_dir}/checkpoints (train first: dyntex train ... --out {run_dir})")
    state = load_checkpoint(paths[-1])
    model = CoopNets(config_from_checkpoint(state))
    _load_weights(model, state, paths[-1])
    device = resolve_device(device) if isinstance(device, str) else device
    return model.to(device), {"step": state["step"], **state.get("meta", {})}


def _load_weights(model: CoopNets, state: dict[str, Any], path: Path) -> None:
    try:
        model.descriptor.load_state_dict(state["descriptor"])
        model.generator.load_state_dict(state["generator"])
        if "ref_mean" in state:  # checkpoints before the data-centred reference have none (zero)
            model.ref_mean.copy_(state["ref_mean"])
        if model.generator_ema is not None:
            model.generator_ema.load_state_dict(state.get("generator_ema", state["generator"]))
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f"{path} does not fit this model ({str(exc).splitlines()[0]})") from None


# ----------------------------------------------------------------------------------------------
# Observed data
# ----------------------------------------------------------------------------------------------
class TensorClips:
    """Observed clips already in model space, (N, C, T, S, S).

    ``observed(None)`` gives all of them; ``observed(b)`` draws ``b`` at random.
    """

    def __init__(self, clips: torch.Tensor, generator: torch.Generator, config: Config):
        want = (3, config.frames, config.size, config.size)
        if clips.ndim != 5 or tuple(clips.shape[1:]) != want:
            raise ConfigError(f"observed clips must be (N, {', '.join(map(str, want))}) for this config; "
                              f"got {tuple(clips.shape)}")
        self.clips, self.generator = clips, generator

    def observed(self, batch: int | None = None) -> torch.Tensor:
        if batch is None:
            return self.clips
        return self.clips[torch.randint(len(self.clips), (batch,), generator=self.generator)]

    def mean_frame(self) -> torch.Tensor:
        """Mean (C, H, W) over all frames of all observed clips (model space)."""
        return self.clips.float().mean(dim=(0, 2))


# ----------------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------------
class Trainer:
    """Trains a :class:`CoopNets` model; with a ``run_dir`` it also writes checkpoints and logs.

    >>> cfg = make_config("fast", iters=300)
    >>> model = Trainer(cfg, run_dir="runs/fire").fit(clips)     # doctest: +SKIP
    >>> model.synthesize(3, generator=torch.Generator().manual_seed(0))  # doctest: +SKIP
    """

    def __init__(self, config: Config, run_dir: str | Path | None = None, resume: bool = False,
                 meta: dict[str, Any] | None = None, progress: bool = False,
                 on_preview: Callable[[Path, int, torch.Tensor], None] | None = None):
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.meta = dict(meta or {})
        self.progress = progress
        self.on_preview = on_preview
        self.base_config = config  # the run's settings; model.config adds divergence recoveries
        self.recoveries = 0
        self._good: dict[str, Any] | None = None  # in-memory rollback point when there is no run_dir
        self.dist = distributed.current()
        self.device = resolve_device(config.device)
        if self.device.type == "cuda" and self.dist.active:
            self.device = torch.device("cuda", self.dist.local_rank)
        torch.manual_seed(config.seed)  # network initialisation
        self.model = CoopNets(config).to(self.device)
        self.opts = Optimizers.for_model(self.model)
        self.step = 0
        seed = config.seed + self.dist.rank * distributed.RANK_SEED_STRIDE
        self.rng = torch.Generator(device=self.device).manual_seed(seed)       # latents, Langevin
        self.data_rng = torch.Generator().manual_seed(seed + 1)                # observed windows
        self._saved_step = -1
        self._curves_step = -1
        self.last_stats: dict[str, float] | None = None
        if self.run_dir is not None:
            self._prepare_run_dir(resume)
        if self.dist.active:
            distributed.broadcast_module(self.model)
            torch.distributed.barrier()  # every rank has read the run folder before rank 0 writes

    @property
    def config(self) -> Config:
        return self.model.config

    # -- run folder --------------------------------------------------------------------------
    def _prepare_run_dir(self, resume: bool) -> None:
        assert self.run_dir is not None
        existing = checkpoint_paths(self.run_dir) if self.run_dir.is_dir() else []
        if existing and not resume:
            raise CheckpointError(f"{self.run_dir} already holds a trained run (step "
                                  f"{_CKPT_RE.search(existing[-1].name).group(1)}); use --resume to "
                                  "continue it or choose another --out")
        if resume and existing:
            self._restore(load_checkpoint(existing[-1]), existing[-1])
        if self.dist.is_main:
            remove_stale_temps(self.run_dir)
            write_json(self.run_dir / "config.json", self.config.to_dict())
            self._trim_metrics()

    def _restore(self, state: dict[str, Any], path: Path) -> None:
        saved = config_from_checkpoint(state)
        mismatch = {k: (getattr(saved, k), getattr(self.config, k)) for k in MODEL_KEYS
                    if getattr(saved, k) != getattr(self.config, k)}
        if mismatch:
            diff = ", ".join(f"{k}: checkpoint {a} vs now {b}" for k, (a, b) in mismatch.items())
            raise CheckpointError(f"cannot resume {path}: the networks differ ({diff})")
        self._load_state(state, path)
        self.recoveries = int(state.get("recoveries", 0))
        self._apply_recoveries()
        self.meta = {**state.get("meta", {}), **self.meta}

    def _load_state(self, state: dict[str, Any], path: Path | str) -> None:
        _load_weights(self.model, state, Path(path))
        try:
            self.opts.load_state_dict(state["optimizers"])
            streams = state["rng"]
            ranks = streams.get("ranks") or []
            if self.dist.active and len(ranks) == self.dist.world_size:
                streams = ranks[self.dist.rank]
            elif self.dist.rank > 0:  # saved by another number of ranks: fresh, reproducible streams
                seed = self.base_config.seed + self.dist.rank * distributed.RANK_SEED_STRIDE + int(state["step"])
                streams = {"train": torch.Generator(device=self.device).manual_seed(seed).get_state(),
                           "data": torch.Generator().manual_seed(seed + 1).get_state()}
            self.rng.set_state(streams["train"])
            self.data_rng.set_state(streams["data"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"{path} lacks a usable optimizer or RNG state ({exc})") from None
        self.step = self._saved_step = int(state["step"])

    def _state(self, rank_streams: list[dict[str, torch.Tensor]] | None = None) -> dict[str, Any]:
        """Everything a checkpoint holds: tensors and plain values only (``rank_streams``: every
        rank's random streams, in data-parallel training)."""
        return {
            "format": CHECKPOINT_FORMAT, "step": self.step, "config": self.base_config.to_dict(),
            "descriptor": self.model.descriptor.state_dict(),
            "generator": self.model.generator.state_dict(),
            "ref_mean": self.model.ref_mean.detach().cpu().clone(),
            **({"generator_ema": self.model.generator_ema.state_dict()}
               if self.model.generator_ema is not None else {}),
            "optimizers": self.opts.state_dict(),
            "rng": {"train": self.rng.get_state(), "data": self.data_rng.get_state(),
                    "ranks": rank_streams or []},
            "recoveries": self.recoveries, "meta": self.meta,
        }

    # -- divergence ------------------------------------------------------------------------
    def _apply_recoveries(self) -> None:
        """Lower the configured rate(s) by ``diverge_factor`` per recovery so far."""
        base = self.base_config
        scale = base.diverge_factor ** self.recoveries
        lower = base.diverge_lower
        cfg = base.replace(
            lr_des=base.lr_des * (scale if lower in ("lr_des", "both") else 1.0),
            step_size=base.step_size * (scale if lower in ("step_size", "both") else 1.0))
        self.model.config = cfg
        for group in self.opts.descriptor.param_groups:
            group["lr"] = cfg.lr_des

    def _set_learning_rates(self, total: int) -> None:
        """Both rates for the coming iteration: the config's (lowered by recoveries), times the
        schedule's factor (``cosine``: from 1 at the first iteration to 0.1 at the last)."""
        factor = 1.0
        if self.config.lr_schedule == "cosine" and total > 1:
            progress = min(1.0, self.step / (total - 1))
            factor = 0.1 + 0.45 * (1.0 + math.cos(math.pi * progress))
        for opt, lr in ((self.opts.descriptor, self.config.lr_des),
                        (self.opts.generator, self.config.lr_gen)):
            for group in opt.param_groups:
                group["lr"] = lr * factor

    def _divergence(self, stats: dict[str, float]) -> str | None:
        """Why this iteration diverged, or None: non-finite numbers or exploding revisions."""
        bad = [k for k, v in stats.items() if not math.isfinite(v)]
        if bad:
            return f"non-finite {', '.join(bad)}"
        if stats["langevin_rms"] > self.base_config.diverge_rms:
            return f"Langevin revisions exploded (RMS shift {stats['langevin_rms']:.3g})"
        return None

    def _recover(self, problem: str) -> str:
        """Roll back to the last good state with lowered rates; raise when out of retries."""
        failed = self.step + 1
        self.recoveries += 1
        if self.recoveries > self.base_config.diverge_retries:
            raise DivergenceError(
                f"training diverged at step {failed} ({problem}) and did not recover after "
                f"{self.base_config.diverge_retries} retries; try a lower --lr-des or --step-size")
        if self._good is not None:
            state, path = self._good, "the in-memory snapshot"
        else:
            path = checkpoint_paths(self.run_dir)[-1]
            state = load_checkpoint(path)
        recoveries = self.recoveries
        self._load_state(state, path)
        self.recoveries = recoveries
        self._apply_recoveries()
        cfg = self.config
        return (f"diverged at step {failed} ({problem}); rolled back to step {self.step}, "
                f"lr_des {cfg.lr_des:.3g}, step_size {cfg.step_size:.3g} "
                f"(recovery {self.recoveries} of {self.base_config.diverge_retries})")

    def _snapshot(self) -> None:
        """Remember the current state as the rollback point: a checkpoint when there is a run
        folder, a copy in memory when there is none or in data-parallel training (every rank must
        roll back together, without waiting on rank 0's file)."""
        streams = None
        if self.dist.active:
            streams = distributed.gather_objects({"train": self.rng.get_state(), "data": self.data_rng.get_state()})
        if self.run_dir is not None:
            self.save_checkpoint(streams)
        if self.run_dir is None or self.dist.active:
            self._good = copy.deepcopy(self._state(streams))

    def save_checkpoint(self, rank_streams: list[dict[str, torch.Tensor]] | None = None) -> Path | None:
        """Write ``checkpoints/step_N.pt`` atomically (rank 0 only) and prune old ones."""
        assert self.run_dir is not None
        self._saved_step = self.step
        if not self.dist.is_main:
            return None
        state = self._state(rank_streams)
        path = self.run_dir / "checkpoints" / f"step_{self.step:06d}.pt"
        atomic_write(path, lambda p: torch.save(state, p))
        for old in checkpoint_paths(self.run_dir)[: -self.config.keep_checkpoints]:
            old.unlink(missing_ok=True)
        return path

    def _metrics_path(self) -> Path:
        assert self.run_dir is not None
        return self.run_dir / "metrics.csv"

    def _trim_metrics(self) -> None:
        """Keep the metric rows up to the restored step (work after the checkpoint was lost)."""
        path = self._metrics_path()
        rows = []
        if path.exists():
            with path.open(newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if r.get("step", "").isdigit() and int(r["step"]) <= self.step]

        def write(p: Path) -> None:
            with p.open("w", newline="") as fh:
                w = csv.DictWriter(fh, METRIC_FIELDS)
                w.writeheader()
                w.writerows({k: r.get(k, "") for k in METRIC_FIELDS} for r in rows)

        atomic_write(path, write)

    def _log(self, row: dict[str, float]) -> None:
        with self._metrics_path().open("a", newline="") as fh:
            csv.DictWriter(fh, METRIC_FIELDS, restval="").writerow(
                {k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})

    def preview(self) -> torch.Tensor:
        """Samples from fixed latents (same every time), for watching training progress."""
        g = torch.Generator(device=self.device).manual_seed(PREVIEW_SEED)
        return self.model.synthesize(self.config.chains, generator=g)

    # -- the loop ----------------------------------------------------------------------------
    def fit(self, data: Any, iters: int | None = None) -> CoopNets:
        """Train until step ``iters`` (default: the config's) on ``data``.

        ``data`` is a tensor of observed clips (N, C, T, S, S) in [-1, 1], or a list of decoded
        :class:`dyntex.video.Video` (cut into T-frame windows by the config's ``window`` rule).
        With ``window="first"`` every iteration sees all observed clips (as the authors' code);
        with ``"random"`` it sees ``batch`` random T-windows. Ctrl-C saves a checkpoint at the end
        of the current iteration, then raises KeyboardInterrupt.
        """
        data = self._sampler(data)
        if self.step == 0:
            self.model.init_from_data(data.mean_frame().to(self.device))
        sync = distributed.average_gradients if self.dist.active else None
        batch = None if self.config.window == "first" else self.config.batch
        total = self.config.iters if iters is None else iters
        bar = _progress(self.step, total, enabled=self.progress and self.dist.is_main)
        start = time.perf_counter()
        done_before = self._elapsed_before()
        if self._saved_step != self.step or self.run_dir is None:
            self._snapshot()  # a rollback point before the first iteration
        try:
            with _DeferredInterrupt() as interrupt:
                while self.step < total:
                    observed = data.observed(batch).to(self.device)
                    self._set_learning_rates(total)
                    stats = train_step(self.model, self.opts, observed, self.rng, sync)
                    problem = self._divergence(stats)
                    if problem is not None:
                        event = self._recover(problem)
                        bar.write(f"warning: {event}")
                        bar.n = self.step
                        if self.run_dir is not None and self.dist.is_main:
                            self._trim_metrics()
                            self._log({"step": self.step, "event": event})
                        continue
                    self.step += 1
                    self.last_stats = stats
                    row = {"step": self.step, **stats, "seconds": done_before + time.perf_counter() - start,
                           "lr_des": self.opts.descriptor.param_groups[0]["lr"],
                           "lr_gen": self.opts.generator.param_groups[0]["lr"],
                           "step_size": self.config.step_size}
                    if self.run_dir is not None and self.dist.is_main:
                        self._log(row)
                    self._periodic()
                    bar.update(1)
                    bar.set_postfix(des=f"{stats['des_loss']:.3g}", gen=f"{stats['gen_loss']:.3g}",
                                    f_obs=f"{stats['energy_obs']:.3g}", f_syn=f"{stats['energy_syn']:.3g}")
                    if interrupt.requested:
                        if self.run_dir is not None:
                            self.save_checkpoint()
                        raise KeyboardInterrupt
        except DivergenceError:
            self.write_curves()  # the curves show how it went wrong
            raise
        finally:
            bar.close()
        if self.run_dir is not None and self._saved_step != self.step:
            self._snapshot()
        if self._curves_step != self.step:
            self.write_curves()
        return self.model

    def _sampler(self, data: Any) -> Any:
        from .clips import WindowSampler

        if isinstance(data, torch.Tensor):
            return TensorClips(data, self.data_rng, self.config)
        return WindowSampler(list(data), self.config.frames, self.config.window, self.data_rng)

    def _periodic(self) -> None:
        cfg = self.config
        if self.step % cfg.checkpoint_every == 0:
            self._snapshot()
        if (self.run_dir is not None and self.dist.is_main and self.step % cfg.preview_every == 0
                and self.on_preview is not None):
            self.on_preview(self.run_dir / "samples", self.step, self.preview())
            self.write_curves()

    def write_curves(self) -> None:
        """Redraw ``curves.png`` from metrics.csv (rank 0 of a run with a folder only)."""
        if self.run_dir is None or not self.dist.is_main:
            return
        from .curves import plot_curves, read_rows

        plot_curves(read_rows(self._metrics_path()), self.run_dir / "curves.png",
                    title=f"{self.run_dir.name}, step {self.step}", diverge_rms=self.base_config.diverge_rms)
        self._curves_step = self.step

    def _elapsed_before(self) -> float:
        """Wall seconds already spent in this run (from its metrics), so 'seconds' accumulates."""
        if self.run_dir is None or not self._metrics_path().exists():
            return 0.0
        with self._metrics_path().open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        try:
            return float(rows[-1]["seconds"]) if rows else 0.0
        except (KeyError, ValueError):
            return 0.0


class _DeferredInterrupt:
    """Turn the first Ctrl-C into a flag checked between iterations (so the checkpoint written on
    interrupt holds a consistent state); a second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "_DeferredInterrupt":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _progress(initial: int, total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="it", dynamic_ncols=True,
                desc="train")


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The metrics CSV as a list of dicts: numbers as floats, ``event`` as text ('' if none)."""
    path = Path(run_dir) / "metrics.csv"
    with path.open(newline="") as fh:
        return [{k: (v if k == "event" else float(v) if v else math.nan) for k, v in r.items()}
                for r in csv.DictReader(fh)]
