"""One cooperative-training iteration ("MCMC teaching") and synthesis over the two networks.

Xie, Lu, Gao, Zhu, Wu, "Cooperative Training of Descriptor and Generator Networks" (TPAMI),
Algorithm 1. Files, progress bars and checkpoints live in :mod:`dyntex.trainer`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from . import fastops
from .config import Config, class_names
from .langevin import infer_latent, revise
from .errors import ConfigError
from .multiscale import FieldGenerator
from .nets import Descriptor, Generator, build_nets
from .opticalflow import DIRECTIONS, SCALES, flow_pyramid

Tensor = torch.Tensor


class CoopNets(nn.Module):
    """The descriptor f(Y; theta) and generator g(X; alpha) of one model, with its config."""

    def __init__(self, config: Config):
        super().__init__()
        self.config = config
        self.descriptor: Descriptor
        self.generator: Generator
        options = {}
        if config.arch == "multiscale":
            w = config.motion_channels
            options = {"layout_channels": config.layout_channels,
                       "motion_channels": (w, 2 * w, 4 * w) if w else None,
                       "noise_weight": config.noise_weight,
                       "fine_channels": config.fine_channels,
                       "fine_upsample": config.fine_upsample,
                       "noise_flow": config.noise_flow,
                       "noise_flow_field": config.noise_flow_field,
                       "des_fine_channels": config.des_fine_channels}
        self.labels = class_names(config)       # class names of a conditional model, or []
        self.descriptor, self.generator = build_nets(config.arch, config.frames, config.size,
                                                     config.latent_channels,
                                                     frame_bias=config.frame_bias == "mean",
                                                     classes=len(self.labels), **options)
        # mu of the reference distribution N(mu, s^2 I): zero (paper), the observed colour mean or
        # mean frame (config.ref_mean), set once from the training data and kept in checkpoints
        # (one per class for a conditional model)
        self.register_buffer("ref_mean", torch.zeros(max(1, len(self.labels)), 3, 1,
                                                     config.size, config.size))
        # the persistent descriptor chains (config.persistent; kept in checkpoints)
        self.register_buffer("chain_states", torch.zeros(config.persistent, 3, config.frames,
                                                         config.size, config.size))
        # exponential moving average of the generator's weights, used for synthesis (config.ema)
        self.generator_ema: Generator | None = None
        if config.ema > 0:
            self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)

    @property
    def conditional(self) -> bool:
        return bool(self.labels)

    def label_tensor(self, labels: Tensor | list[int] | None, n: int) -> Tensor | None:
        """``labels`` as a (n,) index tensor, or (n, classes) class weights, on the model's device
        (None for an unconditional model, which must be given none)."""
        if not self.conditional:
            if labels is not None:
                raise ConfigError("this model is not class-conditional; it takes no label")
            return None
        if labels is None:
            raise ConfigError(f"this model is class-conditional: give a label (one of "
                              f"{', '.join(self.labels)})")
        labels = torch.as_tensor(labels, device=self.device)
        if labels.is_floating_point():      # class weights (n, classes): a blend of classes
            if labels.ndim != 2 or labels.shape[1] != len(self.labels):
                raise ConfigError(f"class weights must be (clips, {len(self.labels)}), got "
                                  f"{tuple(labels.shape)}")
        else:
            labels = labels.long().reshape(-1)
        if len(labels) != n:
            raise ConfigError(f"{len(labels)} labels given for {n} clips")
        return labels

    def energy(self, labels: Tensor | None) -> Callable[[Tensor], Tensor]:
        """f(Y) per clip: the descriptor, for a conditional model f(Y; theta_c) of ``labels``."""
        return self.descriptor if labels is None else (lambda y: self.descriptor(y, labels))

    def render(self, z: Tensor, frames: int | None = None, labels: Tensor | None = None,
               generator: Generator | None = None) -> Tensor:
        """g(X) with the training generator (or ``generator``), of class ``labels`` if conditional."""
        gen = generator if generator is not None else self.generator
        return gen(z, frames) if labels is None else gen(z, frames, labels=labels)

    @torch.no_grad()
    def init_from_data(self, mean_frame: Tensor) -> None:
        """Set what starts from the observed data's mean frame (C, S, S) — one per class,
        (classes, C, S, S), for a conditional model — before training: the reference mean
        (``ref_mean`` "channel" or "frame") and the generator's frame bias."""
        mode = self.config.ref_mean
        frames = mean_frame if mean_frame.ndim == 4 else mean_frame[None]
        mu = frames.mean(dim=(2, 3), keepdim=True).expand_as(frames) \
            if mode == "channel" else frames
        self.ref_mean.copy_(mu[:, :, None].expand_as(self.ref_mean) if mode != "zero"
                            else torch.zeros_like(self.ref_mean))
        self.chain_states.copy_(self.ref_mean[:1].expand_as(self.chain_states))
        for gen in (self.generator, self.generator_ema):
            if gen is not None and gen.frame_bias is not None:
                gen.frame_bias.init_from(mean_frame)

    @torch.no_grad()
    def update_ema(self) -> None:
        """alpha_ema <- ema * alpha_ema + (1 - ema) * alpha (after each generator update)."""
        if self.generator_ema is None:
            return
        for avg, cur in zip(self.generator_ema.parameters(), self.generator.parameters()):
            avg.lerp_(cur, 1.0 - self.config.ema)

    @property
    def sampler(self) -> Generator:
        """The generator that synthesizes: the moving average when there is one."""
        return self.generator_ema if self.generator_ema is not None else self.generator

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def draw_latents(self, n: int, frames: int | None = None,
                     generator: torch.Generator | None = None, size: int | None = None) -> Tensor:
        """X ~ N(0, I) for ``n`` clips of ``frames`` frames (training length by default) and, for
        the fully convolutional multiscale generator, ``size`` x ``size`` frames."""
        if size is None or size == self.config.size:
            shape = self.generator.latent_shape(frames)
        elif isinstance(self.generator, FieldGenerator):
            if size % 8 or size < 8:
                raise ConfigError(f"--size must be a multiple of 8 (>= 8) for the multiscale "
                                  f"networks, got {size}")
            shape = self.generator.latent_shape(frames, size)
        else:
            raise ConfigError(f"the {self.config.arch} generator renders only its training size "
                              f"({self.config.size}); other sizes need arch 'multiscale' "
                              f"(the standard preset)")
        return torch.randn((n, *shape), generator=generator, device=self.device)

    def revise(self, y: Tensor, steps: int | None = None,
               generator: torch.Generator | None = None, labels: Tensor | None = None,
               free: Tensor | None = None) -> Tensor:
        """Descriptor Langevin revision of clips ``y`` with the config's delta and s (on each
        clip's class model ``labels`` for a conditional model; only the ``free`` entries, the
        others clamped, when given)."""
        cfg = self.config
        steps = cfg.langevin_steps if steps is None else steps
        mu = self.ref_mean if labels is None else self.ref_mean[labels]
        return revise(self.energy(labels), y, steps, cfg.step_size, cfg.ref_sigma, generator, mu,
                      free, cfg.colour_sigma, cfg.chroma_sigma)

    @torch.no_grad()
    def synthesize(self, n: int, frames: int | None = None, langevin_steps: int = 0,
                   generator: torch.Generator | None = None, size: int | None = None,
                   labels: Tensor | list[int] | None = None) -> Tensor:
        """``n`` new clips (n, C, frames, S, S), in model space (nominally [-1, 1]).

        Latents are rendered in groups of the training chain count, so BatchNorm sees batches of
        the size it was trained with (see :mod:`dyntex.nets`); a last partial group is filled with
        extra draws that are discarded. ``langevin_steps`` > 0 refines the generator's output by
        that many descriptor Langevin steps (the descriptor's own sampler). ``size``: frames of
        another side than the training one (multiscale generator only; its layout map and frame
        bias are stretched to it). ``labels``: the class index of each of the ``n`` clips, or
        (n, classes) class weights that blend the classes (conditional models only).
        """
        frames = frames or self.config.frames
        labels = self.label_tensor(labels, n)
        if langevin_steps and labels is not None and labels.is_floating_point():
            raise ConfigError("--langevin-steps needs one class per clip, not a blend of classes")
        if langevin_steps and size not in (None, self.config.size):
            raise ConfigError("--langevin-steps needs the training size: the descriptor's last "
                              "layer is fully connected in space")
        group = self.config.chains
        n_groups = -(-n // group)
        z = self.draw_latents(n_groups * group, frames, generator, size)
        label_groups = [None] * n_groups if labels is None else torch.cat(
            [labels, labels[:1].expand(len(z) - n, *labels.shape[1:])]).split(group)
        clips = torch.cat([self.render(zg, frames, lg, self.sampler)
                           for zg, lg in zip(z.split(group), label_groups)])[:n]
        if langevin_steps:
            clips = self.revise(clips, langevin_steps, generator, labels)
        return clips


@dataclass
class Optimizers:
    descriptor: torch.optim.Optimizer
    generator: torch.optim.Optimizer

    @classmethod
    def for_model(cls, model: CoopNets) -> "Optimizers":
        cfg = model.config
        return cls(fastops.adam(model.descriptor.parameters(), lr=cfg.lr_des, betas=(cfg.beta1, 0.999)),
                   fastops.adam(model.generator.parameters(), lr=cfg.lr_gen, betas=(cfg.beta1, 0.999)))

    def state_dict(self) -> dict:
        return {"descriptor": self.descriptor.state_dict(), "generator": self.generator.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.descriptor.load_state_dict(state["descriptor"])
        self.generator.load_state_dict(state["generator"])


def train_step(model: CoopNets, opts: Optimizers, observed: Tensor,
               generator: torch.Generator | None = None,
               sync: Callable[[CoopNets, Tensor], Tensor] | None = None,
               labels: Tensor | None = None) -> dict[str, float]:
    """One iteration of Algorithm 1 on a batch of observed clips (B, C, T, S, S) in [-1, 1]
    (of classes ``labels`` (B,) for a conditional model).

    ``sync`` (data-parallel training) is called between the gradient computation and the
    parameter updates with the model and the stats tensor; it must average both across processes
    and return the averaged stats. Returns plain floats: the two losses, the mean energies f of
    observed and revised clips, and how far Langevin moved the generator's output (per-pixel RMS).
    """
    opts.descriptor.zero_grad(set_to_none=True)
    opts.generator.zero_grad(set_to_none=True)
    # Steps D2 and G2 update theta and alpha. Neither gradient depends on the other network's
    # update (the revisions are made before both), so the order of the updates is free.
    if sync is None:
        # Each parameter is stepped inside the backward pass as soon as its gradient is complete,
        # and that gradient freed (fastops.step_in_backward: the same updates); the spatially
        # fully-connected weights are stepped slice by slice, their gradients never made whole.
        # The generator's gradient comes first, so none of it is held beside the descriptor's
        # gradient and activations. The steps after the backward passes then have nothing left.
        def update_generator() -> None:
            opts.generator.step()
            opts.generator.zero_grad(set_to_none=True)

        with fastops.step_in_backward(opts.generator, model.generator), \
                fastops.step_in_backward(opts.descriptor, model.descriptor):
            stats = accumulate_gradients(model, observed, generator,
                                         after_generator=update_generator, labels=labels)
    else:  # both gradients are averaged across processes in one call, then both updates applied
        stats = sync(model, accumulate_gradients(model, observed, generator, labels=labels))
        opts.generator.step()
    opts.descriptor.step()
    model.update_ema()
    return dict(zip(STAT_NAMES, stats.tolist()))  # one host sync per iteration


STAT_NAMES = ("des_loss", "gen_loss", "energy_obs", "energy_syn", "langevin_rms")


def sorted_values(clips: Tensor) -> Tensor:
    """(C, N T H W): each channel's values over all the clips (B, C, T, H, W), in ascending order."""
    return clips.transpose(0, 1).reshape(clips.shape[1], -1).sort(dim=1).values


def marginal_loss(y: Tensor, reference: Tensor) -> Tensor:
    """Mean over the clips y (B, C, T, H, W) of sum over channels and ranks of (a clip's k-th
    smallest value - the ``reference``'s (C, M, sorted) value at the same rank)^2: T H W times the
    squared 2-Wasserstein distance between their per-channel value distributions (1-D optimal
    transport matches sorted values), zero when each channel holds the reference's values in any
    order. Its gradient moves each pixel towards its rank's value, as histogram matching does."""
    c, b = y.shape[1], y.shape[0]
    ranked = y.transpose(0, 1).reshape(c, b, -1).sort(dim=2).values
    idx = torch.linspace(0, reference.shape[1] - 1, ranked.shape[2], device=y.device).round().long()
    return (ranked - reference[:, idx][:, None]).pow(2).sum(dim=(0, 2)).mean()


def marginal_term(y: Tensor, observed: Tensor, y_labels: Tensor | None = None,
                  observed_labels: Tensor | None = None) -> Tensor:
    """:func:`marginal_loss` of the clips ``y`` against the ``observed`` clips pooled. With class
    indices (a class-conditional model), each clip is compared with the observed clips of its own
    class in the batch; clips of a class the batch does not hold add nothing this iteration.
    Either way the sum over clips is divided by all of ``y``'s clips."""
    if observed_labels is None:
        return marginal_loss(y, sorted_values(observed))
    total = y.new_zeros(())
    for c in observed_labels.unique():
        mine = y_labels == c
        if mine.any():
            total = total + marginal_loss(y[mine], sorted_values(observed[observed_labels == c])) \
                * mine.sum()
    return total / y.shape[0]


def flow_term(y: Tensor, observed: Tensor, y_labels: Tensor | None = None,
              observed_labels: Tensor | None = None) -> Tensor:
    """:func:`marginal_term` on the clips' local optical flow instead of their colour channels:
    at each scale of :func:`dyntex.opticalflow.flow_pyramid`, the flow's projections on
    ``DIRECTIONS`` directions and its magnitude against the observed clips' (1-D optimal
    transport between the flow distributions), so the generator is pulled to the video's speeds
    and directions of motion. Each scale's term is divided by f^2 (its flow is in full-resolution
    pixels, f times its own), the sum by the number of views per scale."""
    with torch.no_grad():
        reference = flow_pyramid(observed)
    total = y.new_zeros(())
    for f, mine, theirs in zip(SCALES, flow_pyramid(y), reference):
        total = total + marginal_term(mine, theirs, y_labels, observed_labels) / f ** 2
    return total / (DIRECTIONS + 1)


def accumulate_gradients(model: CoopNets, observed: Tensor, generator: torch.Generator | None = None,
                         scale: float = 1.0, after_generator: Callable[[], None] | None = None,
                         labels: Tensor | None = None) -> Tensor:
    """Steps G0, D1, G1, D2 and G2 of Algorithm 1 up to the parameter gradients, added (times
    ``scale``) to the ``.grad`` of both networks. Returns the stats as one tensor (``STAT_NAMES``).

    ``after_generator``, if given, is called once the generator's gradient is complete and before
    the descriptor's is computed (to update the generator and free its gradient early); without
    it the descriptor's gradient comes first, so the generator's gradient is never held beside
    the descriptor's activations.

    A conditional model (``labels``: the observed clips' classes) draws ``chains`` clips of every
    class each iteration, and each clip's energy is its class's f(Y; theta_c)."""
    cfg = model.config
    # the chains' classes: every class ``chains`` times (None: unconditional)
    chain_labels = None if labels is None else \
        torch.arange(len(model.labels), device=labels.device).repeat_interleave(cfg.chains)

    # Step G0: X_i ~ N(0, I), Y^_i = g(X_i; alpha).  The graph is kept for step G2 when the latents
    # are not re-inferred (same batch, same BatchNorm statistics: identical to a second forward).
    z = model.draw_latents(cfg.chains if labels is None else len(chain_labels), generator=generator)
    y_gen = model.render(z, labels=chain_labels)

    # Step D1: Y~_i = l Langevin steps on p(Y; theta) from Y^_i (Eq. 8); input gradients only.
    y_rev = model.revise(y_gen.detach(), generator=generator, labels=chain_labels)
    # Persistent chains (config.persistent): l more steps of Eq. 8 from where they stopped; the
    # descriptor's synthesized clips are then these and the revised generator samples.
    if cfg.persistent:
        model.chain_states.copy_(model.revise(model.chain_states, generator=generator))
        negatives = torch.cat([y_rev, model.chain_states])
    else:
        negatives = y_rev

    # Step G1 (optional, off by default): X_i <- Langevin on p(X | Y~_i; alpha) (Eq. 16).
    if cfg.infer_steps:
        z = infer_latent(lambda x: model.render(x, labels=chain_labels), z, y_rev,
                         cfg.infer_steps, cfg.infer_step_size, cfg.gen_sigma, generator)
        y_gen_fit = model.render(z, labels=chain_labels)
    else:
        y_gen_fit = y_gen
    both = None if labels is None else torch.cat([labels, chain_labels])

    def descriptor_gradient() -> tuple[Tensor, Tensor, Tensor]:
        # Step D2: gradient of  mean_i f(Y~_i) - mean_j f(Y_j)  (ascent on the log-likelihood,
        # Eq. 9). The descriptor has no batch-dependent layers, so one forward over both sets is exact.
        # config.data_noise: the observed clips get fresh Gaussian noise, as the revised clips
        # carry Langevin's (about delta sqrt(l)); else f learns to detect white noise.
        obs = observed if not cfg.data_noise else observed + cfg.data_noise * torch.randn(
            observed.shape, generator=generator, device=observed.device, dtype=observed.dtype)
        energies = model.energy(both)(torch.cat([obs, negatives]))
        e_obs, e_rev = energies[: observed.shape[0]], energies[observed.shape[0]:]
        des_loss = e_rev.mean() - e_obs.mean()
        (des_loss * scale).backward()
        return des_loss, e_obs, e_rev

    def generator_gradient() -> Tensor:
        # Step G2: gradient of  mean_i |Y~_i - g(X_i)|^2 / (2 sigma^2)  (Eq. 17): regress g(X)
        # onto the revised clips.
        gen_loss = (y_rev - y_gen_fit).pow(2).flatten(1).sum(1).mean() / (2 * cfg.gen_sigma ** 2)
        if cfg.marginal_weight:        # not in the paper: the observed value distributions
            gen_loss = gen_loss + cfg.marginal_weight * marginal_term(
                y_gen_fit, observed, chain_labels, labels) / (2 * cfg.gen_sigma ** 2)
        if cfg.flow_weight:            # not in the paper: the observed local flow's distribution
            gen_loss = gen_loss + cfg.flow_weight * flow_term(
                y_gen_fit, observed, chain_labels, labels) / (2 * cfg.gen_sigma ** 2)
        (gen_loss * scale).backward()
        return gen_loss

    if after_generator is None:
        des_loss, e_obs, e_rev = descriptor_gradient()
        gen_loss = generator_gradient()
    else:
        gen_loss = generator_gradient()
        after_generator()
        des_loss, e_obs, e_rev = descriptor_gradient()

    with torch.no_grad():
        shift = (y_rev - y_gen.detach()).pow(2).mean().sqrt()
        return torch.stack([des_loss, gen_loss, e_obs.mean(), e_rev.mean(), shift]).detach()
