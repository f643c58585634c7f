"""The on/off switch of the fast formulations, and helpers every fused Function uses."""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch

from . import _compat

Tensor = torch.Tensor
CL3 = torch.channels_last_3d

ENV_VAR = "DYNTEX_FASTOPS"
_enabled = os.environ.get(ENV_VAR, "1").strip().lower() not in ("0", "false", "off", "no")


def enabled() -> bool:
    """Whether the fast formulations are in use (``DYNTEX_FASTOPS`` unset or not 0)."""
    return _enabled


def set_enabled(flag: bool) -> bool:
    """Turn the fast formulations on or off for all accelerated layers; returns the old state."""
    global _enabled
    old, _enabled = _enabled, bool(flag)
    return old


@contextlib.contextmanager
def enabled_scope(flag: bool) -> Iterator[None]:
    """``with enabled_scope(False):`` runs accelerated layers with their plain formulation."""
    old = set_enabled(flag)
    try:
        yield
    finally:
        set_enabled(old)


def alias(t: Tensor | None) -> Tensor | None:
    """A view of ``t`` whose autograd node tells, during backward, whether t's grad is wanted."""
    return t if t is None or not t.requires_grad else t.view_as(t)


def wanted(ctx, i: int) -> bool:
    """Whether the current backward call needs the gradient of the Function's input ``i``.

    ``ctx.needs_input_grad`` only says whether the input requires grad; a Langevin step
    (``autograd.grad(f, x)``) needs no weight gradient even though the weights require grad.
    The inputs are passed through :func:`alias` views, whose nodes the engine can be asked about.
    """
    if not ctx.needs_input_grad[i]:
        return False
    node = ctx.next_functions[i][0]
    return node is not None and _compat.will_engine_execute(node)


def autocast_on(device_type: str) -> bool:
    """Whether autocast is active for ``device_type`` (the plain formulation serves it)."""
    return torch.is_autocast_enabled(device_type)
