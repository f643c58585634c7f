"""Layer shapes of the paper networks (exactly the authors' Exp. 7) and of the fast networks."""
import pytest
import torch

from dyntex import fastops
from dyntex.config import make_config
from dyntex.errors import ConfigError
from dyntex.nets import build_nets


def _trace(body, x):
    shapes = []
    for layer in body:
        x = layer(x)
        if isinstance(layer, (torch.nn.Conv3d, torch.nn.ConvTranspose3d)):
            shapes.append((layer.kernel_size, tuple(x.shape[1:])))
    return shapes, x


def test_paper_networks_at_paper_size():
    with torch.device("meta"):  # shapes only: the paper generator has 169 M parameters
        des, gen = build_nets("paper", 64, 128, 5)
        z = torch.empty(2, *gen.latent_shape())
        assert gen.latent_shape() == (5, 10, 1, 1)  # 50 latent numbers
        g_shapes, y = _trace(gen.body, z)
        d_shapes, _ = _trace(des.body, y)
    assert g_shapes == [
        ((5, 1, 1), (256, 14, 1, 1)),
        ((5, 32, 32), (128, 32, 32, 32)),
        ((5, 5, 5), (64, 64, 64, 64)),
        ((2, 5, 5), (3, 65, 128, 128)),  # 'SAME' crop to 64 frames follows
    ]
    assert tuple(y.shape) == (2, 3, 64, 128, 128)
    assert d_shapes == [
        ((5, 5, 5), (120, 32, 64, 64)),
        ((5, 64, 64), (30, 16, 1, 1)),
        ((5, 1, 1), (10, 8, 1, 1)),
    ]
    strides = [l.stride for l in des.body if isinstance(l, torch.nn.Conv3d)]
    assert strides == [(2, 2, 2), (2, 1, 1), (2, 1, 1)]
    assert sum(isinstance(l, torch.nn.BatchNorm3d) for l in gen.body) == 3
    # the second ReLU is applied by the fully-connected layer after it (fastops.FusedReLU)
    assert sum(isinstance(l, (torch.nn.ReLU, fastops.FusedReLU)) for l in des.body) == 2


def test_paper_networks_scaled_down_run_and_are_initialised_as_the_paper():
    torch.manual_seed(0)
    des, gen = build_nets("paper", 32, 64, 5)
    assert gen.latent_shape() == (5, 2, 1, 1)
    g_shapes, y = _trace(gen.body, torch.randn(2, *gen.latent_shape()))
    assert [s for _, s in g_shapes] == [(256, 6, 1, 1), (128, 16, 16, 16), (64, 32, 32, 32), (3, 33, 64, 64)]
    assert tuple(y.shape) == (2, 3, 32, 64, 64) and y.abs().max() <= 1
    d_shapes, _ = _trace(des.body, y)
    assert [k for k, _ in d_shapes][1] == (5, 32, 32)
    assert [s for _, s in d_shapes] == [(120, 16, 32, 32), (30, 8, 1, 1), (10, 4, 1, 1)]
    w = des.body[0].weight
    assert w.std().item() == pytest.approx(0.001, rel=0.05) and des.body[0].bias.abs().max() == 0
    assert gen.body[0].weight.std().item() == pytest.approx(0.005, rel=0.05)
    assert des(y).shape == (2,)


@pytest.mark.parametrize("arch,frames,size", [("paper", 28, 16), ("fast", 8, 16)])
def test_a_clips_energy_does_not_depend_on_the_rest_of_its_batch(arch, frames, size):
    """coop.accumulate_gradients puts observed and revised clips through the descriptor in one
    batch: that is exact only while no descriptor layer couples the clips of a batch."""
    torch.manual_seed(0)
    des, _ = build_nets(arch, frames, size, 4)
    with torch.no_grad():
        for p in des.parameters():
            p.normal_(0.0, 0.05)
    a, b = torch.randn(2, 3, frames, size, size), torch.randn(3, 3, frames, size, size)
    together = des(torch.cat([a, b]))
    apart = torch.cat([des(a), des(b)])
    assert together.shape == (5,) and apart.abs().min() > 1e-3
    assert torch.allclose(together, apart, rtol=1e-5, atol=1e-6)


def test_fast_generator_renders_margin_and_longer_clips():
    _, gen = build_nets("fast", 32, 64, 16)
    assert gen.latent_shape() == (16, 18, 1, 1)  # 288 latent numbers
    z = torch.randn(2, *gen.latent_shape())
    assert gen.body(z).shape[2] == 40 and gen(z).shape == (2, 3, 32, 64, 64)
    # temporally convolutional: a longer latent renders a longer clip
    z = torch.randn(2, *gen.latent_shape(70))
    assert gen(z, 70).shape == (2, 3, 70, 64, 64)


@pytest.mark.parametrize("arch,frames,size", [("paper", 28, 16), ("fast", 8, 16)])
def test_generator_batchnorm_uses_the_batch_statistics_in_train_and_eval_mode(arch, frames, size):
    """Each BatchNorm normalises with the statistics of the batch it is given, in eval mode too,
    and keeps none (no running averages in checkpoints): the generator that synthesizes is the one
    trained. Checked on each BatchNorm module's input and output."""
    torch.manual_seed(0)
    with fastops.enabled_scope(False):  # the plain modules, so their inputs can be watched
        _, gen = build_nets(arch, frames, size, 4)
    norms = [m for m in gen.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert norms and not any("running" in k for k in gen.state_dict())
    with torch.no_grad():
        for m in norms:
            m.weight.uniform_(0.5, 2.0)
            m.bias.uniform_(-1.0, 1.0)
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append((m, i[0], o))) for m in norms]
    z = torch.randn(2, *gen.latent_shape())
    for mode in (gen.train, gen.eval):
        mode()
        seen.clear()
        with torch.no_grad():
            gen(z)
        assert len(seen) == len(norms)
        for m, x, out in seen:
            dims = [0, *range(2, x.dim())]
            shape = (1, -1) + (1,) * (x.dim() - 2)
            var, mean = torch.var_mean(x, dims, correction=0, keepdim=True)
            expected = (x - mean) / (var + m.eps).sqrt() * m.weight.view(shape) + m.bias.view(shape)
            assert torch.allclose(out, expected, rtol=1e-4, atol=1e-4)
    for h in hooks:
        h.remove()


@pytest.mark.parametrize("arch,frames,size", [("paper", 30, 64), ("paper", 64, 66), ("paper", 24, 64),
                                              ("fast", 30, 64), ("fast", 32, 62), ("fast", 4, 16)])
def test_unbuildable_shapes_are_config_errors(arch, frames, size):
    with pytest.raises(ConfigError):
        make_config("fast", arch=arch, frames=frames, size=size)


@pytest.mark.parametrize("arch,frames,size", [("fast", 8, 8), ("fast", 12, 20), ("paper", 28, 8)])
def test_smallest_allowed_shapes_build_and_run(arch, frames, size):
    """Every shape check_shape accepts gives a clip of that shape and a finite energy per clip."""
    des, gen = build_nets(arch, frames, size, 4)
    y = gen(torch.randn(2, *gen.latent_shape()))
    assert y.shape == (2, 3, frames, size, size)
    assert torch.isfinite(des(y)).all() and des(y).shape == (2,)
