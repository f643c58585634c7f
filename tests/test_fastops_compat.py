"""Each private torch API the fast layers use has a fallback: with the symbol removed (and
dyntex.fastops._compat re-resolving it), the numbers are the same and one warning says so."""
from __future__ import annotations

import copy
import importlib
import warnings

import pytest
import torch
from torch import nn

from dyntex import fastops
from dyntex.config import make_config
from dyntex.coop import CoopNets, Optimizers, train_step
from dyntex.fastops import _compat


class _Without:
    """``namespace`` without attribute ``name`` (for torch.ops.aten, whose ops are looked up)."""

    def __init__(self, namespace, name: str):
        self._namespace, self._name = namespace, name

    def __getattr__(self, attr: str):
        if attr == self._name:
            raise AttributeError(attr)
        return getattr(self._namespace, attr)


@pytest.fixture
def remove(monkeypatch):
    """``remove(owner, name)``: delete a private symbol, then let _compat resolve it again."""

    def _remove(owner, name: str) -> None:
        if owner is torch.ops.aten:
            monkeypatch.setattr(torch.ops, "aten", _Without(torch.ops.aten, name))
        else:
            monkeypatch.delattr(owner, name)
        importlib.reload(_compat)

    yield _remove
    monkeypatch.undo()
    importlib.reload(_compat)


def _warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, RuntimeWarning)
            and "dyntex.fastops" in str(w.message)]


def _fc_grads(layer, x, gy):
    """Input gradient alone (a Langevin step), then input and weight gradients."""
    dx = torch.autograd.grad(layer(x), x, gy)[0]
    both = torch.autograd.grad(layer(x), [x, layer.weight], gy)
    return [dx, *both]


def test_without_will_engine_execute_node(remove, monkeypatch):
    torch.manual_seed(0)
    layer = fastops.accelerate(nn.Sequential(nn.Conv3d(4, 3, (3, 5, 5), padding=(1, 0, 0))))[0]
    x = torch.randn(2, 4, 6, 5, 5, requires_grad=True)
    gy = torch.randn(2, 3, 6, 1, 1)
    expected = _fc_grads(layer, x, gy)
    remove(torch._C, "_will_engine_execute_node")
    calls = []
    real = torch.Tensor.addmm_
    monkeypatch.setattr(torch.Tensor, "addmm_", lambda self, a, b, **kw: (
        calls.append(tuple(self.shape)), real(self, a, b, **kw))[1])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        got = _fc_grads(layer, x, gy)
    assert (3, 5 * 5 * 4) in calls[: len(calls) // 2]   # the fallback made the weight gradient
    for a, b in zip(got, expected):                       # too, and the same numbers
        assert torch.equal(a, b)
    assert len(_warnings(record)) == 1


def test_without_batch_norm_update_stats(remove):
    torch.manual_seed(0)
    net = fastops.accelerate(nn.Sequential(
        nn.ConvTranspose3d(3, 5, 3, stride=2, padding=1, output_padding=1),
        nn.BatchNorm3d(5, track_running_stats=False), nn.ReLU(),
        nn.ConvTranspose3d(5, 2, 3, stride=2, padding=1, output_padding=1)))
    assert isinstance(net[1], fastops.FusedBatchNorm3d)
    x = torch.randn(2, 3, 4, 5, 5, requires_grad=True)

    def run():
        out = net(x)
        return [out.detach(), *torch.autograd.grad(out.square().sum(), [x, *net.parameters()])]

    expected = run()
    remove(torch.ops.aten, "batch_norm_update_stats")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        got, again = run(), run()
    for a, b in zip(got, expected):
        assert ((a - b).norm() / b.norm()).item() < 1e-6
    assert [torch.equal(a, b) for a, b in zip(got, again)] == [True] * len(got)
    assert len(_warnings(record)) == 1


def test_without_fused_adam(remove):
    torch.manual_seed(0)
    cfg = make_config("paper", frames=28, size=16)
    fused_model = CoopNets(cfg)
    plain_model = copy.deepcopy(fused_model)
    observed = torch.rand(1, 3, 28, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    fused_opts = Optimizers.for_model(fused_model)
    assert fused_opts.generator.fused_kernel
    expected = [train_step(fused_model, fused_opts, observed, torch.Generator().manual_seed(2))
                for _ in range(2)]
    remove(torch, "_fused_adam_")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        plain_opts = Optimizers.for_model(plain_model)
        got = [train_step(plain_model, plain_opts, observed, torch.Generator().manual_seed(2))
               for _ in range(2)]
    assert not plain_opts.generator.fused_kernel and not plain_opts.descriptor.fused_kernel
    assert len(_warnings(record)) == 1
    for a, b in zip(got, expected):
        assert all(abs(a[k] - b[k]) <= 1e-5 * abs(b[k]) + 1e-9 for k in b)
    # biases right before a BatchNorm have a zero gradient in exact arithmetic: Adam moves their
    # rounding noise by +-lr either way, so they are no comparison
    body = fused_model.generator.body
    noise_only = {f"generator.body.{i}.bias" for i in range(len(body) - 1)
                  if isinstance(body[i + 1], nn.BatchNorm3d)}
    for (k, a), b in zip(plain_model.state_dict().items(), fused_model.state_dict().values()):
        if k not in noise_only:
            assert ((a - b).norm() / b.norm().clamp_min(1e-30)).item() < 1e-5, k
