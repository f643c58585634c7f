"""Data-parallel training with torch.distributed (gloo, two CPU processes)."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import torch.multiprocessing as mp

from dyntex.config import make_config
from dyntex.coop import CoopNets, Optimizers, accumulate_gradients
from dyntex.distributed import RANK_SEED_STRIDE
from dyntex.trainer import TensorClips, Trainer, checkpoint_paths, read_metrics

ITERS = 3


def _cfg():
    return make_config("tiny", window="random", chains=1, iters=ITERS, checkpoint_every=2)


def _clips():
    g = torch.Generator().manual_seed(3)
    return (torch.rand(3, 3, 8, 16, 16, generator=g) * 1.6 - 0.8)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo")
    try:
        trainer = Trainer(_cfg(), run_dir=Path(out) / "run")
        model = trainer.fit(_clips())
        torch.save(model.state_dict(), Path(out) / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def _one_process_reference(world):
    """One process accumulating the gradients of `world` groups of chains, each group with the
    random streams of the rank that would run it."""
    cfg = _cfg()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks: a matmul's summation order may depend on the threads
    try:
        return _accumulate_groups(cfg, world)
    finally:
        torch.set_num_threads(threads)


def _accumulate_groups(cfg, world):
    torch.manual_seed(cfg.seed)
    model = CoopNets(cfg)
    opts = Optimizers.for_model(model)
    streams = []
    for r in range(world):
        seed = cfg.seed + r * RANK_SEED_STRIDE
        streams.append((torch.Generator().manual_seed(seed),
                        TensorClips(_clips(), torch.Generator().manual_seed(seed + 1), cfg)))
    for _ in range(ITERS):
        opts.descriptor.zero_grad(set_to_none=True)
        opts.generator.zero_grad(set_to_none=True)
        for rng, data in streams:
            accumulate_gradients(model, data.observed(cfg.batch), rng, scale=1 / world)
        opts.descriptor.step()
        opts.generator.step()
    return model.state_dict()


def test_two_gloo_ranks_agree_and_match_one_process(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for k in rank0:
        assert torch.equal(rank0[k], rank1[k]), f"ranks differ in {k}"
    ref = _one_process_reference(2)
    for k in ref:
        assert torch.allclose(rank0[k], ref[k], rtol=1e-4, atol=1e-6), k
    # rank 0 alone wrote the run folder, with every rank's random streams in the checkpoint
    run = tmp_path / "run"
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3]
    state = torch.load(checkpoint_paths(run)[-1], weights_only=True)
    assert state["step"] == ITERS and len(state["rng"]["ranks"]) == 2
    assert not torch.equal(state["rng"]["ranks"][0]["train"], state["rng"]["ranks"][1]["train"])


def test_torchrun_cli(tmp_path):
    from dyntex.video import write_video

    rng = np.random.default_rng(0)
    write_video(tmp_path / "clip.mp4", rng.integers(0, 255, (10, 16, 16, 3), dtype=np.uint8), 25)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(_free_port()), str(Path(__file__).parents[1] / "cli.py"),
           "train", str(tmp_path / "clip.mp4"), "--out", str(tmp_path / "run"), "--preset", "tiny",
           "--iters", "2", "--chains", "1", "--quiet"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("trained") == 2  # both ranks finish; rank 0 alone writes
    state = torch.load(checkpoint_paths(tmp_path / "run")[-1], weights_only=True)
    assert state["step"] == 2 and len(state["rng"]["ranks"]) == 2
