"""Convolutions whose backward pass PyTorch's CPU kernels make slow or memory-hungry.

* :class:`SmallCinConv`: a strided convolution with few input channels (the descriptors' first
  layer, 3 -> C). Forward and weight gradient are oneDNN's 3-D kernels; the input gradient (what
  every Langevin step adds to the clips) is a 2-D transposed convolution over frames with the
  temporal taps moved into channels, then an overlap-add in time.
* :class:`BNReLUConvT`: BatchNorm (batch statistics) -> ReLU -> transposed convolution as one
  Function that keeps BatchNorm's input only and recomputes the ReLU's output in its backward pass.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _compat
from ._common import CL3, Tensor, wanted

# The input gradient of SmallCinConv is computed with at least this many channels (zero-padded).
MIN_GRAD_CHANNELS = 16


class SmallCinConv(torch.autograd.Function):
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
        if wanted(ctx, 0):
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
        if wanted(ctx, 1):
            gw = torch.ops.aten.convolution_backward(
                gy, x, weight, None, (st, sh, sw), (pt, ph, pw), (1, 1, 1), False, (0, 0, 0), 1,
                (False, True, False))[1]
        if has_bias and wanted(ctx, 2):
            gb = gy.sum((0, 2, 3, 4))
        return gx, gw, gb, None, None


# ----------------------------------------------------------------------------------------------
# BatchNorm -> ReLU -> transposed convolution, without keeping the ReLU's output
# ----------------------------------------------------------------------------------------------
def _bn_stats(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Per-channel (dim 1) mean and 1 / sqrt(biased variance + eps) of a contiguous batch x."""
    mean, var = _compat.batch_norm_stats(x)
    return mean, (var + eps).rsqrt()


def _bn_relu(x: Tensor, gamma: Tensor, beta: Tensor, mean: Tensor, invstd: Tensor) -> Tensor:
    """relu(gamma * (x - mean) * invstd + beta) per channel (dim 1), as a fresh tensor (the same
    elementwise function as PyTorch's CPU BatchNorm kernel)."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    scale = gamma * invstd
    shift = beta - mean * scale
    return torch.addcmul(shift.view(shape), x, scale.view(shape)).clamp_min_(0)


class BNReLUConvT(torch.autograd.Function):
    """conv_transpose(relu(batch_norm(x))), BatchNorm with the batch's statistics.

    Autograd would keep both BatchNorm's input x and the ReLU's output r (the convolution's
    input): two full-size tensors per layer, held beside every Langevin step. This keeps x only
    and recomputes r from x and the saved statistics in the backward pass (the same elementwise
    function on the same values). The backward pass makes the convolution's input gradient first
    (it does not read r), then r and the weight gradient one clip at a time, so r, its gradient
    and oneDNN's reordered copy of r are never all whole at once. Contiguous layouts throughout:
    PyTorch's channels-last CPU BatchNorm is far less accurate (docs/performance.md).
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
        need = [wanted(ctx, i) for i in range(5)]
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


