"""The layer classes :func:`dyntex.fastops.accelerate` swaps in: ``nn.Conv3d`` and
``nn.ConvTranspose3d`` subclasses that pick a faster formulation per call, and the placeholders
left where a ReLU or BatchNorm is applied by the next layer."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import _common
from ._common import Tensor, alias, autocast_on
from .conv import BNReLUConvT, SmallCinConv
from .fc import FCConv, FCConvT

# A strided Conv3d takes the few-input-channel formulation when in_channels * kernel_t is at most
# this (its input gradient then has few enough channels to move the temporal taps into).
SMALL_CIN_TAPS = 32


def _plain_only(x: Tensor, module: nn.Module) -> bool:
    """Conditions under which only the plain formulation is used (it also serves autocast)."""
    return (not _common.enabled() or x.device.type == "meta" or x.dim() != 5 or module.groups != 1
            or tuple(module.dilation) != (1, 1, 1) or not x.is_floating_point()
            or autocast_on(x.device.type))


class FastConv3d(nn.Conv3d):
    """``nn.Conv3d`` with faster formulations of spatially fully-connected and few-channel layers.

    ``fused_relu`` (set by :func:`~dyntex.fastops.accelerate`, which then drops the ReLU module
    before this layer): the layer applies that ReLU to its input itself. The spatially
    fully-connected formulation does it in place and folds the ReLU's backward into its own input
    gradient (no extra full-size buffer and pass per call); any other applies ``F.relu`` first.

    ``weight_stepper`` (set within :func:`~dyntex.fastops.step_in_backward`): takes the weight
    gradient of the fully-connected formulation slice by slice instead of it being returned.
    """

    fused_relu = False
    weight_stepper = None

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        if _plain_only(x, self) or self.padding_mode not in ("zeros", "replicate") \
                or isinstance(self.padding, str):
            return super().forward(F.relu(x) if self.fused_relu else x)
        kt, kh, kw = self.kernel_size
        pt, ph, pw = self.padding
        if ph == pw == 0 and tuple(x.shape[-2:]) == (kh, kw):
            if self.fused_relu:
                # In place, outside autograd: x is the output of a convolution or BatchNorm
                # (accelerate() checks), whose backward does not read it; FCConv's backward
                # applies the ReLU's gradient mask.
                with torch.no_grad():
                    x.clamp_min_(0)
            return FCConv.apply(alias(x), alias(self.weight), alias(self.bias), self.stride[0], pt,
                                self.padding_mode == "replicate", self.fused_relu,
                                self.weight_stepper)
        if self.fused_relu:
            x = F.relu(x)
        if kt > 1 and self.in_channels * kt <= SMALL_CIN_TAPS:
            if self.padding_mode != "zeros":
                x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
                pt = ph = pw = 0
            return SmallCinConv.apply(alias(x), alias(self.weight), alias(self.bias),
                                      tuple(self.stride), (pt, ph, pw))
        return super().forward(x)


class FastConvTranspose3d(nn.ConvTranspose3d):
    """``nn.ConvTranspose3d`` with a faster formulation of transposed convolutions of a 1 x 1 plane.

    Strided transposed convolutions stay oneDNN's (split into per-phase stride-1 convolutions, or
    with the phases stacked as channels, they measured slower forward + backward).

    ``fused_bn`` (set by :func:`~dyntex.fastops.accelerate`, which turns the BatchNorm before this
    layer and the ReLU between them into placeholders): the layer applies ``relu(fused_bn(x))``
    itself, by :class:`~dyntex.fastops.conv.BNReLUConvT`; any other formulation applies the two
    modules' plain functions first. ``weight_stepper``: as in :class:`FastConv3d`.
    """

    fused_bn: nn.BatchNorm3d | None = None
    weight_stepper = None

    def _plain_input(self, x: Tensor) -> Tensor:
        bn = self.fused_bn
        return x if bn is None else F.relu(nn.BatchNorm3d.forward(bn, x))

    def forward(self, x: Tensor, output_size=None) -> Tensor:  # noqa: D102
        if _plain_only(x, self) or output_size is not None or self.padding_mode != "zeros":
            return super().forward(self._plain_input(x), output_size)
        k, s, p, op = self.kernel_size, self.stride, self.padding, self.output_padding
        if tuple(x.shape[-2:]) == (1, 1) and p[1:] == (0, 0) and op[1:] == (0, 0):
            t_out = (x.shape[2] - 1) * s[0] - 2 * p[0] + k[0] + op[0]
            return FCConvT.apply(alias(self._plain_input(x)), alias(self.weight), alias(self.bias),
                                 s[0], p[0], t_out, self.weight_stepper)
        bn = self.fused_bn
        if bn is not None:
            conv = (list(s), list(p), list(self.dilation), True, list(op), self.groups)
            return BNReLUConvT.apply(alias(x), alias(bn.weight), alias(bn.bias), alias(self.weight),
                                     alias(self.bias), bn.eps, conv)
        return super().forward(x)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", applies the BatchNorm and ReLU before it"
                                       if self.fused_bn is not None else "")


class FusedReLU(nn.Identity):
    """Placeholder for a ReLU that the next layer applies itself (``FastConv3d.fused_relu``)."""

    def extra_repr(self) -> str:
        return "ReLU applied by the next layer"


class FusedBatchNorm3d(nn.BatchNorm3d):
    """A BatchNorm3d (same parameters) that the next layer but one applies, with the ReLU between
    them (``FastConvTranspose3d.fused_bn``); as a module it passes its input through."""

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return x

    def extra_repr(self) -> str:
        return super().extra_repr() + ", applied by the next convolution"
