"""dyntex: learn dynamic textures from video with cooperative descriptor/generator ConvNets.

Importing dyntex has no side effects and does not import torch: the names below are loaded on
first use. The allocator settings the ``dyntex`` command makes are an explicit call,
:func:`dyntex.allocator.configure` (see there; call it before importing torch).
"""
from __future__ import annotations

import importlib
from typing import Any

# public name -> the module that defines it
_EXPORTS = {
    "Config": "config", "make_config": "config", "CoopNets": "coop", "DyntexError": "errors",
    "Trainer": "trainer", "load_model": "trainer", "load_inputs": "inputs",
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'dyntex' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
