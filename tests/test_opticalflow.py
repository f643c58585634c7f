"""The differentiable Lucas-Kanade flow of dyntex.opticalflow on clips of known motion."""
import math

import pytest
import torch

from dyntex.opticalflow import SCALES, flow_pyramid, flow_values, lucas_kanade


def drifting(velocity: tuple[float, float], frames: int = 6, side: int = 32, seed: int = 0
             ) -> torch.Tensor:
    """(1, 3, frames, side, side) grey clip: a smooth random pattern translated by ``velocity``
    (dx, dy) pixels per frame, as an exact (periodic) Fourier shift."""
    g = torch.Generator().manual_seed(seed)
    k = torch.fft.fftfreq(side)
    lowpass = torch.exp(-(k[:, None] ** 2 + k[None] ** 2) / (2 * 0.06 ** 2))
    spec = torch.fft.fft2(torch.randn(side, side, generator=g)) * lowpass
    t = torch.arange(frames, dtype=torch.float64)[:, None, None]
    phase = torch.exp(-2j * math.pi * (k[None, None, :] * velocity[0] * t
                                       + k[None, :, None] * velocity[1] * t))
    clip = torch.fft.ifft2(spec[None] * phase).real.float()
    clip = 0.4 * clip / clip.std()
    return clip[None, None].expand(1, 3, -1, -1, -1)


@pytest.mark.parametrize("velocity", [(0.5, 0.0), (0.0, -0.4), (0.3, 0.3)])
def test_lucas_kanade_recovers_a_uniform_translation(velocity):
    flow = lucas_kanade(drifting(velocity))
    assert flow.shape == (1, 2, 5, 32, 32)
    # median over the pixels: x right, y down, in pixels per frame; one scale of differences
    # underestimates by about a sixth (documented), the same for every direction
    med = flow[0].flatten(1).median(dim=1).values
    assert med[0].item() == pytest.approx(velocity[0], rel=0.2, abs=0.03)
    assert med[1].item() == pytest.approx(velocity[1], rel=0.2, abs=0.03)


def test_a_still_clip_has_no_flow_and_flicker_is_not_motion_one_way():
    still = drifting((0.0, 0.0))
    assert lucas_kanade(still).abs().max().item() < 1e-5
    # a clip that brightens uniformly has no preferred direction: its mean flow is ~0
    ramp = still + torch.linspace(0, 0.3, 6)[None, None, :, None, None]
    assert lucas_kanade(ramp).mean(dim=(2, 3, 4)).abs().max().item() < 0.05


def test_flow_values_project_on_directions_and_are_differentiable():
    y = drifting((0.5, 0.0)).clone().requires_grad_()
    vals = flow_values(y, directions=4)
    assert vals.shape == (1, 5, 5 * 16 * 16)   # every second pixel across and down
    med = vals[0].median(dim=1).values
    # projections on 0, 45, 90, 135 degrees of (0.5, 0), then the magnitude
    expected = [0.5, 0.5 / math.sqrt(2), 0.0, -0.5 / math.sqrt(2), 0.5]
    assert med.tolist() == pytest.approx(expected, rel=0.2, abs=0.03)
    vals[:, 0].mean().backward()
    assert y.grad is not None and y.grad.abs().sum().item() > 0


def test_flow_pyramid_reads_the_same_motion_in_full_resolution_pixels_at_every_scale():
    y = drifting((1.0, 0.0))
    views = flow_pyramid(y)
    assert len(views) == len(SCALES) == 3
    # every second pixel at full resolution, every pixel of the 2x and 4x block means
    assert [v.shape[-1] for v in views] == [5 * 16 * 16, 5 * 16 * 16, 5 * 8 * 8]
    for view in views:   # 1 px per frame at full resolution is 1/f px at 1/f, read times f
        med = view[0].median(dim=1).values     # one window's bias differs by scale: a third
        assert 0.67 < med[0].item() < 1.33                                # 0 degrees: x
        assert med[2].item() == pytest.approx(med[0].item() / math.sqrt(2), rel=0.1)  # 45
        assert abs(med[4].item()) < 0.05                                  # 90 degrees: y
        assert med[-1].item() == pytest.approx(med[0].item(), rel=0.05)   # magnitude
