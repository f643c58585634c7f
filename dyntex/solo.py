"""Each network of a :class:`~dyntex.coop.CoopNets` model trained alone, with the same networks,
settings and iteration budget as cooperative training: the ablations that ask whether
cooperation beats training the descriptor or the generator by itself (the benchmark's
``descriptor`` and ``generator`` methods).

* :func:`train_descriptor`: the descriptor as STGConvNet (Xie, Zhu, Wu, CVPR 2017) learns it,
  with no generator. ``chains`` persistent Langevin chains start at the reference mean mu (the
  observed mean frame for ``ref_mean="frame"``); each iteration revises them by l steps of
  Eq. 8 on the current descriptor and then updates theta with the same gradient as cooperative
  training (Eq. 9). As in STGConvNet, the samples are the chains' final states: a new sample
  costs a new run of chains (there is no fast sampler).
* :func:`train_generator`: the generator by alternating back-propagation (Han, Lu, Zhu, Wu,
  AAAI 2017): each observed clip keeps its own latent X, revised every iteration by l' Langevin
  steps on the posterior p(X | Y; alpha) (Eq. 16; l' = ``infer_steps``, or l when that is 0),
  then alpha regresses g(X) onto the observed clip (Eq. 17 with Y in place of the revision).
  Samples are g(X) of fresh X ~ N(0, I).

Both use the optimiser settings, learning-rate schedule and random stream rules of
:mod:`dyntex.trainer`, but no checkpoints: they serve the benchmark, which caches their samples.
"""
from __future__ import annotations

import torch

from . import fastops
from .coop import CoopNets
from .errors import DivergenceError
from .langevin import infer_latent
from .trainer import lr_factor

Tensor = torch.Tensor


def _optimizer(params, lr: float, beta1: float) -> torch.optim.Optimizer:
    return fastops.adam(params, lr=lr, betas=(beta1, 0.999))


def _check(value: Tensor, what: str, step: int) -> float:
    v = float(value)
    if not torch.isfinite(value):
        raise DivergenceError(f"{what} became non-finite at step {step}; try a lower --lr-des or "
                              f"--step-size")
    return v


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, unit="it", dynamic_ncols=True, desc=desc)


def train_descriptor(model: CoopNets, observed: Tensor, chains: int | None = None,
                     iters: int | None = None, generator: torch.Generator | None = None,
                     progress: bool = False) -> Tensor:
    """Train ``model.descriptor`` alone on ``observed`` (N, C, T, S, S) in [-1, 1]; returns the
    ``chains`` (default: the config's) persistent chains' final states, in model space.

    ``model.init_from_data`` must have set the reference mean first.
    """
    cfg = model.config
    chains = chains or cfg.chains
    iters = cfg.iters if iters is None else iters
    opt = _optimizer(model.descriptor.parameters(), cfg.lr_des, cfg.beta1)
    y = model.ref_mean.expand(chains, -1, observed.shape[2], -1, -1).clone()
    bar = _progress(iters, progress, "descriptor")
    try:
        for step in range(iters):
            for group in opt.param_groups:
                group["lr"] = cfg.lr_des * lr_factor(cfg.lr_schedule, step, iters)
            y = model.revise(y, generator=generator)          # Eq. 8, l steps, persistent
            opt.zero_grad(set_to_none=True)
            energies = model.descriptor(torch.cat([observed, y]))
            loss = energies[observed.shape[0]:].mean() - energies[:observed.shape[0]].mean()
            loss.backward()                                   # Eq. 9
            opt.step()
            bar.update(1)
            bar.set_postfix(des=f"{_check(loss.detach(), 'the descriptor loss', step + 1):.3g}")
            _check(y.abs().max(), "a Langevin chain", step + 1)
    finally:
        bar.close()
    return y.detach()


def train_generator(model: CoopNets, observed: Tensor, iters: int | None = None,
                    generator: torch.Generator | None = None, progress: bool = False) -> Tensor:
    """Train ``model.generator`` alone on ``observed`` (N, C, T, S, S) in [-1, 1] by alternating
    back-propagation; returns the inferred latents of the observed clips."""
    cfg = model.config
    iters = cfg.iters if iters is None else iters
    gen = model.generator
    steps = cfg.infer_steps or cfg.langevin_steps
    opt = _optimizer(gen.parameters(), cfg.lr_gen, cfg.beta1)
    z = model.draw_latents(observed.shape[0], generator=generator)
    bar = _progress(iters, progress, "generator")
    try:
        for step in range(iters):
            for group in opt.param_groups:
                group["lr"] = cfg.lr_gen * lr_factor(cfg.lr_schedule, step, iters)
            # inferential back-propagation: X <- Langevin on p(X | Y; alpha) (Eq. 16)
            z = infer_latent(gen, z, observed, steps, cfg.infer_step_size, cfg.gen_sigma, generator)
            # learning back-propagation: alpha <- alpha - lr * d/d alpha |Y - g(X)|^2 / (2 sigma^2)
            opt.zero_grad(set_to_none=True)
            loss = (observed - gen(z)).pow(2).flatten(1).sum(1).mean() / (2 * cfg.gen_sigma ** 2)
            loss.backward()
            opt.step()
            model.update_ema()
            bar.update(1)
            bar.set_postfix(gen=f"{_check(loss.detach(), 'the generator loss', step + 1):.3g}")
    finally:
        bar.close()
    return z.detach()
