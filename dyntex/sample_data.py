"""A small procedural dynamic texture that dyntex can ship: a shaded water surface (and, with
another palette, a lava-like one for examples).

:func:`render_water` sums travelling sinusoidal waves with a deep-water dispersion relation
(temporal frequency ~ sqrt(wave number)), shades the surface normals with a blue-green palette,
a sun glint and caustic-like highlights (the light focused by the surface curvature: the inverse
Jacobian of the refraction map), and returns uint8 frames. Every wave has a whole number of
periods across the frame and over the clip, so the texture tiles in space and loops seamlessly
in time (frame ``T`` would equal frame 0).

The rendered clip is shipped as ``data/water.mp4`` at the top of the repository (64 frames,
64x64, 25 fps). :data:`SAMPLE_CLIP` points there, which works from a checkout or an editable
install (``pip install -e .``, the supported install for the demo); :func:`sample_clip` falls
back to rendering the clip into a temporary folder when the file is missing.

Regenerate the shipped file with ``python -m dyntex.sample_data``.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from dyntex.video import write_video

SAMPLE_CLIP = Path(__file__).resolve().parents[1] / "data" / "water.mp4"
"""The shipped water clip (top-level ``data/`` of the repository)."""

SAMPLE_FRAMES, SAMPLE_SIZE, SAMPLE_FPS, SAMPLE_SEED = 64, 64, 25.0, 0
"""How the shipped clip is rendered."""

# (deep, shallow, caustic) colours; "lava" is a second texture for examples of class-conditional
# models (docs/research_questions.md), not shipped
PALETTES = {"water": (np.array([0.02, 0.16, 0.26]), np.array([0.06, 0.48, 0.52]),
                      np.array([0.55, 0.95, 0.90])),
            "lava": (np.array([0.25, 0.02, 0.01]), np.array([0.80, 0.22, 0.02]),
                     np.array([1.00, 0.85, 0.30]))}
_SUN = np.array([0.35, 0.25, 0.88]) / np.linalg.norm([0.35, 0.25, 0.88])


def render_water(frames: int = SAMPLE_FRAMES, size: int = SAMPLE_SIZE, seed: int = 0,
                 n_waves: int = 24, palette: str = "water") -> np.ndarray:
    """Render a looping, tileable water surface.

    Args:
        frames: clip length T; the motion loops with period T.
        size: frame side in pixels; the texture tiles with period ``size``.
        seed: seed of the wave directions, phases and amplitudes.
        n_waves: number of sinusoidal wave trains summed.
        palette: a key of :data:`PALETTES` (the colours of deep and shallow parts and caustics).

    Returns:
        uint8 ``(T, size, size, 3)`` RGB frames.
    """
    rng = np.random.default_rng(seed)
    wind = rng.uniform(0.0, 2.0 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size  # in tile units
    t = (np.arange(frames, dtype=np.float64) / frames)[:, None, None]  # in loop units
    h = np.zeros((frames, size, size))
    hx, hy = np.zeros_like(h), np.zeros_like(h)
    hxx, hyy, hxy = np.zeros_like(h), np.zeros_like(h), np.zeros_like(h)
    max_k = max(2.0, size / 6.0)
    for _ in range(n_waves):
        angle = wind + rng.normal(0.0, 0.6)
        k_len = rng.uniform(1.0, max_k)
        kx, ky = np.round(k_len * np.cos(angle)), np.round(k_len * np.sin(angle))
        if kx == 0 and ky == 0:
            kx = 1.0
        k_len = np.hypot(kx, ky)
        cycles = max(1.0, np.round(1.3 * np.sqrt(k_len)))  # deep water: omega ~ sqrt(k)
        amp = 1.6 * k_len ** -1.6 * rng.uniform(0.6, 1.0)
        phase = 2.0 * np.pi * (kx * xx + ky * yy - cycles * t) + rng.uniform(0.0, 2.0 * np.pi)
        c, s = np.cos(phase), np.sin(phase)
        w = 2.0 * np.pi
        h += amp * c
        hx -= amp * w * kx * s
        hy -= amp * w * ky * s
        hxx -= amp * w * w * kx * kx * c
        hyy -= amp * w * w * ky * ky * c
        hxy -= amp * w * w * kx * ky * c
    # slopes in per-pixel units of a unit-height field, scaled to a gentle surface
    slope = 1.0 / size
    nx, ny = -slope * hx, -slope * hy
    norm = np.sqrt(nx * nx + ny * ny + 1.0)
    normal = np.stack([nx, ny, np.ones_like(nx)], axis=-1) / norm[..., None]
    diffuse = np.clip(normal @ _SUN, 0.0, 1.0)[..., None]
    half = (_SUN + np.array([0.0, 0.0, 1.0])) / np.linalg.norm(_SUN + np.array([0.0, 0.0, 1.0]))
    glint = (np.clip(normal @ half, 0.0, 1.0) ** 180)[..., None]
    # caustics: light through the surface focuses where the refraction map's Jacobian shrinks
    depth = 3.0 / size**2
    det = (1.0 + depth * hxx) * (1.0 + depth * hyy) - (depth * hxy) ** 2
    caustic = np.clip(1.0 / np.maximum(np.abs(det), 0.2) - 1.0, 0.0, 3.0)[..., None] ** 1.5
    mix = ((h - h.min()) / (np.ptp(h) + 1e-12))[..., None]
    deep, shallow, light = PALETTES[palette]
    colour = (deep + (shallow - deep) * mix) * (0.55 + 0.6 * diffuse)
    colour = colour + 0.15 * caustic * light + 0.7 * glint
    return np.round(np.clip(colour, 0.0, 1.0) ** (1 / 1.15) * 255).astype(np.uint8)


def write_sample(path: str | Path = SAMPLE_CLIP, palette: str = "water",
                 seed: int = SAMPLE_SEED) -> Path:
    """Render the shipped clip (or another ``palette`` / ``seed``) and write it (through
    :func:`dyntex.video.write_video`) to ``path``."""
    frames = render_water(SAMPLE_FRAMES, SAMPLE_SIZE, seed, palette=palette)
    return write_video(path, frames, SAMPLE_FPS)


def sample_clip() -> Path:
    """Path of the sample clip: the shipped file, or a copy rendered into a temporary folder."""
    if SAMPLE_CLIP.is_file():
        return SAMPLE_CLIP
    fallback = Path(tempfile.gettempdir()) / "dyntex-sample" / SAMPLE_CLIP.name
    if not fallback.is_file():
        write_sample(fallback)
    return fallback


def main(argv: list[str] | None = None) -> None:
    """Regenerate the shipped sample clip (``python -m dyntex.sample_data [--out PATH]``)."""
    parser = argparse.ArgumentParser(description="Render the procedural water sample clip.")
    parser.add_argument("--out", type=Path, default=SAMPLE_CLIP, help=f"output .mp4/.gif (default {SAMPLE_CLIP})")
    parser.add_argument("--palette", choices=sorted(PALETTES), default="water")
    parser.add_argument("--seed", type=int, default=SAMPLE_SEED, help="seed of the wave field")
    args = parser.parse_args(argv)
    print(write_sample(args.out, args.palette, args.seed))


if __name__ == "__main__":
    main()
