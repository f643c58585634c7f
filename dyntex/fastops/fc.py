"""Spatially fully-connected layers as matrix products (the same function, the same parameters).

* :class:`FCConv`: a convolution whose kernel ``(k, H, W)`` covers the whole input plane (the
  descriptors' second layer, output 1 x 1) is ``k`` matrix products over frames, one per temporal
  tap; input and weight gradients likewise, no im2col and no padded copy.
* :class:`FCConvT`: a transposed convolution of a 1 x 1 plane (the generators' first spatial
  layer) is one matrix product for every tap of every frame, then an overlap-add in time.

Both read the weight input-channel innermost, the layout :func:`dyntex.fastops.accelerate` gives
it. Given a ``stepper`` (:class:`dyntex.fastops.in_backward.AdamSliceStepper`), the weight
gradient is not returned but handed to it slice by slice, so the whole gradient is never held.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import CL3, Tensor, wanted


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


class FCConv(torch.autograd.Function):
    """out[b, :, t] = bias + sum_dt W[:, :, dt] . X[b, :, st*t + dt - pt]   (frames out of range:
    zero, or the nearest frame with replicate padding)."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, pad, replicate, relu_input=False, stepper=None):
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
        ctx.stepper = stepper
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
        if wanted(ctx, 0):
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
        if wanted(ctx, 1) and not (ctx.stepper is not None and ctx.stepper.take(
                lambda: FCConv._weight_grad_rows(g, xr, kt, stride, pad, replicate))):
            xg, _ = _by_residue(xr, stride)
            gwr = wr.new_empty(o, kt, h, w, c)
            gflat = gwr.view(o, kt, -1)
            for dt, rho, gs, border in taps:
                gflat[:, dt].addmm_(gs.t(), xg[:, rho], beta=0.0)
                for t, frame in border:
                    gflat[:, dt].addmm_(g[:, t].t(), xr[:, frame])
            gw = gwr.permute(0, 4, 1, 2, 3)                         # (O, C, kt, H, W), CL strides
        if has_bias and wanted(ctx, 2):
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
    when the weight is stored input-channel innermost (as :func:`dyntex.fastops.accelerate` lays it out)."""
    return weight.permute(1, 2, 3, 4, 0).reshape(-1, weight.shape[0])


class FCConvT(torch.autograd.Function):
    """y[b, :, st*t + dt - pt] += W[:, :, dt]^T x[b, :, t]  (+ bias), frames cropped to t_out.

    One matrix product (B * T_in, C) @ (C, O * kt * hw) gives every tap of every input frame (the
    weight read once, as laid out by :func:`dyntex.fastops.accelerate`); the taps are then overlap-added in time.
    """

    @staticmethod
    def _taps(t_in: int, kt: int, stride: int, pad: int, t_out: int):
        for dt in range(kt):  # input frames t in [lo, hi) land on output frames f0, f0 + st, ...
            lo = max(0, -((dt - pad) // stride))
            hi = max(lo, min(t_in, (t_out - 1 + pad - dt) // stride + 1))
            yield dt, lo, hi, stride * lo + dt - pad

    @staticmethod
    def forward(ctx, x, weight, bias, stride, pad, t_out, stepper=None):
        b, c, t_in = x.shape[:3]
        o, kt, h, w = weight.shape[1:]
        xm = x.reshape(b, c, t_in).transpose(1, 2).reshape(b * t_in, c)
        wt = _channels_inner(weight)                                # (O * kt * h * w, C)
        u = torch.mm(xm, wt.t()).view(b, t_in, o, kt, h * w)
        y = (bias.view(1, o, 1, 1).expand(b, o, t_out, h * w).contiguous() if bias is not None
             else x.new_zeros(b, o, t_out, h * w))
        for dt, lo, hi, f0 in FCConvT._taps(t_in, kt, stride, pad, t_out):
            if hi > lo:
                y[:, :, f0: f0 + stride * (hi - lo - 1) + 1: stride] += u[:, lo:hi, :, dt].transpose(1, 2)
        ctx.save_for_backward(xm, wt)
        ctx.geom = (x.shape, weight.shape, stride, pad, t_out, bias is not None)
        ctx.stepper = stepper
        return y.view(b, o, t_out, h, w)

    @staticmethod
    def backward(ctx, gy):
        xm, wt = ctx.saved_tensors
        xshape, wshape, stride, pad, t_out, has_bias = ctx.geom
        b, c, t_in = xshape[:3]
        o, kt, h, w = wshape[1:]
        gy = gy.reshape(b, o, t_out, h * w)
        gx = gw = gb = None
        need_x, need_w = wanted(ctx, 0), wanted(ctx, 1)
        if need_x or need_w:
            taps = list(FCConvT._taps(t_in, kt, stride, pad, t_out))
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
            if need_w and not (ctx.stepper is not None and ctx.stepper.take(
                    lambda: lambda r0, r1, out: torch.mm(gu[:, r0:r1].t(), xm, out=out))):
                gw = torch.mm(gu.t(), xm).view(o, kt, h, w, c).permute(4, 0, 1, 2, 3)
        if has_bias and wanted(ctx, 2):
            gb = gy.sum((0, 2, 3))
        return gx, gw, gb, None, None, None, None


