"""Adam for the accelerated networks: the fused kernel, stepping channels-last weights in place.

:func:`adam` builds :class:`Adam`, ``torch.optim.Adam`` whose :meth:`Adam.step` first gives every
gradient and state its parameter's memory layout, then (with the fused kernel) steps dense
non-contiguous weights through flat 1-D views of the same memory, so the kernel makes no
contiguous copy of them. The update is torch's Adam, element for element.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from . import _common, _compat
from ._common import Tensor


def match_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give every gradient and Adam state the memory layout of its parameter.

    The fused Adam kernel walks parameter, gradient and states as flat memory, so they must share
    strides; a gradient set from outside (e.g. an all-reduced flat buffer) or a state loaded from
    a checkpoint written with other layouts would otherwise be combined element-for-wrong-element.
    """
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is not None and p.grad.stride() != p.stride():
                p.grad = torch.empty_like(p).copy_(p.grad)
            match_state_layouts(p, optimizer.state.get(p, {}))


def match_state_layouts(p: Tensor, state: dict) -> None:
    """Give ``p``'s optimiser states of its shape the memory layout of ``p`` (copies if not)."""
    for key, value in state.items():
        if (isinstance(value, Tensor) and value.shape == p.shape and value.dim() > 0
                and value.stride() != p.stride()):
            state[key] = torch.empty_like(p).copy_(value)


def flat_view(t: Tensor) -> Tensor | None:
    """A 1-D view of all of ``t``'s elements in memory order; None when its memory has gaps or
    overlaps (only dense tensors, whatever their dimension order, have such a view)."""
    expect = 1
    for stride, size in sorted((s, n) for s, n in zip(t.stride(), t.shape) if n != 1):
        if stride != expect:
            return None
        expect *= size
    return t.as_strided((t.numel(),), (1,), t.storage_offset())


@contextlib.contextmanager
def flat_views(optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """Within the block, dense non-contiguous parameters (the channels-last weights of
    :func:`~dyntex.fastops.accelerate`), their gradients and Adam states are 1-D views of the
    same memory.

    Adam is elementwise, and parameter, gradient and states share strides (:func:`match_layouts`),
    so updating the flat views is the same update, without the contiguous copy of a
    non-contiguous gradient that the fused kernel makes first.
    Shapes, strides and the tensors' identities are restored on the way out, whatever happens.
    """
    swapped = []
    try:
        for group in optimizer.param_groups:
            for p in group["params"]:
                flat = None if p.grad is None or p.is_contiguous() else flat_view(p.data)
                if flat is None:
                    continue
                data, grad = p.data, p.grad
                state = optimizer.state.get(p, {})
                shaped = {k: v for k, v in state.items() if isinstance(v, Tensor) and v.shape == p.shape}
                swapped.append((p, data, grad))
                p.data = flat
                p.grad = flat_view(grad)
                state.update({k: flat_view(v) for k, v in shaped.items()})
        yield
    finally:
        for p, data, grad in swapped:
            p.data = data
            p.grad = grad
            state = optimizer.state.get(p, {})
            for k, v in state.items():  # states made or flattened during the step: p's geometry
                if isinstance(v, Tensor) and v.dim() == 1 and v.numel() == p.numel() and p.dim() > 1:
                    state[k] = v.as_strided(p.shape, p.stride(), v.storage_offset())


class Adam(torch.optim.Adam):
    """``torch.optim.Adam`` that keeps gradients and states in their parameter's layout and, with
    the fused kernel (``fused_kernel``), steps non-contiguous dense weights on flat views."""

    def __init__(self, params, fused_kernel: bool = False, **kwargs):
        super().__init__(params, fused=True if fused_kernel else None, **kwargs)
        self.fused_kernel = fused_kernel

    def step(self, closure=None):  # noqa: D102
        # load_state_dict copies the saved groups' "fused" flag, which a checkpoint from a run
        # with the other setting would change: re-apply the construction-time choice
        for group in self.param_groups:
            group["fused"] = self.fused_kernel or None
            if self.fused_kernel:
                group["foreach"] = None
        match_layouts(self)
        if not self.fused_kernel:
            return super().step(closure)
        with flat_views(self):
            return super().step(closure)


def adam(params, **kwargs) -> Adam:
    """:class:`Adam` over ``params`` (``torch.optim.Adam``'s keyword arguments), with the fused
    kernel when the fast path is on and the kernel fits the parameters.

    The fused update is the same Adam in one pass over each tensor instead of about ten, with no
    full-size temporaries (the single-tensor path allocates two of the paper generator's 671 MB
    weight). Falls back to torch's default implementation where fused Adam is unavailable.
    """
    params = list(params)
    devices = {p.device.type for p in params}
    if (_common.enabled() and "fused" not in kwargs and devices <= {"cpu", "cuda"}
            and all(p.dtype in (torch.float32, torch.float64) for p in params)
            and _compat.fused_adam_available()):
        try:
            return Adam(params, fused_kernel=True, **kwargs)
        except (RuntimeError, TypeError, ValueError):
            pass
    return Adam(params, **kwargs)
