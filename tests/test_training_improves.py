"""Training must make the samples better: on a synthetic texture whose statistics are known, a
short run lowers the spectrum and motion distances of its samples well below those at
initialisation (a test that fails if training does nothing, or does the wrong thing)."""
import numpy as np
import pytest
import torch

from dyntex.config import make_config
from dyntex.eval.metrics import motion_distance, spectrum_distance
from dyntex.trainer import Trainer


def _drifting_noise(frames: int, size: int) -> torch.Tensor:
    """Band-pass noise (periods of 5 to 25 px) drifting one pixel per frame diagonally:
    (3, frames, size, size) in [-1, 1]. A broad, known spectrum and a known, uniform motion."""
    g = torch.Generator().manual_seed(0)
    tile = torch.randn(64, 64, generator=g)
    f = torch.fft.fftfreq(64).abs()
    r = (f.view(-1, 1) ** 2 + f.view(1, -1) ** 2).sqrt()
    tile = torch.fft.ifft2(torch.fft.fft2(tile) * ((r > 0.04) & (r < 0.2))).real
    tile = tile / tile.std() * 0.35
    luma = torch.stack([torch.roll(tile, (k, k), (0, 1))[:size, :size] for k in range(frames)])
    return torch.stack([luma, 0.6 * luma, -0.4 * luma]) * 0.7


def _scores(model, observed: np.ndarray) -> tuple[float, float]:
    y = model.synthesize(2, generator=torch.Generator().manual_seed(0))
    clips = ((y.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 4, 1).numpy()
    return (float(np.mean([spectrum_distance(c, observed) for c in clips])),
            float(np.mean([motion_distance(c, observed) for c in clips])))


@pytest.mark.parametrize("preset,frames,overrides,spectrum_gain", [
    ("tiny", 8, {"iters": 300}, 0.75),
    # the default preset's networks, shrunk: multi-scale, layout, frame bias, motion branch
    ("standard", 16, {"iters": 150, "latent_channels": 4, "layout_channels": 2,
                      "motion_channels": 4, "langevin_steps": 3}, 0.9),
    # the quality preset, shrunk the same way: full-resolution stage, global noise flow, marginals
    ("quality", 16, {"iters": 150, "latent_channels": 4, "layout_channels": 2,
                     "motion_channels": 4, "langevin_steps": 3, "fine_channels": 4}, 0.95),
])
def test_training_improves_spectrum_and_motion_over_initialisation(preset, frames, overrides,
                                                                   spectrum_gain):
    torch.manual_seed(0)
    video = _drifting_noise(2 * frames, 16)
    windows = torch.stack([video[:, i:i + frames] for i in range(frames + 1)])
    observed = ((video[:, :frames].permute(1, 2, 3, 0) + 1) / 2).numpy()
    cfg = make_config(preset, frames=frames, size=16, window="random", **overrides)
    trainer = Trainer(cfg)
    trainer.fit(windows, iters=0)                  # initialised from the data, not trained
    spectrum_0, motion_0 = _scores(trainer.model, observed)
    trainer.fit(windows)
    spectrum, motion = _scores(trainer.model, observed)
    assert spectrum < spectrum_gain * spectrum_0, (spectrum_0, spectrum)
    assert motion < 0.5 * motion_0, (motion_0, motion)
