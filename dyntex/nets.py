"""Descriptor and generator ConvNets, and the shape rules that size them.

Layout is torchvision's video convention, (B, C, T, H, W).

Three architectures:

``paper``
    Exactly the networks of the authors' Exp. 7 (Xie et al., "Cooperative Training of Descriptor
    and Generator Networks", TPAMI; TF code jianwen-xie/Spatial-Temporal-CoopNets, des_type
    ``FC_S``, gen_type ``FC_S_128``). At 64 frames x 128^2:

    descriptor  3 -> conv 120 @5x5x5 s2 p2 -> ReLU -> conv 30 @(5,64,64) s(2,1,1) p(2,0,0) -> ReLU
                -> conv 10 @(5,1,1) s(2,1,1) p(2,0,0);  f(Y) = sum of the last layer's outputs
    generator   X (5 x 10 x 1 x 1) -> convT 256 @(5,1,1) -> 14 x 1^2 -> convT 128 @(5,32,32)
                s(2,1,1) -> 32 x 32^2 -> convT 64 @5^3 s2 -> 64 x 64^2 -> convT 3 @(2,5,5) s(1,2,2)
                -> 64 x 128^2 -> tanh;  BatchNorm + ReLU between layers.

    Scaled to other sizes by one rule (:func:`paper_shapes`): the spatially fully-connected kernels
    are S/2 (descriptor) and S/4 (generator), and the latent length is (T - 24) / 4, so T must be
    a multiple of 4 and at least 28, and S a multiple of 4.

``multiscale`` (the ``quality`` preset, the default, and ``standard``;
    :mod:`dyntex.multiscale`): networks for stationary textures (after STGConvNet, Xie et al.
    CVPR 2017), fully convolutional in space and time, so a trained model renders larger
    frames too:

    * generator: a latent *field* X (C x t x S/8 x S/8) of coarse factors, three stages of x2
      upsampling + 3^3 convolution + BatchNorm + ReLU, each finer stage adding its own per-pixel
      noise map with a learned weight per channel (as StyleGAN), a transposed-convolution head
      (kernel 4, stride 2) and tanh, or (``fine_channels``) that transposed convolution into a
      full-resolution stage with its own noise map, then a 3^3 convolution and tanh; optional
      learned ``layout`` map joined to the factors and a :class:`FrameBias` before the tanh
      (the clip's fixed layout);
    * descriptor: a strided pyramid (kernel 4, stride 2, replicate padding) whose every scale
      adds the summed response of a 1x1 head to f (energies of local statistics at 3 scales),
      optionally (``des_fine_channels``) a stride-1 full-resolution scale, a small spatially
      fully-connected last term (the frame's layout), and optionally the same pyramid on the
      temporal differences Y[t+1] - Y[t] (the texture of the motion).

``fast`` (the default before ``standard`` and ``quality``; designed for a laptop CPU and to
    avoid the paper networks' visible defects when scaled down to 32 x 64^2):

    * transposed convolutions with kernel 4, stride 2 (kernel divisible by the stride, so every
      output pixel receives the same number of taps: no checkerboard);
    * the generator renders ``FAST_MARGIN`` extra frames at each end and the centre T frames are
      kept, so no output frame sits on the zero-padded temporal border (no washed-out first and
      last frames);
    * a latent of ``latent_channels`` x ((T + 2 * FAST_MARGIN) / 2 - 2) numbers (16 x 18 = 288 at
      T = 32) instead of the paper rule's 5 x 2 = 10, so different latents give different clips;
    * a descriptor of the paper's structure whose stride-2 kernels are even (4) with replicate
      padding, so its input gradient — what Langevin adds to the clips — covers every frame and
      pixel evenly (the paper's kernel 5 at stride 2 leaves a checkerboard in the revisions and
      under-weights the last frame).

BatchNorm (both architectures) always normalises with the statistics of the batch it is given, as
the authors' code does (``batch_norm(is_training=True)`` everywhere); there are no running averages,
so the network the descriptor taught during training is the network that synthesizes (no train/eval
gap). Synthesis therefore renders latents in batches of the training chain count (see
:meth:`dyntex.coop.CoopNets.synthesize`).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .errors import ConfigError
from .fastops import accelerate

FAST_MARGIN = 4  # frames rendered and dropped at each temporal end by the fast generator


# ----------------------------------------------------------------------------------------------
# Shape rules
# ----------------------------------------------------------------------------------------------
def check_shape(arch: str, frames: int, size: int) -> None:
    """Raise ConfigError when ``arch`` cannot be built at ``frames`` x ``size``^2."""
    if arch == "paper":
        if frames % 4 or frames < 28:
            raise ConfigError(f"the paper networks need frames = 28, 32, 36, ... (a multiple of 4, "
                              f"at least 28); got {frames}")
        if size % 4 or size < 8:
            raise ConfigError(f"the paper networks need size to be a multiple of 4 (>= 8); got {size}")
    elif arch in ("fast", "multiscale"):
        if frames % 4 or frames < 8:
            raise ConfigError(f"the {arch} networks need frames = 8, 12, 16, ... (a multiple of 4, "
                              f"at least 8); got {frames}")
        step = 8 if arch == "multiscale" else 4
        if size % step or size < 8:
            raise ConfigError(f"the {arch} networks need size to be a multiple of {step} (>= 8); "
                              f"got {size}")
    else:
        raise ConfigError(f"unknown architecture '{arch}'")


def paper_shapes(frames: int, size: int) -> dict[str, int]:
    """The paper's layer sizes scaled to ``frames`` x ``size``^2 (64 x 128^2 gives the paper's)."""
    check_shape("paper", frames, size)
    return {"des_fc_kernel": (size + 1) // 2, "gen_fc_kernel": size // 4,
            "latent_frames": (frames - 24) // 4}


# ----------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------
class CropTime(nn.Module):
    """Drop the last ``drop_last`` frames (the 'SAME' crop of a stride-1, kernel-2 transposed conv)."""

    def __init__(self, drop_last: int):
        super().__init__()
        self.drop_last = drop_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, : x.shape[2] - self.drop_last]


class FrameBias(nn.Module):
    """A learned per-pixel bias (C, S, S), the same in every frame, added before the generator's
    final tanh. :meth:`init_from` starts it at a frame (the observed mean frame), so the generator
    renders the clip's fixed layout and colours from the first iteration and learns the motion.
    A class-conditional generator has one bias per class (``classes``), chosen by ``labels``."""

    def __init__(self, channels: int, size: int, classes: int = 1):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(classes, channels, 1, size, size))

    @torch.no_grad()
    def init_from(self, frame: torch.Tensor) -> None:
        """``frame`` (C, S, S), or (classes, C, S, S), in [-1, 1]: tanh(bias) = frame (clamped
        away from +-1)."""
        frame = frame if frame.ndim == 4 else frame[None]
        self.bias.copy_(torch.atanh(frame.clamp(-0.98, 0.98))[:, :, None].expand_as(self.bias))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``labels``: class indices (B,) or class weights (B, classes) (a blend of the biases)."""
        if labels is None:
            bias = self.bias
        elif labels.is_floating_point():
            bias = torch.einsum("bk,k...->b...", labels, self.bias)
        else:
            bias = self.bias[labels]
        return x + stretch_map(bias, x.shape[-2:])


def stretch_map(m: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """A learned (B, C, 1, h, w) map at frame size ``hw`` (bilinear when it differs: a model
    rendering another size than it trained on)."""
    if tuple(m.shape[-2:]) == tuple(hw):
        return m
    return nn.functional.interpolate(m[:, :, 0], size=tuple(hw), mode="bilinear",
                                     align_corners=False)[:, :, None]


def _with_frame_bias(body: nn.Sequential, channels: int, size: int, classes: int = 1
                     ) -> nn.Sequential:
    """``body`` (ending in Tanh) with a :class:`FrameBias` inserted before its Tanh."""
    layers = list(body)
    assert isinstance(layers[-1], nn.Tanh)
    return nn.Sequential(*layers[:-1], FrameBias(channels, size, classes), layers[-1])


def _batchnorm(channels: int) -> nn.BatchNorm3d:
    # Batch statistics in every mode; no running averages (see module docstring).
    return nn.BatchNorm3d(channels, track_running_stats=False)


def _init_normal(module: nn.Module, std: float) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
            nn.init.normal_(m.weight, 0.0, std)
            nn.init.zeros_(m.bias)


# ----------------------------------------------------------------------------------------------
# Descriptor: f(Y; theta), a bottom-up ConvNet from a clip to a scalar
# ----------------------------------------------------------------------------------------------
class Descriptor(nn.Module):
    """Energy-based descriptor. ``forward`` returns f(Y) per clip, shape (B,).

    The model is p(Y; theta) ∝ exp(f(Y; theta)) N(Y; 0, s^2 I)  (paper Eq. 1); f is the sum of the
    last layer's responses over channels and positions, as in the authors' code.
    """

    def __init__(self, body: nn.Sequential):
        super().__init__()
        self.body = body

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.body(y).flatten(1).sum(1)


# ----------------------------------------------------------------------------------------------
# Generator: Y = g(X; alpha) + eps, a top-down ConvNet from latent factors to a clip
# ----------------------------------------------------------------------------------------------
class Generator(nn.Module):
    """Top-down generator. ``forward(z, frames)`` returns clips (B, C, frames, S, S) in [-1, 1].

    The network is temporally convolutional: a longer latent gives a longer clip. The rendered
    length for a latent of length t is ``rendered_frames(t) = scale * t + offset``; ``frames`` are
    cut from its centre (``margin`` frames are always dropped at each end when > 0).
    """

    def __init__(self, body: nn.Sequential, latent_channels: int, scale: int, offset: int,
                 margin: int, frames: int):
        super().__init__()
        self.body = body
        self.frame_bias = next((m for m in body if isinstance(m, FrameBias)), None)
        self.latent_channels = latent_channels
        self.scale, self.offset, self.margin = scale, offset, margin
        self.frames = frames  # training length

    def rendered_frames(self, latent_frames: int) -> int:
        return self.scale * latent_frames + self.offset

    def latent_frames(self, frames: int | None = None) -> int:
        """Shortest latent length whose rendering covers ``frames`` plus the margins."""
        need = (frames or self.frames) + 2 * self.margin
        return max(1, math.ceil((need - self.offset) / self.scale))

    def latent_shape(self, frames: int | None = None) -> tuple[int, int, int, int]:
        return (self.latent_channels, self.latent_frames(frames), 1, 1)

    def forward(self, z: torch.Tensor, frames: int | None = None) -> torch.Tensor:
        return self.centre_frames(self.body(z), z, frames)

    def centre_frames(self, y: torch.Tensor, z: torch.Tensor, frames: int | None) -> torch.Tensor:
        """The centre ``frames`` (default: training length) of the rendering ``y`` of ``z``."""
        frames = frames or self.frames
        start = (y.shape[2] - frames) // 2
        if start < 0:
            raise ConfigError(f"latent of length {z.shape[2]} renders {y.shape[2]} frames, "
                              f"fewer than the {frames} asked for")
        return y[:, :, start:start + frames]


# ----------------------------------------------------------------------------------------------
# Builders
# ----------------------------------------------------------------------------------------------
def build_paper(frames: int, size: int, channels: int = 3, latent_channels: int = 5
                ) -> tuple[Descriptor, Generator]:
    """The authors' FC_S descriptor and FC_S_128 generator, scaled by :func:`paper_shapes`."""
    sh = paper_shapes(frames, size)
    k_des, k_gen = sh["des_fc_kernel"], sh["gen_fc_kernel"]
    des = Descriptor(nn.Sequential(
        nn.Conv3d(channels, 120, 5, stride=2, padding=2), nn.ReLU(),
        nn.Conv3d(120, 30, (5, k_des, k_des), stride=(2, 1, 1), padding=(2, 0, 0)), nn.ReLU(),
        nn.Conv3d(30, 10, (5, 1, 1), stride=(2, 1, 1), padding=(2, 0, 0)),
    ))
    _init_normal(des, 0.001)
    gen = Generator(nn.Sequential(
        # t -> t + 4
        nn.ConvTranspose3d(latent_channels, 256, (5, 1, 1)), _batchnorm(256), nn.ReLU(),
        # (t+4) -> 2(t+4)+4, 1 -> S/4  (TF 'VALID' with output length 2(t+4)+4: output_padding 1)
        nn.ConvTranspose3d(256, 128, (5, k_gen, k_gen), stride=(2, 1, 1), output_padding=(1, 0, 0)),
        _batchnorm(128), nn.ReLU(),
        # x2 in time and space ('SAME': padding 2, output_padding 1)
        nn.ConvTranspose3d(128, 64, 5, stride=2, padding=2, output_padding=1),
        _batchnorm(64), nn.ReLU(),
        # x2 in space, same length in time ('SAME' with a kernel of 2: one frame cut at the end)
        nn.ConvTranspose3d(64, channels, (2, 5, 5), stride=(1, 2, 2), padding=(0, 2, 2),
                           output_padding=(0, 1, 1)),
        CropTime(1), nn.Tanh(),
    ), latent_channels, scale=4, offset=24, margin=0, frames=frames)
    _init_normal(gen, 0.005)
    return des, gen


def build_fast(frames: int, size: int, channels: int = 3, latent_channels: int = 16
               ) -> tuple[Descriptor, Generator]:
    """The default networks (see the module docstring for what they fix)."""
    check_shape("fast", frames, size)
    des = Descriptor(nn.Sequential(
        # The paper's three-layer structure (f stays homogeneous of degree 3 in the weights), with
        # even kernels at stride 2 and replicate padding: the input gradient df/dY, which drives
        # Langevin, then reaches every frame and pixel (borders included) through the same number
        # of taps, so revisions carry no checkerboard and no faded border frames.
        nn.Conv3d(channels, 64, 4, stride=2, padding=1, padding_mode="replicate"), nn.ReLU(),
        nn.Conv3d(64, 32, (4, size // 2, size // 2), stride=(2, 1, 1), padding=(1, 0, 0),
                  padding_mode="replicate"), nn.ReLU(),
        nn.Conv3d(32, 10, (4, 1, 1), stride=(2, 1, 1), padding=(1, 0, 0), padding_mode="replicate"),
    ))
    _init_normal(des, 0.001)
    s4 = size // 4
    gen = Generator(nn.Sequential(
        # t -> t + 2 frames, 1 -> S/4 (spatially fully connected, as the paper's second layer)
        nn.ConvTranspose3d(latent_channels, 64, (3, s4, s4)), _batchnorm(64), nn.ReLU(),
        # x2 in time and space
        nn.ConvTranspose3d(64, 32, 4, stride=2, padding=1), _batchnorm(32), nn.ReLU(),
        # x2 in space
        nn.ConvTranspose3d(32, channels, (3, 4, 4), stride=(1, 2, 2), padding=1),
        nn.Tanh(),
    ), latent_channels, scale=2, offset=4, margin=FAST_MARGIN, frames=frames)
    _init_normal(gen, 0.005)
    return des, gen


def build_nets(arch: str, frames: int, size: int, latent_channels: int, channels: int = 3,
               frame_bias: bool = False, classes: int = 0, **options
               ) -> tuple[Descriptor, Generator]:
    """Build the descriptor and generator for a config's ``arch``/``frames``/``size``;
    ``frame_bias``: the generator gets a :class:`FrameBias` before its tanh; ``classes`` > 0: a
    class-conditional pair (multiscale only: :func:`dyntex.multiscale.build_multiscale`)."""
    check_shape(arch, frames, size)
    from .multiscale import build_multiscale  # imports this module's base classes

    builder = {"paper": build_paper, "fast": build_fast, "multiscale": build_multiscale}[arch]
    if classes:
        if arch != "multiscale":
            raise ConfigError("a class-conditional model needs arch 'multiscale' (the standard "
                              "preset)")
        options["classes"] = classes
    des, gen = builder(frames, size, channels=channels, latent_channels=latent_channels, **options)
    if frame_bias:
        gen.body = _with_frame_bias(gen.body, channels, size, max(1, classes))
        gen.frame_bias = gen.body[-2]
    return accelerate(des), accelerate(gen)
