"""Faster formulations of the networks' layers: the same function, the same parameters.

:func:`accelerate` swaps the ``nn.Conv3d`` / ``nn.ConvTranspose3d`` layers of a module for the
subclasses below. They hold the very same ``Parameter`` objects (same ``state_dict`` keys, shapes
and values, so checkpoints are unaffected); only some weights are re-laid out in memory
(``channels_last_3d``), which changes strides, never values. Each subclass picks, per call, a
rewrite of the layer that PyTorch's generic CPU kernels run slowly, and falls back to the plain
layer for anything it does not recognise:

* a convolution whose kernel covers the whole input plane (the descriptors' "spatially fully
  connected" layer, kernel ``(k, H, W)``) is ``k`` strided matrix products over frames
  (:class:`_FCConv`): no im2col, no padded copy, input gradient and weight gradient the same way;
* a transposed convolution of a 1 x 1 plane (the generators' first spatial layer, kernel
  ``(k, h, w)``) is a matrix product per frame plus an overlap-add in time (:class:`_FCConvT`);
* a strided convolution with few input channels (the descriptors' first layer, 3 -> C) moves
  its temporal taps into channels and runs as a 2-D convolution over frames (:func:`_time_unfold_conv`),
  whose input gradient (what Langevin adds to the clips) oneDNN computes far faster than the 3-D
  one with 3 output channels;
* a strided transposed convolution is split into its ``prod(stride)`` output phases, each an
  ordinary stride-1 convolution with a sub-kernel (:func:`_phase_conv_transpose`), when that is the
  faster formulation (large channel counts), or a single convolution with the phases stacked as
  output channels (few output channels, e.g. RGB).

Weight gradients are skipped when the autograd call does not ask for them (Langevin takes input
gradients only), as PyTorch's own convolutions do. A ReLU right before a spatially fully-connected
convolution is applied by that layer (:class:`FusedReLU`), its backward folded into the layer's
input gradient; a BatchNorm and ReLU right before a (not fully-connected) transposed convolution
are applied by that layer (:class:`FusedBatchNorm3d`, :class:`_BNReLUConvT`), which keeps
BatchNorm's input, not the ReLU's output, for its backward pass. Within :func:`step_in_backward`,
the weight gradients of the spatially fully-connected layers are not returned but applied by Adam
slice by slice as they are made.

The switch: ``DYNTEX_FASTOPS=0`` in the environment makes :func:`accelerate` a no-op, and
:func:`set_enabled` / :func:`enabled_scope` turn the rewrites off at run time (the accelerated
layers then run the plain PyTorch formulation, which the tests use as the reference).
"""
from __future__ import annotations

import contextlib
import functools
import os
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor
CL3 = torch.channels_last_3d

ENV_VAR = "DYNTEX_FASTOPS"
_enabled = os.environ.get(ENV_VAR, "1").strip().lower() not in ("0", "false", "off", "no")

# A strided Conv3d is run as a 2-D convolution over frames when in_channels * kernel_t is at most
# this (the input is small, so moving the temporal taps into channels costs a cheap copy).
SMALL_CIN_TAPS = 32
# ... and its input gradient is computed with at least this many channels (zero-padded).
MIN_GRAD_CHANNELS = 16


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


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------
def _alias(t: Tensor | None) -> Tensor | None:
    """A view of ``t`` whose autograd node tells, during backward, whether t's grad is wanted."""
    return t if t is None or not t.requires_grad else t.view_as(t)


def _wanted(ctx, i: int) -> bool:
    """Whether the current backward call needs the gradient of the Function's input ``i``.

    ``ctx.needs_input_grad`` only says whether the input requires grad; a Langevin step
    (``autograd.grad(f, x)``) needs no weight gradient even though the weights require grad.
    The inputs are passed through :func:`_alias` views, whose nodes the engine can be asked about.
    """
    if not ctx.needs_input_grad[i]:
        return False
    node = ctx.next_functions[i][0]
    if node is None:
        return False
    try:
        return bool(torch._C._will_engine_execute_node(node))
    except (AttributeError, RuntimeError):  # older torch, or a leaf: compute it to be safe
        return True


def _cl_rows(x: Tensor) -> Tensor:
    """(B, C, T, H, W) -> (B, T, H*W*C), a view of x in channels_last_3d memory (copied if not)."""
    b, c, t, h, w = x.shape
    return x.contiguous(memory_format=CL3).permute(0, 2, 3, 4, 1).reshape(b, t, h * w * c)


def _tap_range(n_out: int, n_in: int, stride: int, tap: int, pad: int) -> tuple[int, int]:
    """Output rows ``[lo, hi)`` whose source frame ``stride * t + tap - pad`` lies in the input."""
    lo = max(0, -((tap - pad) // stride))  # ceil((pad - tap) / stride)
    hi = min(n_out, (n_in - 1 + pad - tap) // stride + 1)
    return lo, max(lo, hi)


# ----------------------------------------------------------------------------------------------
# Spatially fully-connected convolution: kernel (k, H, W) over an (H, W) plane, output 1 x 1
# ----------------------------------------------------------------------------------------------
# Frames are grouped by their residue modulo the temporal stride: with frames as rows of a
# (B * T / st, st, F) array, tap dt reads (or writes) the rows of residue (dt - pt) mod st of every
# clip at once, shifted by a whole number of rows. Each tap is then ONE matrix product over all
# clips and frames (weights read once), instead of one per clip.
def _residue(tap: int, pad: int, stride: int) -> tuple[int, int]:
    """Frame st*t + tap - pad = st*(t + shift) + rho: returns (rho, shift)."""
    rho = (tap - pad) % stride
    return rho, (tap - pad - rho) // stride


def _shifted(rows: Tensor, n: int, lo: int, hi: int, shift: int) -> Tensor:
    """(B, n, K) zeros with rows[:, lo:hi] placed at [lo + shift, hi + shift)."""
    out = rows.new_zeros(rows.shape[0], n, rows.shape[2])
    if hi > lo:
        out[:, lo + shift: hi + shift] = rows[:, lo:hi]
    return out


def _by_residue(rows: Tensor, stride: int) -> tuple[Tensor, int]:
    """(B, T, F) -> (B * R, stride, F) with R = ceil(T / stride) (zero frames appended if needed)."""
    b, t, f = rows.shape
    r = -(-t // stride)
    if r * stride != t:
        rows = F.pad(rows, (0, 0, 0, r * stride - t))
    return rows.reshape(b * r, stride, f), r


class _FCConv(torch.autograd.Function):
    """out[b, :, t] = bias + sum_dt W[:, :, dt] . X[b, :, st*t + dt - pt]   (frames out of range:
    zero, or the nearest frame with replicate padding)."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, pad, replicate, relu_input=False, param=None):
        b, _, t_in = x.shape[:3]
        o, kt = weight.shape[0], weight.shape[2]
        xr = _cl_rows(x)                                            # (B, T, F)
        wr = weight.permute(0, 2, 3, 4, 1)                          # (O, kt, H, W, C)
        if not wr.is_contiguous():
            wr = wr.contiguous()
        wr = wr.reshape(o, kt, -1)                                  # (O, kt, F)
        t_out = (t_in + 2 * pad - kt) // stride + 1
        xg, r = _by_residue(xr, stride)
        out = (bias.expand(b, t_out, o).clone() if bias is not None
               else xr.new_zeros(b, t_out, o))
        for dt in range(kt):
            rho, shift = _residue(dt, pad, stride)
            lo, hi = _tap_range(t_out, t_in, stride, dt, pad)
            if hi > lo:
                # (W X^T)^T, not X W^T: the same products, 1.25x faster in MKL for these shapes
                p = torch.mm(wr[:, dt], xg[:, rho].t()).t().view(b, r, o)
                out[:, lo:hi] += p[:, lo + shift: hi + shift]
            if replicate:
                for t in [*range(0, lo), *range(hi, t_out)]:
                    frame = min(max(stride * t + dt - pad, 0), t_in - 1)
                    out[:, t].addmm_(xr[:, frame], wr[:, dt].t())
        ctx.save_for_backward(xr, wr)
        ctx.geom = (x.shape, weight.shape, stride, pad, replicate, t_out, bias is not None)
        ctx.relu_input = relu_input
        ctx.param = param
        # a fresh tensor, never a view: a following in-place ReLU may overwrite it
        res = out.new_empty(b, o, t_out, 1, 1)
        res.copy_(out.transpose(1, 2)[..., None, None])
        return res

    @staticmethod
    def backward(ctx, gout):
        xr, wr = ctx.saved_tensors
        (b, c, t_in, h, w), wshape, stride, pad, replicate, t_out, has_bias = ctx.geom
        o, kt = wshape[0], wshape[2]
        g = gout.reshape(b, o, t_out).transpose(1, 2).contiguous()  # (B, T_out, O)
        r = -(-t_in // stride)
        taps = []  # (dt, rho, g shifted onto the residue rows, border rows)
        for dt in range(kt):
            rho, shift = _residue(dt, pad, stride)
            lo, hi = _tap_range(t_out, t_in, stride, dt, pad)
            border = ([(t, min(max(stride * t + dt - pad, 0), t_in - 1))
                       for t in [*range(0, lo), *range(hi, t_out)]] if replicate else [])
            taps.append((dt, rho, _shifted(g, r, lo, hi, shift).view(b * r, o), border))
        gx = gw = gb = None
        if _wanted(ctx, 0):
            gxg = xr.new_empty(b * r, stride, h * w * c)
            written = set()
            for dt, rho, gs, _ in taps:
                gxg[:, rho].addmm_(gs, wr[:, dt], beta=1.0 if rho in written else 0.0)
                written.add(rho)
            for rho in set(range(stride)) - written:
                gxg[:, rho].zero_()
            gxr = gxg.view(b, r * stride, -1)[:, :t_in]
            for dt, _, _, border in taps:
                for t, frame in border:
                    gxr[:, frame].addmm_(g[:, t], wr[:, dt])
            if ctx.relu_input:  # the preceding ReLU's backward, in place on this fresh buffer
                torch.ops.aten.threshold_backward.grad_input(gxr, xr, 0, grad_input=gxr)
            gx = gxr.reshape(b, t_in, h, w, c).permute(0, 4, 1, 2, 3)
        if _wanted(ctx, 1) and not _step_in_backward(
                ctx.param, lambda: _FCConv._weight_grad_rows(g, xr, kt, stride, pad, replicate),
                h * w * c, False):
            xg, _ = _by_residue(xr, stride)
            gwr = wr.new_empty(o, kt, h, w, c)
            gflat = gwr.view(o, kt, -1)
            for dt, rho, gs, border in taps:
                gflat[:, dt].addmm_(gs.t(), xg[:, rho], beta=0.0)
                for t, frame in border:
                    gflat[:, dt].addmm_(g[:, t].t(), xr[:, frame])
            gw = gwr.permute(0, 4, 1, 2, 3)                         # (O, C, kt, H, W), CL strides
        if has_bias and _wanted(ctx, 2):
            gb = g.sum((0, 1))
        return gx, gw, gb, None, None, None, None, None

    @staticmethod
    def _weight_grad_rows(g: Tensor, xr: Tensor, kt: int, stride: int, pad: int, replicate: bool):
        """``produce(r0, r1, out)``: rows [r0, r1) of the weight gradient as an (O * kt, H*W*C)
        matrix (the channels-last weight's memory order), as G[:, r0:r1]^T X with G the (B * T_in,
        O * kt) matrix that scatters each output frame's gradient onto the input frame of each tap."""
        b, t_out, o = g.shape
        t_in = xr.shape[1]
        gm = g.new_zeros(b, t_in, o, kt)
        for dt in range(kt):
            frames = torch.arange(t_out, device=g.device) * stride + dt - pad
            keep = (frames >= 0) & (frames < t_in)
            if replicate:
                frames, keep = frames.clamp(0, t_in - 1), torch.ones_like(keep)
            gm[..., dt].index_add_(1, frames[keep], g[:, keep])
        gm = gm.view(b * t_in, o * kt)
        xm = xr.reshape(b * t_in, -1)
        return lambda r0, r1, out: torch.mm(gm[:, r0:r1].t(), xm, out=out)


# ----------------------------------------------------------------------------------------------
# Transposed convolution of a 1 x 1 plane: kernel (k, h, w), output (h, w)
# ----------------------------------------------------------------------------------------------
def _channels_inner(weight: Tensor) -> Tensor:
    """A transposed convolution's weight (C, O, kt, h, w) as an (O * kt * h * w, C) matrix: a view
    when the weight is stored input-channel innermost (as :func:`accelerate` lays it out)."""
    return weight.permute(1, 2, 3, 4, 0).reshape(-1, weight.shape[0])


class _FCConvT(torch.autograd.Function):
    """y[b, :, st*t + dt - pt] += W[:, :, dt]^T x[b, :, t]  (+ bias), frames cropped to t_out.

    One matrix product (B * T_in, C) @ (C, O * kt * hw) gives every tap of every input frame (the
    weight read once, as laid out by :func:`accelerate`); the taps are then overlap-added in time.
    """

    @staticmethod
    def _taps(t_in: int, kt: int, stride: int, pad: int, t_out: int):
        for dt in range(kt):  # input frames t in [lo, hi) land on output frames f0, f0 + st, ...
            lo = max(0, -((dt - pad) // stride))
            hi = max(lo, min(t_in, (t_out - 1 + pad - dt) // stride + 1))
            yield dt, lo, hi, stride * lo + dt - pad

    @staticmethod
    def forward(ctx, x, weight, bias, stride, pad, t_out, param=None):
        b, c, t_in = x.shape[:3]
        o, kt, h, w = weight.shape[1:]
        xm = x.reshape(b, c, t_in).transpose(1, 2).reshape(b * t_in, c)
        wt = _channels_inner(weight)                                # (O * kt * h * w, C)
        u = torch.mm(xm, wt.t()).view(b, t_in, o, kt, h * w)
        y = (bias.view(1, o, 1, 1).expand(b, o, t_out, h * w).contiguous() if bias is not None
             else x.new_zeros(b, o, t_out, h * w))
        for dt, lo, hi, f0 in _FCConvT._taps(t_in, kt, stride, pad, t_out):
            if hi > lo:
                y[:, :, f0: f0 + stride * (hi - lo - 1) + 1: stride] += u[:, lo:hi, :, dt].transpose(1, 2)
        ctx.save_for_backward(xm, wt)
        ctx.geom = (x.shape, weight.shape, stride, pad, t_out, bias is not None)
        ctx.param = param
        return y.view(b, o, t_out, h, w)

    @staticmethod
    def backward(ctx, gy):
        xm, wt = ctx.saved_tensors
        xshape, wshape, stride, pad, t_out, has_bias = ctx.geom
        b, c, t_in = xshape[:3]
        o, kt, h, w = wshape[1:]
        gy = gy.reshape(b, o, t_out, h * w)
        gx = gw = gb = None
        need_x, need_w = _wanted(ctx, 0), _wanted(ctx, 1)
        if need_x or need_w:
            taps = list(_FCConvT._taps(t_in, kt, stride, pad, t_out))
            full = all(lo == 0 and hi == t_in for _, lo, hi, _ in taps)
            gu = (gy.new_empty if full else gy.new_zeros)(b, t_in, o, kt, h * w)
            for dt, lo, hi, f0 in taps:
                if hi > lo:
                    gu[:, lo:hi, :, dt] = gy[:, :, f0: f0 + stride * (hi - lo - 1) + 1: stride].transpose(1, 2)
            gu = gu.view(b * t_in, -1)
            if need_x:
                gx = torch.mm(gu, wt).view(b, t_in, c).transpose(1, 2).reshape(xshape)
            # (N, C) = gu^T xm, 1.9x faster in MKL than (C, N) = xm^T gu. Rows [r0, r1) of it are
            # the weight's elements [r0 * C, r1 * C) in memory (input channel innermost).
            if need_w and not _step_in_backward(ctx.param, lambda: lambda r0, r1, out: torch.mm(
                    gu[:, r0:r1].t(), xm, out=out), c, True):
                gw = torch.mm(gu.t(), xm).view(o, kt, h, w, c).permute(4, 0, 1, 2, 3)
        if has_bias and _wanted(ctx, 2):
            gb = gy.sum((0, 2, 3))
        return gx, gw, gb, None, None, None, None


# ----------------------------------------------------------------------------------------------
# Convolution with few input channels: its input gradient as a 2-D problem over frames
# ----------------------------------------------------------------------------------------------
class _SmallCinConv(torch.autograd.Function):
    """conv3d (zero padding) whose input gradient moves the temporal taps into channels.

    out[b, :, t] = sum_dt conv2d(x[b, :, st*t + dt - pt], W[:, :, dt]) is a 2-D convolution over
    output frames with kt * C input channels. The forward pass and the weight gradient are
    oneDNN's 3-D kernels (fast enough); the input gradient - a transposed convolution with only C
    (= 3) output channels, slow in 3-D - is the 2-D one with kt * C outputs, then an overlap-add
    of the kt taps in time.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding):
        x = x.contiguous(memory_format=CL3)
        ctx.save_for_backward(x, weight)
        ctx.conf = (stride, padding, bias is not None)
        return F.conv3d(x, weight, bias, stride, padding)

    @staticmethod
    def backward(ctx, gy):
        x, weight = ctx.saved_tensors
        (st, sh, sw), (pt, ph, pw), has_bias = ctx.conf
        gy = gy.contiguous(memory_format=CL3)
        gx = gw = gb = None
        if _wanted(ctx, 0):
            b, c, t_in, h, w = x.shape
            o, _, kt, kh, kw = weight.shape
            t_out = gy.shape[2]
            gy2 = gy.transpose(1, 2).reshape(b * t_out, o, *gy.shape[3:])  # NHWC view
            w2 = weight.transpose(1, 2).reshape(o, kt * c, kh, kw)
            # oneDNN's kernel is fastest with 16 channels: 15 (3 colours x 5 taps) padded with a
            # zero channel runs 1.3x faster (12 -> 16 likewise); the extra output is dropped.
            cp = max(kt * c, MIN_GRAD_CHANNELS)
            if cp > kt * c:
                w2 = F.pad(w2, (0, 0, 0, 0, 0, cp - kt * c))
            w2 = w2.contiguous(memory_format=torch.channels_last)
            shape_only = torch.empty((b * t_out, cp, h, w), dtype=x.dtype, device=x.device,
                                     memory_format=torch.channels_last)  # never written or read
            gxu = torch.ops.aten.convolution_backward(
                gy2, shape_only, w2, None, (sh, sw), (ph, pw), (1, 1), False, (0, 0), 1,
                (True, False, False))[0]
            # Overlap-add of the kt taps in time: output frame st*t + dt (padded) gets the
            # channels [dt*C, (dt+1)*C) of frame t. Slice-adds in the NHWC layout the kernel
            # wrote, then one transposing copy (2.7x faster than aten's unfold_backward here).
            taps = gxu.permute(0, 2, 3, 1).reshape(b, t_out, h, w, cp)
            acc = taps.new_zeros(b, t_in + 2 * pt, h, w, c)
            span = st * (t_out - 1) + 1
            for dt in range(kt):
                acc[:, dt: dt + span: st] += taps[..., dt * c: (dt + 1) * c]
            gx = acc[:, pt: pt + t_in].permute(0, 4, 1, 2, 3).contiguous()
        if _wanted(ctx, 1):
            gw = torch.ops.aten.convolution_backward(
                gy, x, weight, None, (st, sh, sw), (pt, ph, pw), (1, 1, 1), False, (0, 0, 0), 1,
                (False, True, False))[1]
        if has_bias and _wanted(ctx, 2):
            gb = gy.sum((0, 2, 3, 4))
        return gx, gw, gb, None, None


# ----------------------------------------------------------------------------------------------
# BatchNorm -> ReLU -> transposed convolution, without keeping the ReLU's output
# ----------------------------------------------------------------------------------------------
def _bn_stats(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Per-channel (dim 1) mean and 1 / sqrt(biased variance + eps) of a contiguous batch x."""
    if x.device.type in ("cpu", "cuda"):  # BatchNorm's own statistics kernel
        mean, var = torch.ops.aten.batch_norm_update_stats(x, None, None, 0.0)
    else:
        var, mean = torch.var_mean(x, dim=[0, *range(2, x.dim())], correction=0)
    return mean, (var + eps).rsqrt()


def _bn_relu(x: Tensor, gamma: Tensor, beta: Tensor, mean: Tensor, invstd: Tensor) -> Tensor:
    """relu(gamma * (x - mean) * invstd + beta) per channel (dim 1), as a fresh tensor (the same
    elementwise function as PyTorch's CPU BatchNorm kernel)."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    scale = gamma * invstd
    shift = beta - mean * scale
    return torch.addcmul(shift.view(shape), x, scale.view(shape)).clamp_min_(0)


class _BNReLUConvT(torch.autograd.Function):
    """conv_transpose(relu(batch_norm(x))), BatchNorm with the batch's statistics.

    Autograd would keep both BatchNorm's input x and the ReLU's output r (the convolution's
    input, for its weight gradient and the ReLU's mask): two full-size tensors per layer. This
    keeps x only and recomputes r from x and the saved statistics in the backward pass (the same
    elementwise function on the same values): the paper generator's retained graph, which sits
    beside every Langevin step, shrinks by its two ReLU outputs (134 MB + 34 MB). The backward
    pass also makes the convolution's input gradient first (it does not read r), then r and the
    weight gradient one clip at a time, so r, its gradient and oneDNN's reordered copy of r are
    never all whole at once (paper: 402 -> 268 MB at the last layer's backward).

    Contiguous layouts throughout: PyTorch's channels-last CPU BatchNorm kernels accumulate in
    float32 with errors up to 1e-3 relative, and converting oneDNN's channels-last outputs back
    costs more than its faster channels-last transposed convolutions save.
    """

    @staticmethod
    def forward(ctx, x, gamma, beta, weight, bias, eps, conv):
        # conv = (stride, padding, dilation, transposed=True, output_padding, groups)
        x = x.contiguous()
        mean, invstd = _bn_stats(x, eps)
        out = torch.ops.aten.convolution(_bn_relu(x, gamma, beta, mean, invstd), weight, bias, *conv)
        ctx.save_for_backward(x, gamma, beta, weight, mean, invstd)
        ctx.conf = (eps, conv, bias is not None)
        return out

    @staticmethod
    def backward(ctx, gout):
        x, gamma, beta, weight, mean, invstd = ctx.saved_tensors
        eps, conv, has_bias = ctx.conf
        need = [_wanted(ctx, i) for i in range(5)]
        need_r, need_w, need_b = any(need[:3]), need[3], has_bias and need[4]
        gx = ggamma = gbeta = gw = gb = gr = None
        if need_r:  # the convolution's input gradient (x stands in for r: same shape and layout)
            gr = torch.ops.aten.convolution_backward(gout, x, weight, None, *conv,
                                                     (True, False, False))[0]
        if need_r or need_w or need_b:
            bias_sizes = [weight.shape[1] * conv[5]] if has_bias else None
            for i in range(x.shape[0]):
                r = _bn_relu(x[i: i + 1], gamma, beta, mean, invstd)
                if need_w or need_b:
                    _, gw_i, gb_i = torch.ops.aten.convolution_backward(
                        gout[i: i + 1], r, weight, bias_sizes, *conv, (False, need_w, need_b))
                    gw = gw_i if gw is None or gw_i is None else gw.add_(gw_i)
                    gb = gb_i if gb is None or gb_i is None else gb.add_(gb_i)
                if need_r:  # the ReLU's backward, in place
                    g = gr[i: i + 1]
                    torch.ops.aten.threshold_backward.grad_input(g, r, 0, grad_input=g)
                del r
        if need_r:
            gx, ggamma, gbeta = torch.ops.aten.native_batch_norm_backward(
                gr, x, gamma, None, None, mean, invstd, True, eps, need[:3])
        return gx, ggamma, gbeta, gw, gb, None, None


# ----------------------------------------------------------------------------------------------
# The layers
# ----------------------------------------------------------------------------------------------
def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4
        return torch.is_autocast_enabled() or torch.is_autocast_cpu_enabled()


def _plain_ok(x: Tensor, module: nn.Module) -> bool:
    """Conditions under which only the plain formulation is used (it also serves autocast)."""
    return (not _enabled or x.device.type == "meta" or x.dim() != 5 or module.groups != 1
            or tuple(module.dilation) != (1, 1, 1) or not x.is_floating_point()
            or _autocast_on(x.device.type))


class FastConv3d(nn.Conv3d):
    """``nn.Conv3d`` with faster formulations of spatially fully-connected and few-channel layers.

    ``fused_relu`` (set by :func:`accelerate`, which then drops the ReLU module before this
    layer): the layer applies that ReLU to its input itself. The spatially fully-connected
    formulation does it in place and folds the ReLU's backward into its own input gradient (no
    extra full-size buffer and pass per call); any other formulation applies ``F.relu`` first.
    """

    fused_relu = False

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        if _plain_ok(x, self) or self.padding_mode not in ("zeros", "replicate") \
                or isinstance(self.padding, str):
            return super().forward(F.relu(x) if self.fused_relu else x)
        kt, kh, kw = self.kernel_size
        pt, ph, pw = self.padding
        if ph == pw == 0 and tuple(x.shape[-2:]) == (kh, kw):
            if self.fused_relu:
                # In place, outside autograd: x is the output of a convolution or BatchNorm
                # (accelerate() checks), whose backward does not read it; _FCConv's backward
                # applies the ReLU's gradient mask.
                with torch.no_grad():
                    x.clamp_min_(0)
            return _FCConv.apply(_alias(x), _alias(self.weight), _alias(self.bias),
                                 self.stride[0], pt, self.padding_mode == "replicate",
                                 self.fused_relu, _ParamRef(self.weight))
        if self.fused_relu:
            x = F.relu(x)
        if kt > 1 and self.in_channels * kt <= SMALL_CIN_TAPS:
            if self.padding_mode != "zeros":
                x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
                pt = ph = pw = 0
            return _SmallCinConv.apply(_alias(x), _alias(self.weight), _alias(self.bias),
                                       tuple(self.stride), (pt, ph, pw))
        return super().forward(x)


class FastConvTranspose3d(nn.ConvTranspose3d):
    """``nn.ConvTranspose3d`` with a faster formulation of transposed convolutions of a 1 x 1 plane.

    (Strided transposed convolutions stay oneDNN's: splitting them into per-phase stride-1
    convolutions, or stacking the phases as channels, measured slower forward + backward.)

    ``fused_bn`` (set by :func:`accelerate`, which turns the BatchNorm before this layer and the
    ReLU between them into placeholders): the layer applies ``relu(fused_bn(x))`` to its input
    itself, by :class:`_BNReLUConvT`, which keeps BatchNorm's input instead of the ReLU's output
    for the backward pass; any other formulation applies the two modules' plain functions first.
    """

    fused_bn: nn.BatchNorm3d | None = None

    def _plain_input(self, x: Tensor) -> Tensor:
        bn = self.fused_bn
        return x if bn is None else F.relu(nn.BatchNorm3d.forward(bn, x))

    def forward(self, x: Tensor, output_size=None) -> Tensor:  # noqa: D102
        if _plain_ok(x, self) or output_size is not None or self.padding_mode != "zeros":
            return super().forward(self._plain_input(x), output_size)
        k, s, p, op = self.kernel_size, self.stride, self.padding, self.output_padding
        if tuple(x.shape[-2:]) == (1, 1) and p[1:] == (0, 0) and op[1:] == (0, 0):
            t_out = (x.shape[2] - 1) * s[0] - 2 * p[0] + k[0] + op[0]
            return _FCConvT.apply(_alias(self._plain_input(x)), _alias(self.weight),
                                  _alias(self.bias), s[0], p[0], t_out, _ParamRef(self.weight))
        bn = self.fused_bn
        if bn is not None:
            conv = (list(s), list(p), list(self.dilation), True, list(op), self.groups)
            return _BNReLUConvT.apply(_alias(x), _alias(bn.weight), _alias(bn.bias),
                                      _alias(self.weight), _alias(self.bias), bn.eps, conv)
        return super().forward(x)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", applies the BatchNorm and ReLU before it"
                                       if self.fused_bn is not None else "")


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
    if not (_enabled if enable is None else enable):
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
                        # that keeps BatchNorm's input only (_BNReLUConvT). The BatchNorm module
                        # keeps its parameters (and state_dict keys) as a placeholder.
                        fused = _swap(prev, FusedBatchNorm3d)
                        parent[i] = fused
                        parent[i + 1] = FusedReLU()
                        nxt.__dict__["fused_bn"] = fused  # a reference, not a submodule
                    else:
                        layer.inplace = True
    return module


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


# ----------------------------------------------------------------------------------------------
# Optimiser
# ----------------------------------------------------------------------------------------------
def _match_layouts(optimizer: torch.optim.Optimizer, *_args, **_kwargs) -> None:
    """Give every gradient and Adam state the memory layout of its parameter.

    The fused Adam kernel walks parameter, gradient and states as flat memory, so they must share
    strides; a gradient set from outside (e.g. an all-reduced flat buffer) or a state loaded from
    a checkpoint written with other layouts would otherwise be combined element-for-wrong-element.
    """
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is not None and p.grad.stride() != p.stride():
                p.grad = torch.empty_like(p).copy_(p.grad)
            _match_state_layouts(p, optimizer.state.get(p, {}))


def _match_state_layouts(p: Tensor, state: dict) -> None:
    """Give ``p``'s optimiser states of its shape the memory layout of ``p`` (copies if not)."""
    for key, value in state.items():
        if (isinstance(value, Tensor) and value.shape == p.shape and value.dim() > 0
                and value.stride() != p.stride()):
            state[key] = torch.empty_like(p).copy_(value)


def _flat(t: Tensor) -> Tensor | None:
    """A 1-D view of all of ``t``'s elements in memory order; None when its memory has gaps or
    overlaps (only dense tensors, whatever their dimension order, have such a view)."""
    expect = 1
    for stride, size in sorted((s, n) for s, n in zip(t.stride(), t.shape) if n != 1):
        if stride != expect:
            return None
        expect *= size
    return t.as_strided((t.numel(),), (1,), t.storage_offset())


@contextlib.contextmanager
def _flat_views(optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """Within the block, dense non-contiguous parameters (the channels-last weights of
    :func:`accelerate`), their gradients and Adam states are 1-D views of the same memory.

    Adam is elementwise, and parameter, gradient and states share strides (:func:`_match_layouts`),
    so updating the flat views is the same update; but the fused kernel makes a contiguous copy
    of a non-contiguous gradient first (the paper descriptor's step, 295 MB weight: 0.25 -> 0.07 s).
    Shapes, strides and the tensors' identities are restored on the way out, whatever happens.
    """
    swapped = []
    try:
        for group in optimizer.param_groups:
            for p in group["params"]:
                flat = None if p.grad is None or p.is_contiguous() else _flat(p.data)
                if flat is None:
                    continue
                data, grad = p.data, p.grad
                state = optimizer.state.get(p, {})
                shaped = {k: v for k, v in state.items() if isinstance(v, Tensor) and v.shape == p.shape}
                swapped.append((p, data, grad))
                p.data = flat
                p.grad = _flat(grad)
                state.update({k: _flat(v) for k, v in shaped.items()})
        yield
    finally:
        for p, data, grad in swapped:
            p.data = data
            p.grad = grad
            state = optimizer.state.get(p, {})
            for k, v in state.items():  # states made or flattened during the step: p's geometry
                if isinstance(v, Tensor) and v.dim() == 1 and v.numel() == p.numel() and p.dim() > 1:
                    state[k] = v.as_strided(p.shape, p.stride(), v.storage_offset())


def _fused_step(optimizer: torch.optim.Optimizer, fused: bool):
    """Wrap ``optimizer.step``: re-apply the construction-time choice of kernel (``load_state_dict``
    copies the saved groups' ``fused`` flag, which a checkpoint from a run with the other setting
    would change), match layouts (:func:`_match_layouts`), and step fused on flat views
    (:func:`_flat_views`)."""
    step = optimizer.step

    @functools.wraps(step)
    def fused_step(*args, **kwargs):
        for group in optimizer.param_groups:
            group["fused"] = fused or None
            if fused:
                group["foreach"] = None
        _match_layouts(optimizer)
        if not fused:
            return step(*args, **kwargs)
        with _flat_views(optimizer):
            return step(*args, **kwargs)

    return fused_step


class _ParamRef:
    """A parameter handed to an autograd Function as a plain object (not as an input)."""

    __slots__ = ("param",)

    def __init__(self, param: Tensor):
        self.param = param


# Optimisers whose parameters' weight gradients are applied during the backward pass (see
# step_in_backward), by id of the parameter; the slice of gradient computed at a time.
_stepping: dict[int, torch.optim.Optimizer] = {}
STEP_SLICE_BYTES = 8 << 20


@contextlib.contextmanager
def step_in_backward(optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """Within the block, a backward pass that makes the weight gradient of a spatially
    fully-connected layer (the paper generator's 671 MB and descriptor's 295 MB weights) applies
    ``optimizer``'s Adam step to it slice by slice as the gradient is produced, instead of
    returning it: the full gradient is never held and that parameter's ``.grad`` stays None, so
    the ``optimizer.step()`` after the backward pass skips it.

    The same update as ``backward(); step()``: Adam is elementwise, and each slice is stepped by
    the fused kernel with the parameter's step count advanced once. Only for a fused :func:`adam`
    with plain Adam settings, and for a parameter whose ``.grad`` is None when its gradient is made
    (no accumulation); otherwise the gradient is returned as usual. Not for data-parallel training
    (gradients there must be averaged before any update).
    """
    ids = []
    if getattr(optimizer, "_dyntex_fused", False):
        for group in optimizer.param_groups:
            if not (group.get("amsgrad") or group.get("maximize") or group.get("differentiable")
                    or group.get("capturable") or group.get("decoupled_weight_decay")
                    or isinstance(group["lr"], Tensor)):
                ids += [id(p) for p in group["params"] if id(p) not in _stepping]
    _stepping.update(dict.fromkeys(ids, optimizer))
    try:
        yield
    finally:
        for i in ids:
            _stepping.pop(i, None)


def _step_in_backward(ref: _ParamRef | None, make_produce, row: int, transposed: bool) -> bool:
    """Step ``ref.param`` with the gradient that ``produce(r0, r1, out)`` writes, as rows
    [r0, r1) of an (N, row) matrix in the memory order of a weight laid out input-channel
    innermost (as :func:`accelerate` lays out spatial kernels), when :func:`step_in_backward` is
    active for it; ``make_produce()`` gives ``produce`` and is only called then. Returns whether
    it did (then no gradient is to be returned)."""
    p = None if ref is None else ref.param
    opt = None if p is None else _stepping.get(id(p))
    if opt is None or p.grad is not None:
        return False
    inner = (p.stride(0) == 1 if transposed  # (C, O, kt, h, w) with C innermost
             else p.is_contiguous(memory_format=CL3))  # (O, C, kt, H, W) channels-last
    flat_p = _flat(p.detach()) if inner else None
    if flat_p is None:
        return False
    group = next(g for g in opt.param_groups if any(q is p for q in g["params"]))
    state = opt.state[p]
    if not state:  # as torch.optim.Adam initialises a fused parameter's state
        state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    _match_state_layouts(p, state)  # e.g. loaded from a checkpoint in another layout
    produce = make_produce()
    flat_m, flat_v = _flat(state["exp_avg"]), _flat(state["exp_avg_sq"])
    c = row
    n = p.numel() // c
    # slices of about STEP_SLICE_BYTES, but at most 8 of them (each reads produce's inputs whole)
    rows = max(1, STEP_SLICE_BYTES // (c * p.element_size()), -(-n // 8))
    buf = p.new_empty(min(rows, n), c)
    state["step"] += 1
    beta1, beta2 = group["betas"]
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        g = buf[: r1 - r0]
        produce(r0, r1, g)
        sl = slice(r0 * c, r1 * c)
        torch._fused_adam_([flat_p[sl]], [g.view(-1)], [flat_m[sl]], [flat_v[sl]], [],
                           [state["step"]], amsgrad=False, lr=group["lr"], beta1=beta1,
                           beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
                           maximize=False, grad_scale=None, found_inf=None)
    return True


def adam(params, **kwargs) -> torch.optim.Adam:
    """``torch.optim.Adam(params, **kwargs)``, with the fused kernel when the fast path is on.

    The fused update is the same Adam (one pass over each tensor instead of about ten, and no
    full-size temporaries: the single-tensor path allocates two of the paper generator's 671 MB
    weight). Falls back to the default implementation where fused Adam is unavailable.
    """
    params = list(params)
    devices = {p.device.type for p in params}
    fused = (_enabled and "fused" not in kwargs and devices <= {"cpu", "cuda"}
             and all(p.dtype in (torch.float32, torch.float64) for p in params))
    opt = None
    if fused:
        try:
            opt = torch.optim.Adam(params, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError):
            fused = False
    if opt is None:
        opt = torch.optim.Adam(params, **kwargs)
    opt.step = _fused_step(opt, fused)
    opt._dyntex_fused = fused  # what step_in_backward() requires
    return opt
