"""Re-classing: :func:`accelerate` swaps a module's plain 3-D convolution layers for the fast
subclasses of :mod:`dyntex.fastops.layers`, keeping their very Parameter objects."""
from __future__ import annotations

import torch
from torch import nn

from . import _common
from ._common import CL3
from .layers import FastConv3d, FastConvTranspose3d, FusedBatchNorm3d, FusedReLU

_SWAP = {nn.Conv3d: FastConv3d, nn.ConvTranspose3d: FastConvTranspose3d}


def _swap(layer: nn.Module, cls: type | None = None) -> nn.Module:
    """``layer`` as an instance of ``cls`` (by default its fast subclass in ``_SWAP``)."""
    cls = cls or _SWAP[type(layer)]
    new = cls.__new__(cls)
    new.__dict__.update(layer.__dict__)  # the same Parameter objects, hooks and settings
    return new


def _maybe_fully_connected(layer: nn.Module) -> bool:
    """Layers whose matrix-product formulation reads the weight input-channel innermost: a
    spatial kernel larger than 1 x 1 with spatial stride 1 and no spatial padding (the
    spatially fully-connected layers; the input size, known only at run time, decides)."""
    k, s, p = layer.kernel_size, layer.stride, layer.padding
    return (k[1] * k[2] > 1 and tuple(s[1:]) == (1, 1) and not isinstance(p, str)
            and tuple(p[1:]) == (0, 0))


def accelerate(module: nn.Module, enable: bool | None = None) -> nn.Module:
    """Swap ``module``'s plain Conv3d / ConvTranspose3d layers (in place) for the fast ones.

    Parameters stay the same objects with the same names, shapes and values; the weights of
    spatially large kernels are re-laid out with the input channels innermost in memory
    (``channels_last_3d`` for convolutions), what the matrix-product formulations read directly.
    No-op when ``enable`` is False or, by default, when ``DYNTEX_FASTOPS=0``. Returns ``module``.
    """
    if not (_common.enabled() if enable is None else enable):
        return module
    if type(module) in _SWAP:
        raise TypeError("accelerate() swaps the layers inside a module; pass their container")
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) in _SWAP:
                new = _swap(child)
                if _maybe_fully_connected(new) and new.weight.device.type != "meta":
                    with torch.no_grad():
                        w = new.weight.data  # the layout the matrix products read directly
                        if isinstance(new, FastConv3d):
                            new.weight.data = w.contiguous(memory_format=CL3)
                        else:  # (C, O, kt, h, w) with C innermost
                            new.weight.data = w.permute(1, 2, 3, 4, 0).contiguous().permute(4, 0, 1, 2, 3)
                setattr(parent, name, new)
        if isinstance(parent, nn.Sequential):
            # ReLU in place after a convolution or BatchNorm: neither needs its output for its
            # backward pass, so overwriting it saves a full-size allocation per call. Before a
            # possibly spatially fully-connected convolution, that layer applies it (fused_relu).
            layers = list(parent)
            for i, (prev, layer) in enumerate(zip(layers, layers[1:])):
                if type(layer) is nn.ReLU and isinstance(prev, (nn.Conv3d, nn.BatchNorm3d)):
                    nxt = layers[i + 2] if i + 2 < len(layers) else None
                    if isinstance(nxt, FastConv3d) and _maybe_fully_connected(nxt):
                        nxt.fused_relu = True
                        parent[i + 1] = FusedReLU()
                    elif (isinstance(nxt, FastConvTranspose3d) and not _maybe_fully_connected(nxt)
                          and type(prev) is nn.BatchNorm3d and prev.affine
                          and not prev.track_running_stats):
                        # BatchNorm (batch statistics) -> ReLU -> transposed conv: one Function
                        # that keeps BatchNorm's input only (conv.BNReLUConvT). The BatchNorm module
                        # keeps its parameters (and state_dict keys) as a placeholder.
                        fused = _swap(prev, FusedBatchNorm3d)
                        parent[i] = fused
                        parent[i + 1] = FusedReLU()
                        nxt.__dict__["fused_bn"] = fused  # a reference, not a submodule
                    else:
                        layer.inplace = True
    return module
