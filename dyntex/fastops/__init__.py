"""Faster formulations of the networks' layers: the same function, the same parameters.

:func:`accelerate` (:mod:`.swap`) re-classes a module's ``nn.Conv3d`` / ``nn.ConvTranspose3d``
layers as the subclasses of :mod:`.layers`. They hold the very same ``Parameter`` objects (same
``state_dict`` keys, shapes and values, so checkpoints are unaffected); only the weights of
spatially large kernels are re-laid out in memory with the input channels innermost
(``channels_last_3d`` for convolutions, ``(C, O, kt, h, w)`` with C innermost for transposed
ones), which changes strides, never values. Activations stay in PyTorch's default contiguous
layout. Each layer picks a formulation per call and falls back to the plain layer for anything it
does not recognise:

* a convolution whose kernel covers the whole input plane (the descriptors' spatially
  fully-connected layer) is one matrix product per temporal tap (:class:`.fc.FCConv`);
* a transposed convolution of a 1 x 1 plane (the generators' first spatial layer) is one matrix
  product plus an overlap-add in time (:class:`.fc.FCConvT`);
* a strided convolution with few input channels (the descriptors' first layer, 3 -> C) keeps
  oneDNN's 3-D forward and weight gradient, and takes its input gradient (what Langevin adds to
  the clips) as a 2-D transposed convolution over frames with the temporal taps moved into
  channels (:class:`.conv.SmallCinConv`);
* BatchNorm (batch statistics) -> ReLU -> strided transposed convolution (the generators' blocks)
  is one Function that keeps BatchNorm's input only (:class:`.conv.BNReLUConvT`); a ReLU right
  before a spatially fully-connected convolution is applied by that layer in place. The modules
  they replace stay as placeholders (:class:`FusedBatchNorm3d`, :class:`FusedReLU`).

Weight gradients are skipped when the backward pass does not ask for them (Langevin takes input
gradients only). :func:`adam` (:mod:`.optim`) is Adam with the fused kernel, stepping the
channels-last weights in place; :func:`step_in_backward` (:mod:`.in_backward`) steps parameters
inside the backward pass. The private torch APIs used have fallbacks (:mod:`._compat`).

The switch: ``DYNTEX_FASTOPS=0`` in the environment makes :func:`accelerate` a no-op, and
:func:`set_enabled` / :func:`enabled_scope` turn the rewrites off at run time (the accelerated
layers then run the plain PyTorch formulation, which the tests use as the reference).
"""
from ._common import ENV_VAR, enabled, enabled_scope, set_enabled
from .in_backward import AdamSliceStepper, step_in_backward
from .layers import FastConv3d, FastConvTranspose3d, FusedBatchNorm3d, FusedReLU
from .optim import Adam, adam
from .swap import accelerate

__all__ = ["ENV_VAR", "Adam", "AdamSliceStepper", "FastConv3d", "FastConvTranspose3d",
           "FusedBatchNorm3d", "FusedReLU", "accelerate", "adam", "enabled", "enabled_scope",
           "set_enabled", "step_in_backward"]
