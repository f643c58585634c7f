"""The training loop around :func:`dyntex.coop.train_step` (Algorithm 1), and its bookkeeping:
random streams, checkpoints and resume, divergence rollback, metrics and previews.

Data flows one way: :mod:`dyntex.api` hands the trainer its data and run folder; the trainer
calls :mod:`dyntex.coop`; files are written by :class:`dyntex.runfolder.RunFolder` and the
divergence rules live in :class:`dyntex.divergence.DivergenceGuard`.
"""
from __future__ import annotations

import copy
import math
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

import torch

from . import distributed
from .clips import ClassWindows, TensorClips, WindowSampler
from .config import MODEL_KEYS, Config, config_from_dict
from .coop import CoopNets, Optimizers, train_step
from .divergence import DivergenceGuard
from .recovery import MaskedClip
from .errors import CheckpointError, ConfigError, DivergenceError
from .runfolder import (CHECKPOINT_FORMAT, METRIC_FIELDS, RunFolder, checkpoint_paths,  # noqa: F401
                        load_checkpoint, read_metrics)

PREVIEW_SEED = 12345  # fixed latents for previews, so they are comparable from step to step


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA, then Apple MPS, then the CPU; an unavailable explicit choice is an error."""
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is available (try --device auto)")
    if name == "mps" and not mps:
        raise ConfigError("--device mps was asked for but Apple MPS is not available (try --device auto)")
    return torch.device(name)


# ----------------------------------------------------------------------------------------------
# Models from checkpoints
# ----------------------------------------------------------------------------------------------
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
        if "chain_states" in state:   # persistent chains (absent: they restart at mu)
            model.chain_states.copy_(state["chain_states"])
        if model.generator_ema is not None:
            model.generator_ema.load_state_dict(state.get("generator_ema", state["generator"]))
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f"{path} does not fit this model ({str(exc).splitlines()[0]})") from None


# ----------------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------------
class Trainer:
    """Trains a :class:`CoopNets` model; with a ``run_dir`` it also writes checkpoints, metrics,
    previews (unless ``previews=False``; ``on_preview(folder, step, clips)`` replaces the
    default writer) and curves, and ``resume=True`` continues the run found there.

    >>> cfg = make_config("fast", iters=300)
    >>> model = Trainer(cfg, run_dir="runs/fire").fit(clips)     # doctest: +SKIP
    >>> model.synthesize(3, generator=torch.Generator().manual_seed(0))  # doctest: +SKIP
    """

    def __init__(self, config: Config, run_dir: str | Path | None = None, resume: bool = False,
                 meta: dict[str, Any] | None = None, progress: bool = False,
                 on_preview: Callable[[Path, int, torch.Tensor], None] | None = None,
                 previews: bool = True):
        self.meta = dict(meta or {})
        self.progress = progress
        self.on_preview, self.previews = on_preview, previews
        self.base_config = config  # the run's settings; model.config adds divergence recoveries
        self.guard = DivergenceGuard(config)
        self._good: dict[str, Any] | None = None  # in-memory rollback point (see _snapshot)
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
        self._first_window: torch.Tensor | None = None
        self._masked: MaskedClip | None = None       # recovery data, whose state is saved
        self._data_state: dict[str, torch.Tensor] | None = None
        self.last_stats: dict[str, float] | None = None
        self.run = RunFolder(run_dir, writer=self.dist.is_main) if run_dir is not None else None
        if self.run is not None:
            existing = self.run.checkpoints()
            if not resume:
                self.run.refuse_overwrite()
            elif existing:
                self._restore(load_checkpoint(existing[-1]), existing[-1])
            self.run.start(self.config.to_dict(), self.step)
        if self.dist.active:
            distributed.broadcast_module(self.model)
            torch.distributed.barrier()  # every rank has read the run folder before rank 0 writes

    @property
    def config(self) -> Config:
        return self.model.config

    @property
    def run_dir(self) -> Path | None:
        return self.run.path if self.run is not None else None

    @property
    def recoveries(self) -> int:
        return self.guard.recoveries

    # -- the loop ----------------------------------------------------------------------------
    def fit(self, data: Any, iters: int | None = None) -> CoopNets:
        """Train until step ``iters`` (default: the config's) on ``data``.

        ``data`` is a tensor of observed clips (N, C, T, S, S) in [-1, 1], a list of decoded
        :class:`dyntex.video.Video` (cut into T-frame windows by the config's ``window`` rule),
        or a :class:`~dyntex.clips.WindowSampler` / :class:`~dyntex.clips.TensorClips`. With
        ``window="first"`` every iteration sees all observed clips (as the authors' code); with
        ``"random"`` it sees ``batch`` random T-windows. Ctrl-C saves a checkpoint at the end of
        the current iteration, then raises KeyboardInterrupt.
        """
        data = self._data(data)
        self._masked = data if isinstance(data, MaskedClip) else None
        if self._masked is not None and self._data_state is not None:
            self._masked.load_state_dict(self._data_state)   # resumed: the saved completion
        if self.step == 0:
            self.model.init_from_data(data.mean_frame().to(self.device))
        self._first_window = data.first_window()
        batch = None if self.config.window == "first" else self.config.batch
        total = self.config.iters if iters is None else iters
        sync = distributed.average_gradients if self.dist.active else None
        bar = _progress(self.step, total, enabled=self.progress and self.dist.is_main)
        clock = _Clock(self.run.elapsed_seconds() if self.run is not None else 0.0)
        if self._saved_step != self.step or self.run is None:
            self._snapshot()  # a rollback point before the first iteration
        try:
            with _DeferredInterrupt() as interrupt:
                while self.step < total:
                    # Algorithm 1: observed clips Y, then one iteration (G0, D1, G1, D2, G2)
                    self._set_learning_rates()
                    if self._masked is not None:
                        # recovery: the generator explains the known pixels (and learns from
                        # them), then the missing ones are its rendering revised by Langevin
                        start = self._masked.explain(self.model, self.rng, self.opts.generator)
                        self._masked.revise(self.model, self.rng, start)
                    observed, labels = _with_labels(data.observed(batch, self.data_rng), self.device)
                    stats = train_step(self.model, self.opts, observed, self.rng, sync, labels)
                    problem = self.guard.problem(stats)
                    if problem is not None:
                        self._roll_back(problem, bar)
                        continue
                    self.step += 1
                    self._record(stats, clock, bar)
                    if interrupt.requested:
                        if self.run is not None:
                            self.save_checkpoint()
                        raise KeyboardInterrupt
        except DivergenceError:
            self.write_curves()  # the curves show how it went wrong
            raise
        finally:
            bar.close()
        if self.run is not None and self._saved_step != self.step:
            self._snapshot()
        if self._curves_step != self.step:
            self.write_curves()
        return self.model

    def _data(self, data: Any) -> WindowSampler | TensorClips | ClassWindows | MaskedClip:
        if self.model.conditional != isinstance(data, ClassWindows):
            raise ConfigError("a class-conditional model trains on ClassWindows (one sampler per "
                              "label), an unconditional one on anything else")
        if isinstance(data, (WindowSampler, TensorClips, ClassWindows, MaskedClip)):
            return data
        if isinstance(data, torch.Tensor):
            return TensorClips(data, config=self.config)
        return WindowSampler(list(data), self.config.frames, self.config.window)

    def _set_learning_rates(self) -> None:
        """Both rates for the coming iteration: the config's (lowered by recoveries), times the
        schedule's factor over the run's ``iters`` (a fit that stops earlier follows the same
        schedule, so a run trained in parts is the run trained at once)."""
        factor = lr_factor(self.config.lr_schedule, self.step, self.config.iters)
        for opt, lr in ((self.opts.descriptor, self.config.lr_des),
                        (self.opts.generator, self.config.lr_gen)):
            for group in opt.param_groups:
                group["lr"] = lr * factor

    # -- bookkeeping ---------------------------------------------------------------------------
    def _record(self, stats: dict[str, float], clock: "_Clock", bar) -> None:
        """After a good iteration: metrics row, checkpoint and preview when due, progress."""
        self.last_stats = stats
        if self.run is not None:
            self.run.log({"step": self.step, **stats, "seconds": clock.seconds(),
                          "lr_des": self.opts.descriptor.param_groups[0]["lr"],
                          "lr_gen": self.opts.generator.param_groups[0]["lr"],
                          "step_size": self.config.step_size})
        cfg = self.config
        if self.step % cfg.checkpoint_every == 0:
            self._snapshot()
        if self.run is not None and self.run.writer and self.step % cfg.preview_every == 0 \
                and (self.previews or self.on_preview is not None):
            self._write_preview()
            self.write_curves()
        bar.update(1)
        bar.set_postfix(des=f"{stats['des_loss']:.3g}", gen=f"{stats['gen_loss']:.3g}",
                        f_obs=f"{stats['energy_obs']:.3g}", f_syn=f"{stats['energy_syn']:.3g}")

    def preview(self) -> torch.Tensor:
        """Samples from fixed latents (same every time), for watching training progress (one
        per class for a conditional model)."""
        g = torch.Generator(device=self.device).manual_seed(PREVIEW_SEED)
        if self.model.conditional:
            n = len(self.model.labels)
            return self.model.synthesize(n, generator=g, labels=list(range(n)))
        return self.model.synthesize(self.config.chains, generator=g)

    def _write_preview(self) -> None:
        clips = self.preview()
        if self.on_preview is not None:
            self.on_preview(self.run.path / "samples", self.step, clips)
        else:
            self.run.write_preview(self.step, clips, self._first_window, self.meta.get("fps", 25.0))

    def write_curves(self) -> None:
        """Redraw ``curves.png`` from metrics.csv (rank 0 of a run with a folder only)."""
        if self.run is not None and self.run.writer:
            self.run.write_curves(self.step, self.base_config.diverge_rms)
            self._curves_step = self.step

    # -- divergence ----------------------------------------------------------------------------
    def _roll_back(self, problem: str, bar) -> None:
        """Back to the last rollback point with the rates lowered once more (the guard raises
        DivergenceError when no recovery is left)."""
        failed = self.step + 1
        self.guard.count(problem, failed)
        if self._good is not None:
            self._load_state(self._good, "the in-memory snapshot")
        else:
            path = checkpoint_paths(self.run.path)[-1]
            self._load_state(load_checkpoint(path), path)
        self.model.config = self.guard.config()
        event = self.guard.event(failed, problem, self.step)
        bar.write(f"warning: {event}")
        bar.n = self.step
        if self.run is not None and self.run.writer:
            self.run.trim_metrics(self.step)
            self.run.log({"step": self.step, "event": event})

    def _snapshot(self) -> None:
        """Remember the current state as the rollback point: a checkpoint when there is a run
        folder, a copy in memory when there is none or in data-parallel training (every rank must
        roll back together, without waiting on rank 0's file)."""
        streams = None
        if self.dist.active:
            streams = distributed.gather_objects({"train": self.rng.get_state(), "data": self.data_rng.get_state()})
        if self.run is not None:
            self.save_checkpoint(streams)
        if self.run is None or self.dist.active:
            self._good = copy.deepcopy(self._state(streams))

    # -- checkpoints -----------------------------------------------------------------------------
    def save_checkpoint(self, rank_streams: list[dict[str, torch.Tensor]] | None = None) -> Path | None:
        """Write ``checkpoints/step_N.pt`` atomically (rank 0 only) and prune old ones."""
        assert self.run is not None
        self._saved_step = self.step
        if not self.run.writer:
            return None
        return self.run.save_checkpoint(self._state(rank_streams), self.config.keep_checkpoints)

    def _state(self, rank_streams: list[dict[str, torch.Tensor]] | None = None) -> dict[str, Any]:
        """Everything a checkpoint holds: tensors and plain values only (``rank_streams``: every
        rank's random streams, in data-parallel training)."""
        return {
            "format": CHECKPOINT_FORMAT, "step": self.step, "config": self.base_config.to_dict(),
            "descriptor": self.model.descriptor.state_dict(),
            "generator": self.model.generator.state_dict(),
            "ref_mean": self.model.ref_mean.detach().cpu().clone(),
            **({"chain_states": self.model.chain_states.detach().cpu().clone()}
               if self.config.persistent else {}),
            **({"generator_ema": self.model.generator_ema.state_dict()}
               if self.model.generator_ema is not None else {}),
            "optimizers": self.opts.state_dict(),
            "rng": {"train": self.rng.get_state(), "data": self.data_rng.get_state(),
                    "ranks": rank_streams or []},
            "recoveries": self.recoveries, "meta": self.meta,
            **({"data": self._masked.state_dict()} if self._masked is not None else {}),
        }

    def _restore(self, state: dict[str, Any], path: Path) -> None:
        """Resume from a checkpoint of this run (the networks must be the same)."""
        saved = config_from_checkpoint(state)
        mismatch = {k: (getattr(saved, k), getattr(self.config, k)) for k in MODEL_KEYS
                    if getattr(saved, k) != getattr(self.config, k)}
        if mismatch:
            diff = ", ".join(f"{k}: checkpoint {a} vs now {b}" for k, (a, b) in mismatch.items())
            raise CheckpointError(f"cannot resume {path}: the networks differ ({diff})")
        self._load_state(state, path)
        self.guard.recoveries = int(state.get("recoveries", 0))
        self.model.config = self.guard.config()
        self.meta = {**state.get("meta", {}), **self.meta}

    def _load_state(self, state: dict[str, Any], path: Path | str) -> None:
        """Weights, optimiser states, this rank's random streams and the step of ``state``."""
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
        self._data_state = state.get("data")
        if self._masked is not None and self._data_state is not None:
            self._masked.load_state_dict(self._data_state)


def lr_factor(schedule: str, step: int, total: int) -> float:
    """The learning rates' factor at 0-based ``step`` of ``total``: 1 for ``constant``; for
    ``cosine`` from 1 at the first iteration to 0.1 at the last."""
    if schedule != "cosine" or total <= 1:
        return 1.0
    progress = min(1.0, step / (total - 1))
    return 0.1 + 0.45 * (1.0 + math.cos(math.pi * progress))


def _with_labels(batch: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(observed clips, their class labels or None) on ``device``."""
    clips, labels = batch if isinstance(batch, tuple) else (batch, None)
    return clips.to(device), None if labels is None else labels.to(device)


class _Clock:
    """Wall seconds of a run: those before this session plus this session's."""

    def __init__(self, before: float):
        self.before, self.start = before, time.perf_counter()

    def seconds(self) -> float:
        return self.before + time.perf_counter() - self.start


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
