"""Optimiser steps taken inside the backward pass, so that gradients are freed (or never made
whole) as soon as they are complete.

:func:`step_in_backward` is explicit and local to one optimiser and the module it trains:

* every parameter gets PyTorch's own ``Tensor.register_post_accumulate_grad_hook``: once its
  gradient is complete, the optimiser steps that parameter alone and its gradient is freed (the
  "optimizer step in backward" pattern of the PyTorch tutorials);
* the spatially fully-connected layers of the module (the paper generator's 671 MB and
  descriptor's 295 MB weights) are handed an :class:`AdamSliceStepper` as their
  ``weight_stepper``: their backward pass gives it the weight gradient slice by slice, and it
  applies fused Adam to each slice, so that gradient is never held whole.

Both make the same update as ``backward(); optimizer.step()``: every parameter is stepped once
per backward pass with its complete gradient, and Adam is elementwise.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import nn

from . import _compat
from ._common import CL3, Tensor
from .layers import FastConv3d, FastConvTranspose3d
from .optim import Adam, flat_view, match_state_layouts

# Bytes of weight gradient an AdamSliceStepper asks for at a time.
STEP_SLICE_BYTES = 8 << 20

Produce = Callable[[int, int, Tensor], None]


class AdamSliceStepper:
    """Applies ``optimizer``'s Adam step to ``param`` from a gradient produced in slices.

    :meth:`take` is called by the layer's backward pass with a function that makes the
    gradient's rows ``[r0, r1)`` of an (N, row) matrix in the weight's memory order (input
    channel innermost, as :func:`~dyntex.fastops.accelerate` lays spatial kernels out):
    ``transposed`` weights (C, O, kt, h, w) have rows of C, convolution weights (O, C, kt, H, W)
    in ``channels_last_3d`` rows of C * H * W.
    """

    def __init__(self, optimizer: Adam, param: nn.Parameter, transposed: bool):
        self.optimizer, self.param, self.transposed = optimizer, param, transposed
        self.group = next(g for g in optimizer.param_groups if any(q is param for q in g["params"]))

    def take(self, make_produce: Callable[[], Produce]) -> bool:
        """Step the parameter with the gradient ``make_produce()`` makes; False (nothing done,
        ``make_produce`` not called) when the parameter already holds a gradient to add to or
        is not laid out input-channel innermost. Then the layer returns the gradient as usual."""
        p = self.param
        if p.grad is not None:
            return False
        inner = (p.stride(0) == 1 if self.transposed else p.is_contiguous(memory_format=CL3))
        flat_p = flat_view(p.detach()) if inner else None
        if flat_p is None:
            return False
        row = p.shape[0] if self.transposed else p.shape[1] * p.shape[3] * p.shape[4]
        state = self.optimizer.state[p]
        if not state:  # as torch.optim.Adam initialises a fused parameter's state
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        match_state_layouts(p, state)  # e.g. loaded from a checkpoint in another layout
        produce = make_produce()
        flat_m, flat_v = flat_view(state["exp_avg"]), flat_view(state["exp_avg_sq"])
        n = p.numel() // row
        # slices of about STEP_SLICE_BYTES, but at most 8 of them (each reads produce's inputs whole)
        rows = max(1, STEP_SLICE_BYTES // (row * p.element_size()), -(-n // 8))
        buf = p.new_empty(min(rows, n), row)
        state["step"] += 1
        group = self.group
        beta1, beta2 = group["betas"]
        for r0 in range(0, n, rows):
            r1 = min(n, r0 + rows)
            g = buf[: r1 - r0]
            produce(r0, r1, g)
            sl = slice(r0 * row, r1 * row)
            _compat.fused_adam_([flat_p[sl]], [g.view(-1)], [flat_m[sl]], [flat_v[sl]], [],
                                [state["step"]], amsgrad=False, lr=group["lr"], beta1=beta1,
                                beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
                                maximize=False, grad_scale=None, found_inf=None)
        return True


def _slices_allowed(optimizer: torch.optim.Optimizer) -> bool:
    """Slice steppers need this package's fused Adam with plain Adam settings."""
    return (isinstance(optimizer, Adam) and optimizer.fused_kernel
            and _compat.fused_adam_available()
            and not any(g.get("amsgrad") or g.get("maximize") or g.get("differentiable")
                        or g.get("capturable") or g.get("decoupled_weight_decay")
                        or isinstance(g["lr"], Tensor) for g in optimizer.param_groups))


def _step_one(optimizer: torch.optim.Optimizer, params: list[Tensor], p: Tensor) -> None:
    """Step ``p`` alone (any other gradient is set aside meanwhile), then free its gradient."""
    if p.grad is None:
        return
    aside = [(q, q.grad) for q in params if q is not p and q.grad is not None]
    for q, _ in aside:
        q.grad = None
    try:
        optimizer.step()
    finally:
        for q, g in aside:
            q.grad = g
    p.grad = None


@contextlib.contextmanager
def step_in_backward(optimizer: torch.optim.Optimizer, module: nn.Module | None = None
                     ) -> Iterator[None]:
    """Within the block, each backward pass steps ``optimizer``'s parameters as their gradients
    complete and frees them (``.grad`` is None afterwards, so a later ``optimizer.step()`` is a
    no-op); with ``module`` and a fused :func:`~dyntex.fastops.adam`, its spatially
    fully-connected layers' weight gradients are stepped slice by slice and never held whole.

    Not for data-parallel training or gradient accumulation over several backward passes
    (gradients there must be complete before any update). Hooks and steppers are removed on exit.
    """
    params = [p for g in optimizer.param_groups for p in g["params"] if p.requires_grad]
    handles = [p.register_post_accumulate_grad_hook(
        lambda p, _opt=optimizer, _params=params: _step_one(_opt, _params, p)) for p in params]
    layers = []
    if module is not None and _slices_allowed(optimizer):
        ids = {id(p) for p in params}
        for layer in module.modules():
            if isinstance(layer, (FastConv3d, FastConvTranspose3d)) and id(layer.weight) in ids:
                layer.weight_stepper = AdamSliceStepper(
                    optimizer, layer.weight, isinstance(layer, FastConvTranspose3d))
                layers.append(layer)
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        for layer in layers:
            layer.weight_stepper = None
