"""The optimiser side of dyntex.fastops: fused Adam on channels-last weights (the same update as
torch's Adam, no full-size copy), and steps taken inside the backward pass (the same update as
backward(); step(), the fully-connected weights' gradients never made whole)."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from dyntex import fastops
from dyntex.config import make_config
from dyntex.coop import CoopNets, Optimizers, train_step
from dyntex.fastops import in_backward


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def test_fused_adam_follows_the_parameter_layout():
    torch.manual_seed(0)
    p_fast = nn.Parameter(torch.randn(4, 3, 2, 5, 5).contiguous(memory_format=torch.channels_last_3d))
    p_ref = nn.Parameter(p_fast.detach().clone())
    opt_fast, opt_ref = fastops.adam([p_fast], lr=0.1), torch.optim.Adam([p_ref], lr=0.1)
    for i in range(3):
        g = torch.randn(4, 3, 2, 5, 5)
        p_fast.grad = g.clone() if i % 2 else g.contiguous(memory_format=torch.channels_last_3d)
        p_ref.grad = g.clone()
        opt_fast.step()
        opt_ref.step()
    assert rel(p_fast.detach(), p_ref.detach()) < 1e-6
    # shapes, strides and objects are as before the steps; the states follow the layout
    assert p_fast.shape == (4, 3, 2, 5, 5) and p_fast.is_contiguous(memory_format=torch.channels_last_3d)
    assert p_fast.grad.shape == p_fast.shape
    state = opt_fast.state[p_fast]
    assert all(state[k].shape == p_fast.shape and state[k].stride() == p_fast.stride()
               for k in ("exp_avg", "exp_avg_sq"))
    assert rel(state["exp_avg_sq"], opt_ref.state[p_ref]["exp_avg_sq"]) < 1e-6


def test_fused_adam_steps_channels_last_weights_without_copying_them():
    p = nn.Parameter(torch.randn(4, 3, 2, 5, 5).contiguous(memory_format=torch.channels_last_3d))
    opt = fastops.adam([p], lr=0.1)
    grad = torch.randn(4, 3, 2, 5, 5).contiguous(memory_format=torch.channels_last_3d)
    p.grad = grad
    opt.step()
    with torch.profiler.profile(record_shapes=True) as prof:
        opt.step()
    events = [(e.name, e.input_shapes[0] if e.input_shapes else []) for e in prof.events()]
    assert "aten::_fused_adam_" in [n for n, _ in events]
    full_size = [n for n, shape in events if shape and math.prod(shape) == p.numel()
                 and n in ("aten::copy_", "aten::clone", "aten::contiguous")]
    assert full_size == []  # the kernel's contiguous copy of the gradient is gone
    assert p.grad is grad  # the very tensor, restored
    assert opt.state_dict()["state"][0]["exp_avg"].shape == p.shape


# the slices' sizes: 8 per weight, (rows, row length) with rows ceil(N / 8)
@pytest.mark.parametrize("arch,frames,gen_slices,des_slices", [
    ("paper", 28, [(1280, 256)] * 8, [(19, 8 * 8 * 120)] * 7 + [(17, 8 * 8 * 120)]),
    ("fast", 12, [(384, 16)] * 8, [(16, 8 * 8 * 64)] * 8),   # fast: replicate padding
])
def test_fully_connected_weights_stepped_in_slices_during_backward_are_the_same_update(
        monkeypatch, arch, frames, gen_slices, des_slices):
    # train_step steps the spatially fully-connected weights (generator and descriptor) slice by
    # slice inside their backward passes (fastops.step_in_backward); with `sync` (here the
    # identity) the whole gradients are made and stepped after. Tiny slices: 8 per weight.
    monkeypatch.setattr(in_backward, "STEP_SLICE_BYTES", 4096)
    torch.manual_seed(0)
    cfg = make_config(arch, frames=frames, size=16)
    sliced = CoopNets(cfg)
    whole = copy.deepcopy(sliced)
    observed = torch.rand(1, 3, frames, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    i_gen, i_des = (3, 2) if arch == "paper" else (0, 2)
    w_gen, w_des = sliced.generator.body[i_gen].weight, sliced.descriptor.body[i_des].weight
    o_sliced, o_whole = Optimizers.for_model(sliced), Optimizers.for_model(whole)
    made = []
    real_mm = torch.mm
    monkeypatch.setattr(torch, "mm", lambda a, b, **kw: made.append(
        (a.shape[0], b.shape[1], "out" in kw)) or real_mm(a, b, **kw))
    for _ in range(2):
        made.clear()
        s1 = train_step(sliced, o_sliced, observed, torch.Generator().manual_seed(2))
        # never a whole gradient: the products written into the slice buffer are the slices
        assert [(r, n) for r, n, into in made if into] == gen_slices + des_slices
        assert w_gen.grad is None and w_des.grad is None
        s0 = train_step(whole, o_whole, observed, torch.Generator().manual_seed(2),
                        lambda _model, stats: stats)
        assert all(abs(s1[k] - s0[k]) <= 1e-5 * abs(s0[k]) + 1e-9 for k in s0)
    # The descriptor's sliced weight gradient is one product over all taps, the whole one a
    # product per tap (plus the border taps with replicate padding): the same sums in another
    # order, so the two agree to rounding.
    same = lambda a, b: rel(a, b) < 1e-5  # noqa: E731
    for (k, a), b in zip(sliced.state_dict().items(), whole.state_dict().values()):
        assert same(a, b), k
    for opt1, opt0, w1, w0 in ((o_sliced.generator, o_whole.generator, w_gen, whole.generator.body[i_gen].weight),
                               (o_sliced.descriptor, o_whole.descriptor, w_des, whole.descriptor.body[i_des].weight)):
        st1, st0 = opt1.state[w1], opt0.state[w0]
        assert float(st1["step"]) == float(st0["step"]) == 2
        for key in ("exp_avg", "exp_avg_sq"):
            assert st1[key].stride() == w1.stride() and same(st1[key], st0[key]), key
    # other optimisers (here SGD) get whole gradients, stepped by the post-accumulate-grad hooks:
    # the same update as backward(); step()
    z = sliced.draw_latents(2, generator=torch.Generator().manual_seed(3))
    ref = copy.deepcopy(sliced.generator)
    sgd_ref = torch.optim.SGD(ref.parameters(), lr=0.1)
    (ref(z) ** 2).sum().backward()
    sgd_ref.step()
    made.clear()
    sgd = torch.optim.SGD(sliced.generator.parameters(), lr=0.1)
    with fastops.step_in_backward(sgd, sliced.generator):
        (sliced.generator(z) ** 2).sum().backward()
    assert not [m for m in made if m[2]]                      # no slices: a whole gradient
    assert all(p.grad is None for p in sliced.generator.parameters())
    for a, b in zip(sliced.generator.parameters(), ref.parameters()):
        assert torch.equal(a, b)
    assert sliced.generator.body[i_gen].weight_stepper is None   # removed on exit
