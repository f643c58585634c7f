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

``multiscale`` (the ``standard`` preset, the default; :func:`build_multiscale`): networks for
    stationary textures (after STGConvNet, Xie et al. CVPR 2017), fully convolutional in space
    and time, so a trained model renders larger frames too:

    * generator: a latent *field* X (C x t x S/8 x S/8) of coarse factors, three stages of x2
      upsampling + 3^3 convolution + BatchNorm + ReLU, each finer stage adding its own per-pixel
      noise map with a learned weight per channel (as StyleGAN), a transposed-convolution head
      (kernel 4, stride 2: no sub-pixel grid) and tanh; optional learned ``layout`` map joined
      to the factors and a :class:`FrameBias` before the tanh (the clip's fixed layout);
    * descriptor: a strided pyramid (kernel 4, stride 2, replicate padding) whose every scale
      adds the summed response of a 1x1 head to f (energies of local statistics at 3 scales),
      a small spatially fully-connected last term (the frame's layout), and optionally the
      same pyramid on the temporal differences Y[t+1] - Y[t] (the texture of the motion).

``fast`` (the default before ``multiscale``; designed for a laptop CPU and to avoid the paper
    networks' visible defects when scaled down to 32 x 64^2):

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
    renders the clip's fixed layout and colours from the first iteration and learns the motion."""

    def __init__(self, channels: int, size: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, size, size))

    @torch.no_grad()
    def init_from(self, frame: torch.Tensor) -> None:
        """``frame`` (C, S, S) in [-1, 1]: tanh(bias) = frame (clamped away from +-1)."""
        self.bias.copy_(torch.atanh(frame.clamp(-0.98, 0.98))[None, :, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias
        if bias.shape[-2:] != x.shape[-2:]:  # another size: stretch the bias to it
            bias = nn.functional.interpolate(bias[:, :, 0], size=x.shape[-2:], mode="bilinear",
                                             align_corners=False)[:, :, None]
        return x + bias


def _with_frame_bias(body: nn.Sequential, channels: int, size: int) -> nn.Sequential:
    """``body`` (ending in Tanh) with a :class:`FrameBias` inserted before its Tanh."""
    layers = list(body)
    assert isinstance(layers[-1], nn.Tanh)
    return nn.Sequential(*layers[:-1], FrameBias(channels, size), layers[-1])


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
        y = self.body(z)
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


# ----------------------------------------------------------------------------------------------
# Multi-scale, fully convolutional networks
# ----------------------------------------------------------------------------------------------
def depth_to_space3d(x: torch.Tensor, r: int) -> torch.Tensor:
    """(B, C r^3, t, h, w) -> (B, C, r t, r h, r w): each cell's r^3 channels become an r x r x r
    block (the 3-D pixel shuffle)."""
    b, c, t, h, w = x.shape
    c //= r ** 3
    x = x.reshape(b, c, r, r, r, t, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, c, t * r, h * r, w * r)


class GeneratorStage(nn.Module):
    """[upsample x2] -> conv 3^3 -> (+ learned per-channel weight x noise) -> BatchNorm -> ReLU."""

    def __init__(self, c_in: int, c_out: int, upsample: bool, noise: bool):
        super().__init__()
        self.up = Upsample((2, 2, 2)) if upsample else nn.Identity()
        self.conv = nn.Conv3d(c_in, c_out, 3, padding=1)
        self.noise_weight = nn.Parameter(torch.full((1, c_out, 1, 1, 1), 0.2)) if noise else None
        self.post = nn.Sequential(_batchnorm(c_out), nn.ReLU())

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        x = self.conv(self.up(x))
        if self.noise_weight is not None:
            x = x + self.noise_weight * noise
        return self.post(x)


class FieldGenerator(Generator):
    """A generator whose latent X is a spatio-temporal field, with per-pixel noise at finer scales.

    X is (C + sum_i 8^i, t, S/8, S/8): C channels of coarse latent factors, then, for each stage i
    that takes noise, one noise map at that stage's resolution (2^i times finer in time and space)
    packed into 8^i channels of the coarse grid (:func:`depth_to_space3d` unpacks it). As in
    StyleGAN, each noise map is added to its stage's convolution output with a learned weight
    per channel: the fine detail gets its own randomness. ``layout`` (optional, learned) is a
    (channels, 1, S/8, S/8) map joined to the coarse factors at every latent frame: what the clip
    holds at a fixed place. Everything else is convolutional, so a larger X renders a larger clip.
    ``body`` is the last block (to RGB, tanh); ``stages`` come before it.
    """

    def __init__(self, stages: list[GeneratorStage], head: nn.Sequential, latent_channels: int,
                 margin: int, frames: int, size: int, layout_channels: int):
        self.noise_levels = [i for i, st in enumerate(stages) if st.noise_weight is not None]
        packed = latent_channels + sum(8 ** i for i in self.noise_levels)
        super().__init__(head, packed, scale=4, offset=0, margin=margin, frames=frames)
        self.factors = latent_channels
        self.stages = nn.ModuleList(stages)
        self.size = size
        self.layout = (nn.Parameter(torch.zeros(1, layout_channels, 1, size // 8, size // 8))
                       if layout_channels else None)

    def latent_shape(self, frames: int | None = None, size: int | None = None
                     ) -> tuple[int, int, int, int]:
        side = (size or self.size) // 8
        return (self.latent_channels, self.latent_frames(frames), side, side)

    def forward(self, z: torch.Tensor, frames: int | None = None) -> torch.Tensor:
        x, packed = z[:, :self.factors], z[:, self.factors:]
        noise, c = {}, 0
        for i in self.noise_levels:
            noise[i] = depth_to_space3d(packed[:, c:c + 8 ** i], 2 ** i)
            c += 8 ** i
        if self.layout is not None:
            layout = self.layout
            if layout.shape[-2:] != x.shape[-2:]:  # another size: stretch the layout to it
                layout = nn.functional.interpolate(layout[:, :, 0], size=x.shape[-2:],
                                                   mode="bilinear", align_corners=False)[:, :, None]
            x = torch.cat([x, layout.expand(x.shape[0], -1, x.shape[2], -1, -1)], 1)
        for i, stage in enumerate(self.stages):
            x = stage(x, noise.get(i))
        y = self.body(x)
        frames = frames or self.frames
        start = (y.shape[2] - frames) // 2
        if start < 0:
            raise ConfigError(f"latent of length {z.shape[2]} renders {y.shape[2]} frames, "
                              f"fewer than the {frames} asked for")
        return y[:, :, start:start + frames]


class MultiScaleDescriptor(Descriptor):
    """f(Y) = sum over scales s of sum_positions w_s . h_s(Y) (+ a spatially fully-connected term)
    (+ the same on the temporal differences of Y).

    h_s are the ReLU feature maps of a strided convolutional trunk; each scale contributes the
    summed response of a 1x1x1 head, so the energy matches local statistics at every scale (the
    FRAME / STGConvNet view of f), and an optional last layer fully connected in space (as the
    paper's FC_S) adds the fixed layout of the frame. ``motion``: a second, narrower trunk with
    its own heads sees D(Y) = Y[t+1] - Y[t] (a linear map of Y, so f stays a function of the clip
    whose input gradient is D's adjoint applied to the branch's), the texture of the motion.
    """

    def __init__(self, trunk: list[nn.Module], heads: list[nn.Module], fc: nn.Module | None,
                 motion: tuple[list[nn.Module], list[nn.Module]] | None = None):
        nn.Module.__init__(self)
        self.trunk, self.heads, self.fc = nn.ModuleList(trunk), nn.ModuleList(heads), fc
        self.motion_trunk = nn.ModuleList(motion[0]) if motion else None
        self.motion_heads = nn.ModuleList(motion[1]) if motion else None

    @staticmethod
    def _pyramid(h: torch.Tensor, trunk: nn.ModuleList, heads: nn.ModuleList) -> tuple:
        f = h.new_zeros(h.shape[0])
        for block, head in zip(trunk, heads):
            h = block(h)
            f = f + head(h).flatten(1).sum(1)
        return f, h

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        f, h = self._pyramid(y, self.trunk, self.heads)
        if self.fc is not None:
            f = f + self.fc(h).flatten(1).sum(1)
        if self.motion_trunk is not None:
            f = f + self._pyramid(y[:, :, 1:] - y[:, :, :-1], self.motion_trunk, self.motion_heads)[0]
        return f


class PixelShuffle3d(nn.Module):
    """(B, C * r^2, T, H, W) -> (B, C, T, rH, rW): sub-pixel upsampling in space, per frame."""

    def __init__(self, r: int):
        super().__init__()
        self.r = r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        x = nn.functional.pixel_shuffle(x.transpose(1, 2).reshape(b * t, c, h, w), self.r)
        return x.reshape(b, t, c // self.r ** 2, h * self.r, w * self.r).transpose(1, 2)


class Upsample(nn.Module):
    def __init__(self, scale: tuple[int, int, int], mode: str = "nearest"):
        super().__init__()
        self.scale, self.mode = scale, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.interpolate(x, scale_factor=self.scale, mode=self.mode)


MS_GEN = (96, 48, 24)      # generator channels at S/8, S/4, S/2
MS_DES = (32, 64, 128)     # descriptor channels at S/2, S/4, S/8
MS_MARGIN = 4              # frames rendered and dropped at each end (as FAST_MARGIN)


def build_multiscale(frames: int, size: int, channels: int = 3, latent_channels: int = 16,
                     layout_channels: int = 0, gen_channels: tuple[int, int, int] = MS_GEN,
                     des_channels: tuple[int, int, int] = MS_DES, des_fc: bool = True,
                     noise: bool = True, motion_channels: tuple[int, ...] | None = None
                     ) -> tuple[Descriptor, Generator]:
    """Fully convolutional, multi-scale descriptor and generator (see the module docstring)."""
    check_shape("multiscale", frames, size)
    g0, g1, g2 = gen_channels
    stages = [GeneratorStage(latent_channels + layout_channels, g0, upsample=False, noise=False),
              GeneratorStage(g0, g1, upsample=True, noise=noise),
              GeneratorStage(g1, g2, upsample=True, noise=noise)]
    # x2 in space by a transposed conv whose kernel (4) is a multiple of its stride (2): every
    # output pixel gets the same number of taps (no checkerboard; sub-pixel convolution left a grid)
    head = nn.Sequential(nn.ConvTranspose3d(g2, channels, (3, 4, 4), stride=(1, 2, 2), padding=1),
                         nn.Tanh())
    gen = FieldGenerator(stages, head, latent_channels, MS_MARGIN, frames, size, layout_channels)
    _init_normal(gen, 0.02)
    def pyramid(widths: tuple[int, ...]) -> tuple[list[nn.Module], list[nn.Module]]:
        trunk, heads, c_in = [], [], channels
        for c in widths:
            # kernel 4 at stride 2, replicate padding: every pixel and frame reached evenly (as fast)
            trunk.append(nn.Sequential(nn.Conv3d(c_in, c, 4, stride=2, padding=1,
                                                 padding_mode="replicate"), nn.ReLU()))
            heads.append(nn.Conv3d(c, 1, 1))
            c_in = c
        return trunk, heads

    trunk, heads = pyramid(des_channels)
    fc = nn.Conv3d(des_channels[-1], 16, (1, size // 8, size // 8)) if des_fc else None
    des = MultiScaleDescriptor(trunk, heads, fc, pyramid(motion_channels) if motion_channels else None)
    _init_normal(des, 0.001)
    return des, gen


def build_nets(arch: str, frames: int, size: int, latent_channels: int, channels: int = 3,
               frame_bias: bool = False, **options) -> tuple[Descriptor, Generator]:
    """Build the descriptor and generator for a config's ``arch``/``frames``/``size``;
    ``frame_bias``: the generator gets a :class:`FrameBias` before its tanh."""
    check_shape(arch, frames, size)
    builder = {"paper": build_paper, "fast": build_fast, "multiscale": build_multiscale}[arch]
    des, gen = builder(frames, size, channels=channels, latent_channels=latent_channels, **options)
    if frame_bias:
        gen.body = _with_frame_bias(gen.body, channels, size)
        gen.frame_bias = gen.body[-2]
    return accelerate(des), accelerate(gen)
