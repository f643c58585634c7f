"""The fast layers (dyntex.fastops) compute the same function as PyTorch's plain formulation.

The reference is the same module with the fast path switched off (``fastops.enabled_scope(False)``:
nn.Conv3d / nn.ConvTranspose3d's own forward and autograd). Everything is compared on fresh random
inputs in float32 with the relative error ||fast - plain|| / ||plain|| < 1e-4: layer outputs,
input gradients (what Langevin uses), weight and bias gradients, whole-network energies,
generator outputs, and one full training iteration.
"""
from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from dyntex import fastops
from dyntex.config import make_config
from dyntex.coop import CoopNets, Optimizers, train_step
from dyntex.nets import build_nets

TOL = 1e-4


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def _grads(fn, inputs, grad_out):
    out = fn()
    return [out.detach()] + list(torch.autograd.grad(out, inputs, grad_out, allow_unused=True))


def _compare_layer(layer: nn.Module, x_shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    net = fastops.accelerate(nn.Sequential(layer))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    x = torch.randn(x_shape, generator=g).requires_grad_()
    inputs = [x, *net.parameters()]
    with fastops.enabled_scope(False):
        ref_out = net(x)
    gy = torch.randn(ref_out.shape, generator=g)
    fast = _grads(lambda: net(x), inputs, gy)
    with fastops.enabled_scope(False):
        plain = _grads(lambda: net(x), inputs, gy)
    names = ["output", "input grad", "weight grad", "bias grad"]
    for name, a, b in zip(names, fast, plain):
        assert a.shape == b.shape, name
        assert rel(a, b) < TOL, f"{name}: relative error {rel(a, b):.2e}"
    return net


# Spatially fully-connected convolutions (odd frame counts, strides 1-3, zero and replicate padding)
@pytest.mark.parametrize("c,o,t,h,w,kt,st,pt,mode", [
    (6, 5, 9, 5, 7, 5, 2, 2, "zeros"),
    (4, 3, 8, 4, 4, 4, 2, 1, "replicate"),
    (5, 4, 7, 3, 3, 3, 1, 0, "zeros"),
    (3, 2, 11, 4, 6, 4, 3, 3, "replicate"),
    (3, 2, 5, 2, 2, 5, 2, 2, "zeros"),
])
def test_fully_connected_conv(c, o, t, h, w, kt, st, pt, mode):
    layer = nn.Conv3d(c, o, (kt, h, w), stride=(st, 1, 1), padding=(pt, 0, 0), padding_mode=mode)
    net = _compare_layer(layer, (3, c, t, h, w))
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last_3d)


# Transposed convolutions of a 1 x 1 plane (odd lengths, output padding, temporal padding)
@pytest.mark.parametrize("c,o,t,h,w,kt,st,pt,op", [
    (6, 5, 5, 4, 3, 5, 2, 0, 1),
    (5, 4, 4, 3, 3, 4, 2, 1, 0),
    (4, 5, 6, 2, 2, 3, 1, 1, 0),
    (3, 2, 3, 2, 5, 2, 3, 0, 2),
])
def test_fully_connected_conv_transpose(c, o, t, h, w, kt, st, pt, op):
    layer = nn.ConvTranspose3d(c, o, (kt, h, w), stride=(st, 1, 1), padding=(pt, 0, 0),
                               output_padding=(op, 0, 0))
    _compare_layer(layer, (2, c, t, 1, 1))


# Strided convolutions with few input channels (the descriptors' first layer)
@pytest.mark.parametrize("c,o,shape,k,s,p,mode", [
    (3, 7, (9, 10, 11), 5, 2, 2, "zeros"),
    (3, 6, (8, 8, 8), 4, 2, 1, "replicate"),
    (2, 4, (7, 6, 5), (3, 2, 3), (1, 2, 1), (1, 0, 1), "zeros"),
])
def test_few_channel_conv(c, o, shape, k, s, p, mode):
    layer = nn.Conv3d(c, o, k, stride=s, padding=p, padding_mode=mode)
    _compare_layer(layer, (2, c, *shape))


# A ReLU before a spatially fully-connected convolution is applied by that layer (FusedReLU), its
# backward folded into the layer's input gradient: compared with the never-accelerated block.
@pytest.mark.parametrize("c,o,t,hw,kt,st,pt,mode", [
    (3, 6, 9, 10, 5, 2, 2, "zeros"),
    (3, 5, 8, 8, 4, 2, 1, "replicate"),
])
def test_relu_fused_into_fully_connected_conv(c, o, t, hw, kt, st, pt, mode):
    torch.manual_seed(0)
    plain = nn.Sequential(
        nn.Conv3d(c, o, kt, stride=st, padding=pt, padding_mode=mode), nn.ReLU(),
        nn.Conv3d(o, 4, (kt, hw // 2, hw // 2), stride=(st, 1, 1), padding=(pt, 0, 0),
                  padding_mode=mode))
    fast = fastops.accelerate(copy.deepcopy(plain))
    assert isinstance(fast[1], fastops.FusedReLU) and fast[2].fused_relu
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, c, t, hw, hw, generator=g).requires_grad_()
    results = []
    for net in (fast, plain):
        out = net(x)
        gy = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
        grads = torch.autograd.grad(out, [x, *net.parameters()], gy)
        dx_only = torch.autograd.grad(net(x), x, gy)[0]  # input gradient alone (Langevin)
        results.append([out.detach(), *grads, dx_only])
    (out1, *g1), (out0, *g0) = results
    assert (plain[0](x) < 0).any()  # the ReLU has something to cut
    assert rel(out1, out0) < TOL
    for a, b in zip(g1, g0):
        assert a.shape == b.shape and rel(a, b) < TOL
    with fastops.enabled_scope(False):  # the fallback path applies the ReLU too
        assert rel(fast(x).detach(), out0) < TOL


# BatchNorm -> ReLU -> strided transposed convolution (the generators' blocks) is one Function that
# keeps BatchNorm's input only (FusedBatchNorm3d + FusedReLU placeholders): compared with the
# never-accelerated block, and what it keeps for the backward pass.
def _saved_bytes(net: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct non-parameter tensors autograd keeps for net(x)'s backward pass."""
    params = {p.untyped_storage().data_ptr() for p in net.parameters()}
    kept = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            kept[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = net(x)
    del out
    return sum(kept.values())


@pytest.mark.parametrize("c,t,hw,k,s,p,op", [
    (5, 5, 7, 3, 2, 1, 1),
    (4, 4, 6, (2, 5, 5), (1, 2, 2), (0, 2, 2), (0, 1, 1)),
])
def test_batchnorm_relu_fused_into_transposed_conv(c, t, hw, k, s, p, op):
    torch.manual_seed(0)
    plain = nn.Sequential(
        nn.ConvTranspose3d(3, c, 3, stride=2, padding=1, output_padding=1),
        nn.BatchNorm3d(c, track_running_stats=False), nn.ReLU(),
        nn.ConvTranspose3d(c, 2, k, stride=s, padding=p, output_padding=op))
    with torch.no_grad():
        plain[1].weight.normal_(1.0, 0.5)
        plain[1].bias.normal_(0.0, 0.5)
    fast = fastops.accelerate(copy.deepcopy(plain))
    assert isinstance(fast[1], fastops.FusedBatchNorm3d) and isinstance(fast[2], fastops.FusedReLU)
    assert fast[3].fused_bn is fast[1]
    assert list(fast.state_dict()) == list(plain.state_dict())  # checkpoints unchanged
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, t, hw, hw, generator=g).requires_grad_()
    # the bias before BatchNorm has a zero gradient in exact arithmetic: rounding noise only
    params = lambda net: [q for name, q in net.named_parameters() if name != "0.bias"]  # noqa: E731
    results = []
    for net in (fast, plain):
        out = net(x)
        gy = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
        grads = torch.autograd.grad(out, [x, *params(net)], gy)
        dx_only = torch.autograd.grad(net(x), x, gy)[0]     # input gradient alone (latent inference)
        dw_only = torch.autograd.grad(net(x), params(net), gy)  # parameter gradients alone
        results.append([out.detach(), *grads, dx_only, *dw_only])
    (out1, *g1), (out0, *g0) = results
    assert (plain[1](plain[0](x)) < 0).any()  # the ReLU has something to cut
    assert rel(out1, out0) < TOL
    for a, b in zip(g1, g0):
        assert a.shape == b.shape and rel(a, b) < TOL
    with fastops.enabled_scope(False):  # the fallback path applies BatchNorm and ReLU too
        assert rel(fast(x).detach(), out0) < TOL
    # kept for backward: x and BatchNorm's input, not the ReLU's output as well
    relu_out = plain[2](plain[1](plain[0](x))).detach()
    assert _saved_bytes(fast, x) <= _saved_bytes(plain, x) - relu_out.numel() * relu_out.element_size()


# ----------------------------------------------------------------------------------------------
# Whole networks and one training iteration
# ----------------------------------------------------------------------------------------------
NETS = [("paper", 28, 36), ("paper", 32, 64), ("fast", 12, 24), ("fast", 32, 64)]


def _zero_grad_params(gen_body: nn.Sequential) -> set[int]:
    """Biases right before a BatchNorm: their gradient is exactly zero in exact arithmetic (the
    normalisation removes any per-channel constant), so both formulations give rounding noise."""
    layers = list(gen_body)
    return {id(a.bias) for a, b in zip(layers, layers[1:])
            if isinstance(b, nn.BatchNorm3d) and getattr(a, "bias", None) is not None}


@pytest.mark.parametrize("arch,frames,size", NETS)
def test_networks_energy_input_and_parameter_gradients(arch, frames, size):
    torch.manual_seed(1)
    des, gen = build_nets(arch, frames, size, 5 if arch == "paper" else 16)
    with torch.no_grad():  # weights large enough that f is O(1): no cancellation to hide behind
        for p in des.parameters():
            p.normal_(0.0, 0.05)
    g = torch.Generator().manual_seed(2)
    y = torch.randn(2, 3, frames, size, size, generator=g).requires_grad_()
    z = torch.randn(2, *gen.latent_shape(), generator=g)
    skip = _zero_grad_params(gen.body)
    results = {}
    for flag in (True, False):
        with fastops.enabled_scope(flag):
            e = des(y)
            dy, *dtheta = torch.autograd.grad(e.sum(), [y, *des.parameters()])
            clips = gen(z)
            dalpha = torch.autograd.grad((clips * clips.detach().flip(0)).sum(), list(gen.parameters()))
        results[flag] = (e.detach(), dy, dtheta, clips.detach(), dalpha)
    (e1, dy1, dt1, c1, da1), (e0, dy0, dt0, c0, da0) = results[True], results[False]
    assert rel(e1, e0) < TOL
    assert rel(dy1, dy0) < TOL
    for a, b in zip(dt1, dt0):
        assert rel(a, b) < TOL
    assert rel(c1, c0) < TOL
    for p, a, b in zip(gen.parameters(), da1, da0):
        if id(p) not in skip:
            assert rel(a, b) < TOL


def _train_once(model, opts, observed, flag):
    with fastops.enabled_scope(flag):
        return train_step(model, opts, observed, torch.Generator().manual_seed(3))


@pytest.mark.parametrize("arch,frames,size,steps", [("paper", 28, 36, 2), ("fast", 12, 24, 4),
                                                    ("paper", 32, 64, 1)])
def test_one_training_iteration(arch, frames, size, steps):
    torch.manual_seed(4)
    cfg = make_config(arch, frames=frames, size=size, langevin_steps=steps)
    fast = CoopNets(cfg)
    plain = copy.deepcopy(fast)
    observed = torch.rand(1, 3, frames, size, size, generator=torch.Generator().manual_seed(5)) * 2 - 1
    skip = _zero_grad_params(fast.generator.body)
    # SGD: the update is linear in the gradients, so parameters compare as tightly as gradients.
    sgd = lambda m: Optimizers(torch.optim.SGD(m.descriptor.parameters(), lr=cfg.lr_des),  # noqa: E731
                               torch.optim.SGD(m.generator.parameters(), lr=cfg.lr_gen))
    before = [p.detach().clone() for p in fast.parameters()]
    s1 = _train_once(fast, sgd(fast), observed, True)
    s0 = _train_once(plain, sgd(plain), observed, False)
    for key in s0:
        assert abs(s1[key] - s0[key]) <= TOL * abs(s0[key]) + 1e-9, key
    # The updates: per network as a whole, and per weight tensor. (A bias gradient is a sum over
    # every position of a difference of two nearly equal means, the observed and revised clips':
    # its cancellation amplifies the last-bit differences of any two summation orders, so a bias
    # alone is not a well-conditioned quantity to compare; the layer tests compare bias gradients
    # of random upstream gradients directly.)
    for net1, net0 in ((fast.descriptor, plain.descriptor), (fast.generator, plain.generator)):
        start = dict(zip((id(p) for p in fast.parameters()), before))
        pairs = [(p1, p0, start[id(p1)]) for p1, p0 in zip(net1.parameters(), net0.parameters())
                 if id(p1) not in skip]
        d1 = torch.cat([(p1.detach() - s).flatten() for p1, _, s in pairs])
        d0 = torch.cat([(p0.detach() - s).flatten() for _, p0, s in pairs])
        assert rel(d1, d0) < TOL
        for p1, p0, s in pairs:
            if p1.dim() > 1:
                assert rel(p1.detach() - s, p0.detach() - s) < TOL
    if arch == "paper" and size == 64:
        return
    # The project's optimisers (fused Adam on the fast path): the same iteration statistics.
    # (Adam divides each gradient by its own running RMS, so an entry whose gradient is at the
    # rounding level - e.g. zero in exact arithmetic - moves by +-lr either way: parameters after
    # Adam are not a well-conditioned comparison; test_fused_adam_* checks the kernel itself.)
    a1 = _train_once(fast, Optimizers.for_model(fast), observed, True)
    a0 = _train_once(plain, Optimizers.for_model(plain), observed, False)
    for key in a0:
        assert abs(a1[key] - a0[key]) <= TOL * abs(a0[key]) + 1e-9, key


# ----------------------------------------------------------------------------------------------
# Parameters, checkpoints, the switch, the optimiser
# ----------------------------------------------------------------------------------------------
def test_accelerate_keeps_parameters_keys_and_values():
    torch.manual_seed(0)
    with fastops.enabled_scope(False):
        des0, gen0 = build_nets("paper", 28, 16, 5)
    before = {k: v.clone() for k, v in {**des0.state_dict(), **gen0.state_dict()}.items()}
    params = [id(p) for p in des0.parameters()]
    fastops.accelerate(des0)
    fastops.accelerate(gen0)
    assert [id(p) for p in des0.parameters()] == params  # the same Parameter objects
    after = {**des0.state_dict(), **gen0.state_dict()}
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert isinstance(des0.body[0], fastops.FastConv3d) and isinstance(des0.body[0], nn.Conv3d)
    # the fully-connected layers' weights are stored input-channel innermost, and their
    # gradients come out in that very layout (no copy when autograd accumulates them)
    fc_des, fc_gen = des0.body[2].weight, gen0.body[3].weight
    assert fc_des.stride()[1] == 1 and fc_gen.stride()[0] == 1
    z = torch.randn(2, *gen0.latent_shape())
    (gen0(z) ** 2).sum().backward()
    assert fc_gen.grad.stride() == fc_gen.stride()
    # checkpoints load across the two formulations
    with fastops.enabled_scope(False):
        des_plain, _ = build_nets("paper", 28, 16, 5)
    des_plain.load_state_dict(des0.state_dict())
    des0.load_state_dict(des_plain.state_dict())
    assert type(des_plain.body[0]) is nn.Conv3d


def test_disabled_accelerate_is_a_no_op_and_env_switch():
    seq = nn.Sequential(nn.Conv3d(3, 4, 3), nn.ReLU())
    assert fastops.accelerate(seq, enable=False) is seq and type(seq[0]) is nn.Conv3d
    code = "from dyntex import fastops, nets; print(fastops.enabled(), type(nets.build_nets('fast', 8, 16, 4)[0].body[0]).__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "DYNTEX_FASTOPS": "0"}).stdout.split()
    assert out == ["False", "Conv3d"]


def test_langevin_input_gradient_skips_weight_gradients(monkeypatch):
    calls = []
    real = torch.Tensor.addmm_
    layer = fastops.accelerate(nn.Sequential(nn.Conv3d(4, 3, (3, 5, 5), padding=(1, 0, 0))))[0]
    x = torch.randn(2, 4, 6, 5, 5, requires_grad=True)
    out = layer(x)

    def spy(self, a, b, **kw):
        calls.append(tuple(self.shape))
        return real(self, a, b, **kw)

    monkeypatch.setattr(torch.Tensor, "addmm_", spy)
    torch.autograd.grad(out.sum(), x)          # what a Langevin step asks for
    assert calls and (3, 5 * 5 * 4) not in calls  # (O, H*W*C): a weight-gradient product
    calls.clear()
    layer(x).sum().backward()                   # a training step asks for both
    assert (3, 5 * 5 * 4) in calls and layer.weight.grad is not None
