"""``dyntex speed``: how fast one CoopNets iteration runs here, next to this machine's peak.

One run measures, on one device and thread count:

* seconds per training iteration (:func:`dyntex.coop.train_step`; median of ``iters`` after
  ``warmup``) on a synthetic observed clip, and the phases of one iteration;
* FLOPs per iteration, counted per layer (forward = 2 x multiply-adds; an input gradient and a
  weight gradient each cost a forward), and the achieved GFLOP/s;
* the machine's convolution peak, measured in the same run by a calibration kernel (a 64 -> 64
  channel 3x3x3 conv3d in channels_last_3d), and a 2048^2 matmul; achieved / peak;
* peak resident memory (``getrusage``; on CUDA the allocator's peak too);
* descriptor Langevin seconds per step; generator synthesis in frames per second next to what the
  same clips cost by descriptor Langevin alone;
* device, torch version, threads, CPU model, load average before and after.

``fast_ops=False`` measures the plain PyTorch formulation of the same networks (the "before").
The command adds the baselines' timing (:func:`dyntex.eval.baselines.timing`), which this module
does not import: dyntex does not depend on its evaluation package.
"""
from __future__ import annotations

import contextlib
import math
import os
import platform
import resource
import statistics
import time
from typing import Any, Callable

import torch
from torch import nn

from . import allocator, fastops
from .config import make_config
from .coop import CoopNets, Optimizers, train_step
from .errors import ConfigError

CALIB_SHAPE = (1, 64, 32, 64, 64)  # calibration conv3d input; 64 -> 64 channels, 3x3x3, pad 1


# ----------------------------------------------------------------------------------------------
# Machine
# ----------------------------------------------------------------------------------------------
def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads counted once)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return max(1, (os.cpu_count() or 2) // 2)
    cores = set()
    for cpu in cpus:
        topo = f"/sys/devices/system/cpu/cpu{cpu}/topology"
        try:
            with open(f"{topo}/physical_package_id") as f1, open(f"{topo}/core_id") as f2:
                cores.add((f1.read().strip(), f2.read().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def peak_rss_gb() -> float:
    """Peak resident set size of this process so far, in GB (10^9 bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak * (1 if platform.system() == "Darwin" else 1024) / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def calibrate(device: torch.device, repeats: int = 5) -> dict[str, float]:
    """GFLOP/s of a 64 -> 64 channel 3x3x3 conv3d (channels_last_3d) and of a 2048^2 matmul."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(CALIB_SHAPE, generator=gen).to(device, memory_format=torch.channels_last_3d)
    conv = nn.Conv3d(64, 64, 3, padding=1, bias=False).to(device, memory_format=torch.channels_last_3d)
    a = torch.randn(2048, 2048, generator=gen).to(device)
    b = torch.randn(2048, 2048, generator=gen).to(device)
    conv_flop = 2 * 64 * 64 * 27 * math.prod(CALIB_SHAPE[2:])
    with torch.no_grad():
        conv(x), a @ b  # warm-up: kernel choice, page faults
        t_conv = min(_timed(lambda: conv(x), device) for _ in range(repeats))
        t_mm = min(_timed(lambda: a @ b, device) for _ in range(repeats))
    return {"conv3d_gflops": conv_flop / t_conv / 1e9, "matmul_gflops": 2 * 2048 ** 3 / t_mm / 1e9}


# ----------------------------------------------------------------------------------------------
# FLOPs
# ----------------------------------------------------------------------------------------------
def _layer_flops(module: nn.Module, x: torch.Tensor) -> list[int]:
    """Forward FLOPs (2 x multiply-adds) of each conv layer of ``module`` on ``x``, in order."""
    flops: list[int] = []

    def hook(layer, inputs, output):
        w = layer.weight
        taps = math.prod(w.shape[2:])
        if isinstance(layer, nn.ConvTranspose3d):   # every input element meets C_out * taps
            flops.append(2 * inputs[0].numel() * w.shape[1] * taps)
        else:                                       # every output element sums C_in * taps
            flops.append(2 * output.numel() * w.shape[1] * taps)

    convs = [m for m in module.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))]
    handles = [m.register_forward_hook(hook) for m in convs]
    try:
        with torch.no_grad():
            module(x)
    finally:
        for h in handles:
            h.remove()
    return flops


def iteration_flops(config) -> dict[str, int]:
    """FLOPs of one training iteration, counted per convolution layer on shapes only.

    Langevin: l x (forward + input gradient) of the descriptor on ``chains`` clips. Descriptor
    update: forward on batch + chains clips, weight gradients of every layer and input gradients
    of all but the first. Generator update: forward, weight gradients, input gradients of all but
    the first layer (the latents need none). Normalisation and pointwise layers are not counted.
    """
    with torch.device("meta"):
        model = CoopNets(config)
        z = torch.empty(config.chains, *model.generator.latent_shape())
        # the Langevin chains: the generator's samples and any persistent chains
        clips = torch.empty(config.chains + config.persistent, 3, config.frames, config.size,
                            config.size)
        both = torch.empty(config.batch + config.chains + config.persistent, 3, config.frames,
                           config.size, config.size)
        des_c, des_b = _layer_flops(model.descriptor, clips), _layer_flops(model.descriptor, both)
        gen = _layer_flops(model.generator, z)
    steps = config.langevin_steps
    out = {
        "langevin": steps * 2 * sum(des_c),
        "descriptor_update": sum(des_b) * 2 + sum(des_b[1:]),
        "generator_update": sum(gen) * 2 + sum(gen[1:]),
    }
    if config.infer_steps:
        out["latent_inference"] = config.infer_steps * (sum(gen) * 2) + sum(gen)
    out["total"] = sum(out.values())
    return out


# ----------------------------------------------------------------------------------------------
# The measurements
# ----------------------------------------------------------------------------------------------
def _precision_scope(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def measure(preset: str = "paper", frames: int | None = None, size: int | None = None,
            chains: int | None = None, langevin_steps: int | None = None, iters: int = 3,
            warmup: int = 1, device: str = "cpu", threads: int | None = None,
            fast_ops: bool = True, precision: str = "fp32", calibration: bool = True,
            langevin_only_steps: int = 100,
            progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the benchmark and return its figures (see the module docstring)."""
    if iters < 1 or warmup < 0:
        raise ConfigError("iters must be at least 1 and warmup 0 or more")
    if precision not in ("fp32", "tf32", "bf16"):
        raise ConfigError(f"precision must be fp32, tf32 or bf16, got {precision!r}")
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       "cpu" if device == "auto" else device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available")
    say = progress or (lambda _msg: None)
    threads = threads or physical_cores()
    torch.set_num_threads(threads)
    if dev.type == "cuda":
        tf32 = precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    cfg = make_config(preset, frames=frames, size=size, chains=chains,
                      langevin_steps=langevin_steps, device=dev.type)
    result: dict[str, Any] = {
        "preset": preset, "frames": cfg.frames, "size": cfg.size, "chains": cfg.chains,
        "langevin_steps": cfg.langevin_steps, "arch": cfg.arch, "fast_ops": fast_ops,
        "precision": precision, "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_model(),
        "torch": torch.__version__, "threads": threads, "physical_cores": physical_cores(),
        # read by torch at its first allocation (the command sets it: dyntex.allocator)
        "huge_page_alloc": allocator.huge_pages_requested(),
        "load_before": load_average(), "iters": iters, "warmup": warmup,
    }
    old = fastops.set_enabled(fast_ops)
    try:
        say("building the networks")
        torch.manual_seed(cfg.seed)
        model = CoopNets(cfg).to(dev)
        opts = Optimizers.for_model(model)
        gen = torch.Generator(device=dev).manual_seed(cfg.seed)
        observed = (torch.rand(cfg.batch, 3, cfg.frames, cfg.size, cfg.size, generator=gen,
                               device=dev) * 2 - 1)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        times = []
        for i in range(warmup + iters):
            say(f"iteration {i + 1}/{warmup + iters}" + (" (warm-up)" if i < warmup else ""))
            with _precision_scope(dev, precision):
                t = _timed(lambda: train_step(model, opts, observed, gen), dev)
            if i >= warmup:
                times.append(t)
        result["iteration_seconds"] = statistics.median(times)
        result["iteration_seconds_all"] = [round(t, 3) for t in times]
        result["peak_rss_gb"] = round(peak_rss_gb(), 3)
        if dev.type == "cuda":
            result["cuda_peak_allocated_gb"] = round(torch.cuda.max_memory_allocated(dev) / 1e9, 3)

        say("Langevin and synthesis")
        n, steps = cfg.chains, cfg.langevin_steps
        with torch.no_grad():
            clips = model.synthesize(n, generator=gen)
        with _precision_scope(dev, precision):
            t_lang = statistics.median(
                _timed(lambda: model.revise(clips, steps, gen), dev) for _ in range(3))
            model.synthesize(n, generator=gen)
            t_gen = statistics.median(
                _timed(lambda: model.synthesize(n, generator=gen), dev) for _ in range(3))
        per_step = t_lang / steps
        clip_frames = n * cfg.frames
        result.update({
            "langevin_seconds_per_step": per_step,
            "generator_frames_per_second": clip_frames / t_gen,
            "generator_seconds_per_batch": t_gen,
            "langevin_only_steps": langevin_only_steps,
            "langevin_only_seconds": per_step * langevin_only_steps,
            "langevin_only_frames_per_second": clip_frames / (per_step * langevin_only_steps),
        })
        del model, opts, clips
    finally:
        fastops.set_enabled(old)

    flops = iteration_flops(cfg)
    result["flops"] = flops
    result["gflop_per_iteration"] = flops["total"] / 1e9
    result["achieved_gflops"] = flops["total"] / result["iteration_seconds"] / 1e9
    if calibration:
        say("calibration kernels")
        cal = calibrate(dev)
        result.update(cal)
        result["fraction_of_conv_peak"] = result["achieved_gflops"] / cal["conv3d_gflops"]
    result["load_after"] = load_average()
    return result


def format_table(r: dict[str, Any]) -> str:
    """A short human-readable summary of :func:`measure`'s result."""
    rows = [
        ("setting", f"{r['preset']} ({r['arch']}), {r['frames']} x {r['size']}^2, "
                    f"{r['chains']} chains, {r['langevin_steps']} Langevin steps, "
                    f"fast ops {'on' if r['fast_ops'] else 'off'}, {r['precision']}"),
        ("device", f"{r['device']} ({r['device_name']}), {r['threads']} threads, "
                   f"torch {r['torch']}, huge-page allocation {'on' if r['huge_page_alloc'] else 'off'}"),
        ("load average", f"{r['load_before']} before, {r['load_after']} after"),
        ("s / iteration", f"{r['iteration_seconds']:.3f} (median of {r['iters']}: "
                          f"{r['iteration_seconds_all']})"),
        ("GFLOP / iteration", f"{r['gflop_per_iteration']:.1f}"),
        ("achieved GFLOP/s", f"{r['achieved_gflops']:.1f}"),
    ]
    if "conv3d_gflops" in r:
        rows += [("conv3d peak GFLOP/s", f"{r['conv3d_gflops']:.1f} (matmul 2048^2: "
                                         f"{r['matmul_gflops']:.1f})"),
                 ("of conv peak", f"{100 * r['fraction_of_conv_peak']:.0f} %")]
    rows.append(("peak RSS", f"{r['peak_rss_gb']:.2f} GB"
                 + (f" (CUDA peak {r['cuda_peak_allocated_gb']:.2f} GB)"
                    if "cuda_peak_allocated_gb" in r else "")))
    rows += [
        ("Langevin s / step", f"{r['langevin_seconds_per_step']:.3f} ({r['chains']} clips)"),
        ("generator synthesis", f"{r['generator_frames_per_second']:.1f} frames/s "
                                f"({r['generator_seconds_per_batch']:.3f} s for {r['chains']} clips)"),
        ("descriptor Langevin alone", f"{r['langevin_only_frames_per_second']:.2f} frames/s "
                                      f"({r['langevin_only_steps']} steps: "
                                      f"{r['langevin_only_seconds']:.1f} s)"),
    ]
    if "lds_seconds" in r:
        rows.append(("LDS / HOSVD 64x128^2", f"{r['lds_seconds']:.2f} s / {r['hosvd_seconds']:.2f} s "
                                             "(fit + synthesis)"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
