"""The ``multiscale`` networks (the ``quality`` and ``standard`` presets): a stationary, fully
convolutional, multi-scale descriptor and generator for dynamic textures (after STGConvNet, Xie et
al. CVPR 2017; :mod:`dyntex.nets` describes them beside the ``paper`` and ``fast`` networks).

Layout is (B, C, T, H, W). Every layer is convolutional, so a model trained at S x S renders and
scores other sizes (a multiple of 8); only the optional layout map, frame bias and the
descriptor's last spatially fully-connected term are tied to the training size (the first two
are stretched to another size; the last makes descriptor Langevin at another size impossible).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .errors import ConfigError
from .nets import (Descriptor, FrameBias, Generator, _batchnorm, _init_normal, check_shape,
                   stretch_map)


def depth_to_space3d(x: torch.Tensor, r: int | tuple[int, int, int]) -> torch.Tensor:
    """(B, C rt rh rw, t, h, w) -> (B, C, rt t, rh h, rw w): each cell's rt rh rw channels become
    an rt x rh x rw block (the 3-D pixel shuffle; an int r is r x r x r)."""
    rt, rh, rw = (r, r, r) if isinstance(r, int) else r
    b, c, t, h, w = x.shape
    c //= rt * rh * rw
    x = x.reshape(b, c, rt, rh, rw, t, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, c, t * rt, h * rh, w * rw)


NOISE_WEIGHT = 0.2         # the noise maps' starting weight unless config noise_weight says
FLOW_MAX = 1.0             # bound of the noise flow, pixels per frame at its features' scale


def advect(noise: torch.Tensor, flow: torch.Tensor, rho: float) -> torch.Tensor:
    """Noise maps (B, C, T, H, W) carried along a flow (B, 2, T, H, W) of (dx, dy) pixels per frame:
    out_0 = n_0, out_t = rho W_t(out_(t-1)) + sqrt(1 - rho^2) n_t, where W_t takes the value at
    p - flow_t(p) in the previous frame (bilinear, reflected at the border), so a pattern moves by
    the flow each frame while fresh noise renews it. With a zero flow this is a stationary AR(1)
    in time; bilinear warping smooths the carried part a little, so its variance is at most 1."""
    b, _, t, h, w = noise.shape
    ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h, device=noise.device, dtype=noise.dtype)
    xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w, device=noise.device, dtype=noise.dtype)
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)[None]   # (1, H, W, (x, y))
    to_unit = noise.new_tensor([2.0 / w, 2.0 / h])                          # pixels -> [-1, 1]
    fresh = math.sqrt(1.0 - rho * rho)
    frames = [noise[:, :, 0]]
    for k in range(1, t):
        grid = base - flow[:, :, k].permute(0, 2, 3, 1) * to_unit
        carried = nn.functional.grid_sample(frames[-1], grid, mode="bilinear",
                                            padding_mode="reflection", align_corners=False)
        frames.append(rho * carried + fresh * noise[:, :, k])
    return torch.stack(frames, 2)


def shift(noise: torch.Tensor, velocity: torch.Tensor, rho: float) -> torch.Tensor:
    """Noise maps (B, C, T, H, W) carried by one velocity per clip and frame (B, 2, T) of (dx, dy)
    pixels per frame: out_0 = n_0, out_t = rho S_t(out_(t-1)) + sqrt(1 - rho^2) n_t, where S_t
    translates the whole map by the velocity as an exact Fourier shift (periodic). Unlike the
    bilinear warp of :func:`advect` it does not blur, so the map's energy does not depend on the
    velocity and its gradient has no preferred direction; any velocity keeps the AR(1)'s unit
    variance (up to the Nyquist row and column at fractional shifts)."""
    b, _, t, h, w = noise.shape
    ky = torch.fft.fftfreq(h, device=noise.device, dtype=noise.dtype)[:, None]
    kx = torch.fft.rfftfreq(w, device=noise.device, dtype=noise.dtype)[None, :]
    fresh = math.sqrt(1.0 - rho * rho)
    frames = [noise[:, :, 0]]
    for k in range(1, t):
        vx, vy = (velocity[:, i, k][:, None, None, None] for i in (0, 1))
        phase = torch.exp(-2j * math.pi * (kx * vx + ky * vy))   # shift theorem
        carried = torch.fft.irfft2(torch.fft.rfft2(frames[-1]) * phase, s=(h, w))
        frames.append(rho * carried + fresh * noise[:, :, k])
    return torch.stack(frames, 2)


class NoiseFlow(nn.Module):
    """A flow predicted from a stage's input features (conv 3^3 to (dx, dy), tanh-bounded by
    FLOW_MAX pixels per frame at the features' scale) that carries the stage's noise map, so the
    fine detail can move with the content instead of being drawn afresh in every frame. Zero at
    initialisation: training starts from the AR(1) noise of ``rho``.
    ``field`` "local": a flow per pixel, bilinear warp (:func:`advect`); bilinear warping has a
    one-sided gradient at whole-pixel positions, so a loss that prefers weaker noise pulls the
    flow up-left, towards blur (docs/quality.md, thirteenth round). "global": one velocity per
    clip and frame (tanh of the conv's spatial mean), an exact shift (:func:`shift`), unbiased."""

    def __init__(self, c_in: int, rho: float, field: str = "local"):
        super().__init__()
        self.rho = rho
        self.field = field
        self.conv = nn.Conv3d(c_in, 2, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def flow(self, features: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
        """The flow at the noise map's (T, H, W) ``shape``, in its pixels per frame."""
        f = torch.tanh(self.conv(features)) * FLOW_MAX
        return nn.functional.interpolate(f, size=shape, mode="trilinear") * (shape[1] / f.shape[-2])

    def velocity(self, features: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
        """The global field's (B, 2, T) velocity at the noise map's (T, H, W) ``shape``."""
        f = self.conv(features)
        v = torch.tanh(f.mean(dim=(3, 4))) * FLOW_MAX * (shape[1] / f.shape[-2])
        return nn.functional.interpolate(v, size=shape[0], mode="linear")

    def forward(self, features: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        if self.field == "global":
            return shift(noise, self.velocity(features, noise.shape[-3:]), self.rho)
        return advect(noise, self.flow(features, noise.shape[-3:]), self.rho)


class GeneratorStage(nn.Module):
    """[upsample x2] -> conv 3^3 -> (+ learned per-channel weight x noise) -> BatchNorm -> ReLU.

    ``grid``: the stage's resolution as (time, height, width) multiples of the coarse latent grid
    (what its noise map is unpacked to); ``conv``: replaces conv 3^3 (e.g. an upsampling one)."""

    def __init__(self, c_in: int, c_out: int, upsample: bool, noise: bool,
                 noise_weight: float = NOISE_WEIGHT, grid: tuple[int, int, int] = (1, 1, 1),
                 conv: nn.Module | None = None):
        super().__init__()
        self.grid = grid
        self.up = Upsample((2, 2, 2)) if upsample else nn.Identity()
        self.conv = conv if conv is not None else nn.Conv3d(c_in, c_out, 3, padding=1)
        self.noise_weight = (nn.Parameter(torch.full((1, c_out, 1, 1, 1), float(noise_weight)))
                             if noise else None)
        self.post = nn.Sequential(_batchnorm(c_out), nn.ReLU())

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        x = self.conv(self.up(x))
        if self.noise_weight is not None:
            x = x + self.noise_weight * noise
        return self.post(x)


class FieldGenerator(Generator):
    """A generator whose latent X is a spatio-temporal field, with per-pixel noise at finer scales.

    X is (C + sum_i n_i, t, S/8, S/8): C channels of coarse latent factors, then, for each stage i
    that takes noise, one noise map at that stage's resolution (``stage.grid`` times finer in
    time, height and width) packed into n_i = the grid's product channels of the coarse grid
    (:func:`depth_to_space3d` unpacks it). As in
    StyleGAN, each noise map is added to its stage's convolution output with a learned weight
    per channel: the fine detail gets its own randomness. ``layout`` (optional, learned) is a
    (channels, 1, S/8, S/8) map joined to the coarse factors at every latent frame: what the clip
    holds at a fixed place. Everything else is convolutional, so a larger X renders a larger clip.
    ``body`` is the last block (to RGB, tanh); ``stages`` come before it.
    """

    def __init__(self, stages: list[GeneratorStage], head: nn.Sequential, latent_channels: int,
                 margin: int, frames: int, size: int, layout_channels: int, classes: int = 0,
                 embed_channels: int = 0):
        self.noise_levels = [i for i, st in enumerate(stages) if st.noise_weight is not None]
        packed = latent_channels + sum(math.prod(stages[i].grid) for i in self.noise_levels)
        super().__init__(head, packed, scale=4, offset=0, margin=margin, frames=frames)
        self.factors = latent_channels
        self.stages = nn.ModuleList(stages)
        self.size = size
        self.layout = (nn.Parameter(torch.zeros(1, layout_channels, 1, size // 8, size // 8))
                       if layout_channels else None)
        # class-conditional: a learned embedding of the class joined to the factors everywhere
        self.embed = nn.Embedding(classes, embed_channels) if classes else None
        if self.embed is not None:
            nn.init.normal_(self.embed.weight, 0.0, 1.0)
        self.noise_flow: NoiseFlow | None = None   # carries the last noise map (build_multiscale)

    def latent_shape(self, frames: int | None = None, size: int | None = None
                     ) -> tuple[int, int, int, int]:
        side = (size or self.size) // 8
        return (self.latent_channels, self.latent_frames(frames), side, side)

    def forward(self, z: torch.Tensor, frames: int | None = None,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        """Clips of the latents ``z``; ``labels`` (conditional models only): class indices (B,)
        or class weights (B, classes), which blend the classes' embeddings and frame biases."""
        if (labels is None) != (self.embed is None):
            raise ConfigError("a class-conditional generator needs labels, an unconditional one "
                              "takes none")
        x, packed = z[:, :self.factors], z[:, self.factors:]
        noise, c = {}, 0
        for i in self.noise_levels:
            n = math.prod(self.stages[i].grid)
            noise[i] = depth_to_space3d(packed[:, c:c + n], self.stages[i].grid)
            c += n
        if self.layout is not None:
            layout = stretch_map(self.layout, x.shape[-2:])
            x = torch.cat([x, layout.expand(x.shape[0], -1, x.shape[2], -1, -1)], 1)
        if self.embed is not None:
            # class indices (B,), or class weights (B, classes): a blend of the embeddings
            e = self.embed(labels) if not labels.is_floating_point() else labels @ self.embed.weight
            e = e[:, :, None, None, None]
            x = torch.cat([x, e.expand(-1, -1, *x.shape[2:])], 1)
        for i, stage in enumerate(self.stages):
            if self.noise_flow is not None and i == self.noise_levels[-1]:
                noise[i] = self.noise_flow(x, noise[i])
            x = stage(x, noise.get(i))
        for layer in self.body:           # the frame bias is chosen by class
            x = layer(x, labels) if isinstance(layer, FrameBias) else layer(x)
        return self.centre_frames(x, z, frames)


class MultiScaleDescriptor(Descriptor):
    """f(Y) = sum over scales s of sum_positions w_s . h_s(Y) (+ a spatially fully-connected term)
    (+ the same on the temporal differences of Y).

    h_s are the ReLU feature maps of a strided convolutional trunk (and, optionally, of one
    stride-1 layer at full resolution); each scale contributes the
    summed response of a 1x1x1 head, so the energy matches local statistics at every scale (the
    FRAME / STGConvNet view of f), and an optional last layer fully connected in space (as the
    paper's FC_S) adds the fixed layout of the frame. ``motion``: a second, narrower trunk with
    its own heads sees D(Y) = Y[t+1] - Y[t] (a linear map of Y, so f stays a function of the clip
    whose input gradient is D's adjoint applied to the branch's), the texture of the motion.
    """

    def __init__(self, trunk: list[nn.Module], heads: list[nn.Module], fc: nn.Module | None,
                 motion: tuple[list[nn.Module], list[nn.Module]] | None = None, classes: int = 0,
                 fine: tuple[nn.Module, nn.Module] | None = None):
        nn.Module.__init__(self)
        self.trunk, self.heads, self.fc = nn.ModuleList(trunk), nn.ModuleList(heads), fc
        self.motion_trunk = nn.ModuleList(motion[0]) if motion else None
        self.motion_heads = nn.ModuleList(motion[1]) if motion else None
        self.classes = classes
        # optional full-resolution scale (stride 1): pixel-level statistics the strided trunk
        # sees only through its first stride-2 layer (which can miss a 2-pixel pattern)
        self.fine_layer, self.fine_head = fine if fine else (None, None)

    def _pyramid(self, h: torch.Tensor, trunk: nn.ModuleList, heads: nn.ModuleList) -> tuple:
        f = h.new_zeros(h.shape[0], max(1, self.classes))
        for block, head in zip(trunk, heads):
            h = block(h)
            f = f + head(h).flatten(2).sum(2)
        return f, h

    def energies(self, y: torch.Tensor) -> torch.Tensor:
        """f(Y; theta_c) of every class c, (B, classes) (one column for an unconditional model):
        the heads have one output channel per class on a shared trunk."""
        f, h = self._pyramid(y, self.trunk, self.heads)
        if self.fc is not None:
            f = f + self.fc(h).reshape(h.shape[0], f.shape[1], -1).sum(2)
        if self.motion_trunk is not None:
            f = f + self._pyramid(y[:, :, 1:] - y[:, :, :-1], self.motion_trunk, self.motion_heads)[0]
        if self.fine_layer is not None:
            f = f + self.fine_head(self.fine_layer(y)).flatten(2).sum(2)
        return f

    def forward(self, y: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """f(Y) per clip, (B,); a class-conditional descriptor gives f(Y; theta_c) of each clip's
        class ``labels`` (B,)."""
        if (labels is None) != (self.classes == 0):
            raise ConfigError("a class-conditional descriptor needs labels, an unconditional one "
                              "takes none")
        f = self.energies(y)
        return f[:, 0] if labels is None else f.gather(1, labels[:, None])[:, 0]


class Upsample(nn.Module):
    def __init__(self, scale: tuple[int, int, int], mode: str = "nearest"):
        super().__init__()
        self.scale, self.mode = scale, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.interpolate(x, scale_factor=self.scale, mode=self.mode)


MS_GEN = (96, 48, 24)      # generator channels at S/8, S/4, S/2
MS_DES = (32, 64, 128)     # descriptor channels at S/2, S/4, S/8
MS_MARGIN = 4              # frames rendered and dropped at each end (as FAST_MARGIN)
MS_EMBED = 8               # channels of a class-conditional generator's class embedding


def build_multiscale(frames: int, size: int, channels: int = 3, latent_channels: int = 16,
                     layout_channels: int = 0, gen_channels: tuple[int, int, int] = MS_GEN,
                     des_channels: tuple[int, int, int] = MS_DES, des_fc: bool = True,
                     noise: bool = True, motion_channels: tuple[int, ...] | None = None,
                     classes: int = 0, noise_weight: float = NOISE_WEIGHT,
                     fine_channels: int = 0, des_fine_channels: int = 0,
                     fine_upsample: str = "transposed", noise_flow: float = 0.0,
                     noise_flow_field: str = "local") -> tuple[Descriptor, Generator]:
    """Fully convolutional, multi-scale descriptor and generator (see the module docstring).
    ``classes`` > 0: class-conditional (a class embedding of ``MS_EMBED`` channels joined to the
    generator's factors; one energy output per class on the descriptor's heads).
    ``noise_weight``: the starting weight of the per-pixel noise maps (learned, but at the
    generator's rate they move little within a run: docs/quality.md).
    ``fine_channels`` > 0: the generator's last upsampling feeds a full-resolution stage of that
    width, with its own noise map, before a conv 3^3 to RGB. ``des_fine_channels`` > 0: the
    descriptor gets a stride-1 conv 3^3 of that width with its own head. ``fine_upsample``
    "bilinear": the full-resolution stage upsamples bilinearly, then a conv 3^3, instead of the
    transposed convolution (whose four sub-kernels can print a fixed 2-pixel grid).
    ``noise_flow`` > 0: the finest noise map is carried along a flow the generator predicts from
    that stage's input (:class:`NoiseFlow`), with this correlation between consecutive frames;
    ``noise_flow_field`` "local" (a flow per pixel) or "global" (one velocity per clip and frame)."""
    check_shape("multiscale", frames, size)
    g0, g1, g2 = gen_channels
    embed = MS_EMBED if classes else 0
    stages = [GeneratorStage(latent_channels + layout_channels + embed, g0, upsample=False,
                             noise=False),
              GeneratorStage(g0, g1, upsample=True, noise=noise, noise_weight=noise_weight,
                             grid=(2, 2, 2)),
              GeneratorStage(g1, g2, upsample=True, noise=noise, noise_weight=noise_weight,
                             grid=(4, 4, 4))]
    # x2 in space by a transposed conv whose kernel (4) is a multiple of its stride (2): every
    # output pixel gets the same number of taps (no checkerboard; sub-pixel convolution left a grid)
    # (a resize-convolution head, bilinear x2 then conv 3^3, has no grid either but was blurrier
    # and scored worse: docs/quality.md)
    def upsample_space(c_out: int) -> nn.Module:
        return nn.ConvTranspose3d(g2, c_out, (3, 4, 4), stride=(1, 2, 2), padding=1)

    if fine_channels:
        up = (nn.Sequential(Upsample((1, 2, 2), "trilinear"), nn.Conv3d(g2, fine_channels, 3,
                                                                        padding=1))
              if fine_upsample == "bilinear" else upsample_space(fine_channels))
        stages.append(GeneratorStage(g2, fine_channels, upsample=False, noise=noise,
                                     noise_weight=noise_weight, grid=(4, 8, 8), conv=up))
        last = nn.Conv3d(fine_channels, channels, 3, padding=1)
    else:
        last = upsample_space(channels)
    gen = FieldGenerator(stages, nn.Sequential(last, nn.Tanh()), latent_channels, MS_MARGIN,
                         frames, size, layout_channels, classes, embed)
    _init_normal(gen, 0.02)
    if noise_flow and noise:
        gen.noise_flow = NoiseFlow(g2 if fine_channels else g1, noise_flow, noise_flow_field)
    outputs = max(1, classes)
    def pyramid(widths: tuple[int, ...]) -> tuple[list[nn.Module], list[nn.Module]]:
        trunk, heads, c_in = [], [], channels
        for c in widths:
            # kernel 4 at stride 2, replicate padding: every pixel and frame reached evenly (as fast)
            trunk.append(nn.Sequential(nn.Conv3d(c_in, c, 4, stride=2, padding=1,
                                                 padding_mode="replicate"), nn.ReLU()))
            heads.append(nn.Conv3d(c, outputs, 1))
            c_in = c
        return trunk, heads

    trunk, heads = pyramid(des_channels)
    fc = nn.Conv3d(des_channels[-1], 16 * outputs, (1, size // 8, size // 8)) if des_fc else None
    fine = ((nn.Sequential(nn.Conv3d(channels, des_fine_channels, 3, padding=1,
                                     padding_mode="replicate"), nn.ReLU()),
             nn.Conv3d(des_fine_channels, outputs, 1)) if des_fine_channels else None)
    des = MultiScaleDescriptor(trunk, heads, fc,
                               pyramid(motion_channels) if motion_channels else None, classes,
                               fine)
    _init_normal(des, 0.001)
    return des, gen
