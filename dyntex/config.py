"""One source of defaults for training, sampling and synthesis.

A :class:`Config` is a flat dataclass of plain values (so it round-trips through JSON, lives in
checkpoints as a plain dict and maps one-to-one onto CLI flags). Presets are named sets of
overrides on top of the dataclass defaults. Every consumer — trainer, synthesis, benchmark, speed
— builds its settings through :func:`make_config`, so a value is defined in exactly one place.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

ARCHES = ("paper", "fast", "multiscale")
REF_MEANS = ("zero", "channel", "frame")
FRAME_BIASES = ("none", "mean")
LR_SCHEDULES = ("constant", "cosine")
FINE_UPSAMPLES = ("transposed", "bilinear")
NOISE_FLOW_FIELDS = ("local", "global")
WINDOWS = ("first", "random")
DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass
class Config:
    """All settings of a run. The dataclass defaults are the ``fast`` preset's; presets (and so
    the default preset, ``quality``) override some of them."""

    preset: str = "fast"        # the preset these settings started from (informative)
    # -- data -------------------------------------------------------------------------------
    frames: int = 32            # T: frames per training clip
    size: int = 64              # S: clips are S x S (aspect-preserving resize + centre crop)
    window: str = "random"      # "first": the first T frames; "random": a random T-window per draw
    # -- networks (dyntex.nets) -----------------------------------------------------------------
    arch: str = "fast"          # "paper": the authors' Exp. 7 networks; "fast": see nets.py
    latent_channels: int = 16   # channels of the latent X
    layout_channels: int = 0    # multiscale: channels of the learned layout map (0: stationary)
    frame_bias: str = "none"    # "mean": a learned per-pixel bias before the generator's tanh,
                                # starting at the observed mean frame
    motion_channels: int = 0    # multiscale: width of the descriptor's branch on temporal
                                # differences at its finest scale, doubled per scale (0: off)
    noise_weight: float = 0.2   # multiscale: starting weight of the generator's noise maps
                                # (the standard preset sets 0.6)
    noise_flow: float = 0.0     # multiscale: > 0, the finest noise map is carried along a flow the
                                # generator predicts, with this correlation between consecutive
                                # frames (0: drawn afresh in every frame)
    noise_flow_field: str = "local"  # that flow: "local", one per pixel (bilinear warp), or
                                # "global", one velocity per clip and frame (exact shift)
    fine_channels: int = 0      # multiscale: width of a full-resolution last stage in the
                                # generator, with its own noise map (0: off)
    fine_upsample: str = "transposed"  # the full-resolution stage's x2: "transposed" conv or
                                # "bilinear" then conv 3^3 (no fixed 2-pixel grid)
    des_fine_channels: int = 0  # multiscale: width of a stride-1 full-resolution term in the
                                # descriptor (0: off; docs/quality.md: it bought nothing measurable)
    labels: str = ""            # class names, comma-separated: one class-conditional model
                                # over several textures (multiscale; "" : unconditional)
    # -- descriptor Langevin revision (paper Eq. 8 / Alg. 1 step D1) ----------------------------
    langevin_steps: int = 10    # l
    step_size: float = 0.002    # delta
    ref_sigma: float = 0.016    # s: std of the Gaussian reference distribution
    ref_mean: str = "zero"      # its mean: "zero" (paper), "channel" (the observed colour mean)
                                # or "frame" (the observed mean frame)
    colour_sigma: float = 0.0   # s_c: std of the reference along each channel's clip mean
                                # (0: s, the isotropic N(mu, s^2 I) of the paper); a small s_c
                                # with a large s anchors the colours, not the motion
    chroma_sigma: float = 0.0   # s_h: std of the reference along each pixel's chroma (its
                                # deviation from the pixel's mean over channels; 0: s): a small
                                # s_h with a large s frees brightness, not local colour
    data_noise: float = 0.0     # std of fresh Gaussian noise added to the observed clips the
                                # descriptor learns from (0: off, as published); the revised
                                # clips always carry Langevin's own noise
    marginal_weight: float = 0.0  # > 0: the generator's loss also pulls each channel's value
                                # distribution to the observed clips' (sorted values against the
                                # observed quantiles at the same ranks), with this weight (0: off)
    flow_weight: float = 0.0    # > 0: the same for the distribution of the clips' local optical
                                # flow at three scales (directions and speeds), with this weight
    persistent: int = 0         # persistent descriptor chains (started at the reference mean,
                                # l steps per iteration) joined to the revised generator samples
                                # as the descriptor's synthesized clips (0: Algorithm 1 as published)
    # -- optional latent inference on the generator posterior (Alg. 1 step G1) -----------------
    infer_steps: int = 0        # l' (0: off, as in the authors' code)
    infer_step_size: float = 0.003
    gen_sigma: float = 1.0      # sigma of the generator's residual epsilon
    # -- optimisation --------------------------------------------------------------------------
    iters: int = 300
    chains: int = 2             # m: synthesized clips per iteration
    batch: int = 1              # observed clips per iteration
    lr_des: float = 0.01
    lr_gen: float = 2e-4
    beta1: float = 0.5
    lr_schedule: str = "constant"  # "cosine": both rates decay to a tenth by the last iteration
    ema: float = 0.0            # > 0: synthesize with an exponential moving average of the
                                # generator's weights (this decay per iteration)
    # -- run -----------------------------------------------------------------------------------
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 50
    preview_every: int = 50
    keep_checkpoints: int = 2
    # -- divergence: detected each iteration, rolled back to the last checkpoint and retried ----
    diverge_rms: float = 3.0       # a Langevin revision moving clips by more RMS than this diverged
    diverge_retries: int = 3       # recoveries allowed in a run before giving up
    diverge_factor: float = 0.5    # each recovery multiplies the chosen rate(s) by this
    diverge_lower: str = "lr_des"  # what a recovery lowers: "lr_des", "step_size" or "both"

    # ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **overrides: Any) -> "Config":
        """A validated copy with some settings changed."""
        return _build(self.to_dict(), overrides)


# The settings that fix the networks' shapes: a checkpoint only fits a run with these.
MODEL_KEYS = ("arch", "frames", "size", "latent_channels", "layout_channels", "frame_bias",
              "motion_channels", "fine_channels", "fine_upsample", "des_fine_channels", "labels",
              "noise_flow", "noise_flow_field")

DEFAULT_PRESET = "quality"
MOTION_MIN_FRAMES = 12  # the motion branch's 3 stride-2 scales need 11 temporal differences

# Named sets of overrides. "paper" is exactly the authors' Exp. 7 (Xie et al., TPAMI; code
# jianwen-xie/Spatial-Temporal-CoopNets, main_coop_video.py); "standard" is the
# multi-scale design, "quality" (the default) builds on it (docs/quality.md measures each choice).
# Stationary multi-scale networks (multiscale.build_multiscale) with a learned layout map and
# frame bias, a descriptor that also sees temporal differences, and the reference distribution
# centred on the observed mean frame; the generator's noise maps start at 0.6 (more moving fine
# detail on all nine shared clips: docs/quality.md, third and fourth rounds).
_STANDARD = {"arch": "multiscale", "layout_channels": 8, "frame_bias": "mean",
             "motion_channels": 16, "ref_mean": "frame", "lr_des": 5e-4, "noise_weight": 0.6}
PRESETS: dict[str, dict[str, Any]] = {
    "standard": _STANDARD,
    # standard + a full-resolution generator stage, a wider reference with anchored colours,
    # fine noise moved by one learned velocity, and the generator fitted to the observed value
    # and local-flow distributions: better texture statistics on the nine shared clips, lower
    # PSNR / SSIM, about 1.8x the time per iteration (docs/quality.md, fourteenth, sixteenth
    # and eighteenth rounds).
    "quality": {**_STANDARD, "fine_channels": 16, "fine_upsample": "bilinear", "ref_sigma": 0.1,
                "step_size": 0.004, "colour_sigma": 0.032, "chroma_sigma": 0.032,
                "data_noise": 0.0126, "noise_flow": 0.9, "noise_flow_field": "global",
                "marginal_weight": 1.0, "flow_weight": 0.01},
    "fast": {},
    "paper": {
        "arch": "paper", "frames": 64, "size": 128, "window": "first", "latent_channels": 5,
        "langevin_steps": 10, "step_size": 0.002, "ref_sigma": 0.016,
        "chains": 2, "lr_des": 0.01, "lr_gen": 2e-4, "beta1": 0.5, "iters": 1000,
        "checkpoint_every": 50, "preview_every": 50,
    },
    # Tiny networks for tests and smoke runs: seconds per run on a laptop.
    "tiny": {"frames": 8, "size": 16, "latent_channels": 4, "langevin_steps": 3, "iters": 4,
             "checkpoint_every": 2, "preview_every": 2},
}

_FIELDS = {f.name: f for f in fields(Config)}
_TYPES = {"int": int, "float": float, "str": str}
_POSITIVE = {"frames", "size", "latent_channels", "iters", "chains", "batch", "checkpoint_every",
             "preview_every", "keep_checkpoints"}
_NON_NEGATIVE = {"langevin_steps", "infer_steps", "seed", "diverge_retries", "layout_channels",
                 "motion_channels", "persistent", "fine_channels", "des_fine_channels"}
_POSITIVE_FLOAT = {"step_size", "ref_sigma", "infer_step_size", "gen_sigma", "lr_des", "lr_gen",
                   "diverge_rms"}
_CHOICES = {"arch": ARCHES, "window": WINDOWS, "device": DEVICES, "preset": tuple(PRESETS),
            "diverge_lower": ("lr_des", "step_size", "both"), "ref_mean": REF_MEANS,
            "frame_bias": FRAME_BIASES,
            "lr_schedule": LR_SCHEDULES, "fine_upsample": FINE_UPSAMPLES,
            "noise_flow_field": NOISE_FLOW_FIELDS}


def _coerce(key: str, value: Any) -> Any:
    if key not in _FIELDS:
        close = [k for k in _FIELDS if k.startswith(key[:3])]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"unknown setting '{key}'{hint}")
    want = _TYPES[_FIELDS[key].type]
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, want):
        raise ConfigError(f"setting '{key}' must be {want.__name__}, got {value!r}")
    if key in _POSITIVE and value < 1:
        raise ConfigError(f"setting '{key}' must be at least 1, got {value}")
    if key in _NON_NEGATIVE and value < 0:
        raise ConfigError(f"setting '{key}' must be 0 or more, got {value}")
    if key in _POSITIVE_FLOAT and not value > 0:
        raise ConfigError(f"setting '{key}' must be positive, got {value}")
    if key == "beta1" and not 0 <= value < 1:
        raise ConfigError(f"setting 'beta1' must be in [0, 1), got {value}")
    if key == "ema" and not 0 <= value < 1:
        raise ConfigError(f"setting 'ema' must be in [0, 1), got {value}")
    if key == "noise_flow" and not 0 <= value < 1:
        raise ConfigError(f"setting 'noise_flow' must be in [0, 1), got {value}")
    if key == "noise_weight" and not 0 <= value <= 10:
        raise ConfigError(f"setting 'noise_weight' must be in [0, 10], got {value}")
    if key in ("colour_sigma", "chroma_sigma", "data_noise", "marginal_weight",
               "flow_weight") and \
            not (value >= 0 and value < float("inf")):
        raise ConfigError(f"setting '{key}' must be 0 or a positive number, got {value}")
    if key == "diverge_factor" and not 0 < value < 1:
        raise ConfigError(f"setting 'diverge_factor' must be in (0, 1), got {value}")
    if key in _CHOICES and value not in _CHOICES[key]:
        raise ConfigError(f"setting '{key}' must be one of {', '.join(_CHOICES[key])}, got {value!r}")
    return value


def make_config(preset: str = DEFAULT_PRESET, **overrides: Any) -> Config:
    """Build a validated config: dataclass defaults < preset < ``overrides``.

    ``None`` values in ``overrides`` are ignored, so CLI options that were not given fall through.
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset '{preset}' (choose from {', '.join(PRESETS)})")
    values = {**Config().to_dict(), **PRESETS[preset], "preset": preset}
    return _build(values, overrides)


def config_from_dict(values: Mapping[str, Any]) -> Config:
    """A config from a complete plain dict (``config.json``, a checkpoint), validated."""
    return _build(Config().to_dict(), upgrade_saved(values))


def upgrade_saved(values: Mapping[str, Any]) -> dict[str, Any]:
    """The settings a run saved (``config.json``, a checkpoint), in today's meaning."""
    values = dict(values)
    if "fine_channels" in values and "des_fine_channels" not in values:
        # saved before des_fine_channels existed, when fine_channels built both networks' stages
        values["des_fine_channels"] = values["fine_channels"]
    return values


def _build(values: dict[str, Any], overrides: Mapping[str, Any]) -> Config:
    values = {**values, **{k: v for k, v in overrides.items() if v is not None}}
    cfg = Config(**{k: _coerce(k, v) for k, v in values.items()})
    _check_shapes(cfg)
    return cfg


def _check_shapes(cfg: Config) -> None:
    from .nets import check_shape  # shape rules live with the networks

    check_shape(cfg.arch, cfg.frames, cfg.size)
    for key in ("layout_channels", "motion_channels", "fine_channels", "des_fine_channels",
                "noise_flow"):
        if getattr(cfg, key) and cfg.arch != "multiscale":
            raise ConfigError(f"setting '{key}' needs arch 'multiscale' (got arch '{cfg.arch}'; "
                              f"set {key} to 0 or use the standard preset)")
    if cfg.fine_upsample != Config.fine_upsample and not cfg.fine_channels:
        raise ConfigError(f"setting 'fine_upsample' shapes the full-resolution stage, which "
                          f"fine_channels 0 leaves out (set fine_channels, e.g. 16)")
    if cfg.noise_flow_field != Config.noise_flow_field and not cfg.noise_flow:
        raise ConfigError("setting 'noise_flow_field' shapes the noise flow, which noise_flow 0 "
                          "leaves out (set noise_flow, e.g. 0.9)")
    if cfg.noise_weight != Config.noise_weight and cfg.arch != "multiscale":
        raise ConfigError(f"setting 'noise_weight' needs arch 'multiscale' (got arch '{cfg.arch}': "
                          f"its generator has no noise maps; use the standard preset)")
    if cfg.labels:
        names = class_names(cfg)
        if cfg.arch != "multiscale":
            raise ConfigError(f"a class-conditional model (labels) needs arch 'multiscale' (got "
                              f"arch '{cfg.arch}'; use the standard preset)")
        if any(not n or n != n.strip() for n in names) or len(set(names)) != len(names):
            raise ConfigError(f"setting 'labels' must be distinct, non-empty class names "
                              f"separated by commas, got {cfg.labels!r}")
        if cfg.persistent:
            raise ConfigError("persistent chains are not available for a class-conditional model "
                              "(set persistent to 0)")
    if cfg.motion_channels and cfg.frames < MOTION_MIN_FRAMES:
        raise ConfigError(f"the descriptor's motion branch (motion_channels) needs frames >= "
                          f"{MOTION_MIN_FRAMES}; "
                          f"got {cfg.frames} (set motion_channels to 0 for shorter clips)")


def class_names(cfg: Config) -> list[str]:
    """The class names of a class-conditional config (``[]``: unconditional)."""
    return cfg.labels.split(",") if cfg.labels else []


def load_saved_config(run_dir: str | Path) -> dict[str, Any]:
    """A run folder's ``config.json`` as overrides that continue the run as it was trained."""
    return upgrade_saved(load_config_file(Path(run_dir) / "config.json"))


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON config file into a dict of overrides (validated by :func:`make_config`)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"config file {path} is not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a JSON object of settings")
    preset = data.pop("preset", None)
    if preset is not None:
        data["__preset__"] = preset
    return data


def config_from_sources(preset: str | None, file_values: Mapping[str, Any] | None,
                        overrides: Mapping[str, Any]) -> Config:
    """Defaults < preset (the flag, else the file's "preset") < config file < explicit overrides."""
    file_values = dict(file_values or {})
    file_preset = file_values.pop("__preset__", None)
    cfg = make_config(preset or file_preset or DEFAULT_PRESET, **file_values)
    return cfg.replace(**overrides)
