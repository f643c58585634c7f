"""The three private PyTorch APIs the fast layers use, each with a public fallback.

Resolved once when this module is imported. When one is missing (another torch than the range
pinned in ``pyproject.toml``), the fallback gives the same numbers (to rounding), only slower,
and the first use says so once with a :class:`RuntimeWarning`:

* ``torch._C._will_engine_execute_node``: whether a backward pass wants an input's gradient.
  Fallback: compute every gradient the inputs require (Langevin then also makes weight gradients).
* ``torch.ops.aten.batch_norm_update_stats``: BatchNorm's own per-channel statistics kernel.
  Fallback: ``torch.var_mean``.
* ``torch._fused_adam_``: the fused Adam kernel. Fallback: torch's default Adam and whole
  gradients (no slice-by-slice steps inside the backward pass).
"""
from __future__ import annotations

import warnings

import torch

_will_engine_execute_node = getattr(torch._C, "_will_engine_execute_node", None)
_batch_norm_update_stats = getattr(torch.ops.aten, "batch_norm_update_stats", None)
_fused_adam = getattr(torch, "_fused_adam_", None)

_warned: set[str] = set()


def _missing(name: str, fallback: str) -> None:
    """Warn once per process that ``name`` is missing and ``fallback`` is used instead."""
    if name not in _warned:
        _warned.add(name)
        warnings.warn(f"dyntex.fastops: torch {torch.__version__} has no {name}; using {fallback} "
                      "(same numbers, slower)", RuntimeWarning, stacklevel=3)


def will_engine_execute(node) -> bool:
    """Whether the running backward pass will execute autograd ``node``."""
    if _will_engine_execute_node is None:
        _missing("torch._C._will_engine_execute_node", "every gradient the inputs require")
        return True
    try:
        return bool(_will_engine_execute_node(node))
    except RuntimeError:  # asked outside a backward pass: compute it to be safe
        return True


def batch_norm_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (dim 1) mean and biased variance of ``x``."""
    if _batch_norm_update_stats is not None and x.device.type in ("cpu", "cuda"):
        return _batch_norm_update_stats(x, None, None, 0.0)
    if _batch_norm_update_stats is None:
        _missing("torch.ops.aten.batch_norm_update_stats", "torch.var_mean")
    var, mean = torch.var_mean(x, dim=[0, *range(2, x.dim())], correction=0)
    return mean, var


def fused_adam_available() -> bool:
    """Whether the fused Adam kernel exists (else :func:`dyntex.fastops.adam` is torch's default)."""
    if _fused_adam is None:
        _missing("torch._fused_adam_", "torch's default Adam on whole gradients")
        return False
    return True


def fused_adam_(*args, **kwargs) -> None:
    """``torch._fused_adam_``; only called after :func:`fused_adam_available` said True."""
    _fused_adam(*args, **kwargs)
