"""Run folders: checkpoints (weights only), metrics, resume."""
import csv
import os
import pickle

import pytest
import torch

from dyntex.config import make_config
from dyntex.errors import CheckpointError
from dyntex.trainer import Trainer, checkpoint_paths, load_checkpoint, load_model, read_metrics


def _clips():
    g = torch.Generator().manual_seed(3)
    base = torch.rand(2, 3, 1, 16, 16, generator=g) * 1.6 - 0.8
    drift = torch.linspace(-0.1, 0.1, 8).view(1, 1, 8, 1, 1)
    return (base + drift).clamp(-1, 1)  # two observed 8-frame clips


def _cfg(**kw):
    return make_config("tiny", window="random", **kw)


def test_checkpoint_is_weights_only_and_round_trips(tmp_path):
    trainer = Trainer(_cfg(iters=2), run_dir=tmp_path)
    model = trainer.fit(_clips())
    path = checkpoint_paths(tmp_path)[-1]
    raw = torch.load(path, map_location="cpu", weights_only=True)  # must not need pickled objects
    assert raw["step"] == 2 and raw["config"]["preset"] == "tiny"
    assert isinstance(raw["rng"]["train"], torch.Tensor)
    loaded, meta = load_model(tmp_path)
    assert meta["step"] == 2
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize("persistent", [0, 2])
def test_resume_continues_step_count_metrics_and_matches_uninterrupted_run(tmp_path, persistent):
    """... also with persistent descriptor chains, whose states travel in the checkpoint."""
    full = Trainer(_cfg(iters=6, persistent=persistent), run_dir=tmp_path / "full").fit(_clips())
    if persistent:
        assert full.chain_states.shape[0] == 2 and full.chain_states.abs().max() > 0

    Trainer(_cfg(iters=3, checkpoint_every=2, persistent=persistent),
            run_dir=tmp_path / "part").fit(_clips())
    # simulate a crash after step 3's metrics row but before its checkpoint
    checkpoint_paths(tmp_path / "part")[-1].unlink()
    assert [r["step"] for r in read_metrics(tmp_path / "part")] == [1, 2, 3]
    resumed = Trainer(_cfg(iters=6, persistent=persistent), run_dir=tmp_path / "part", resume=True)
    assert resumed.step == 2
    assert [r["step"] for r in read_metrics(tmp_path / "part")] == [1, 2]  # lost work dropped
    model = resumed.fit(_clips())
    assert [r["step"] for r in read_metrics(tmp_path / "part")] == [1, 2, 3, 4, 5, 6]
    for (k, a), b in zip(full.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), k  # RNG states travel in the checkpoint: same run exactly
    seconds = [r["seconds"] for r in read_metrics(tmp_path / "part")]
    assert seconds == sorted(seconds)


def test_existing_run_needs_resume_and_matching_networks(tmp_path):
    Trainer(_cfg(iters=1), run_dir=tmp_path).fit(_clips())
    with pytest.raises(CheckpointError, match="--resume"):
        Trainer(_cfg(iters=2), run_dir=tmp_path)
    with pytest.raises(CheckpointError, match="size"):
        Trainer(_cfg(iters=2, size=24), run_dir=tmp_path, resume=True)


def test_missing_run_and_corrupt_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_model(tmp_path / "empty")
    Trainer(_cfg(iters=1), run_dir=tmp_path / "run").fit(_clips())
    path = checkpoint_paths(tmp_path / "run")[-1]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model(tmp_path / "run")


class _Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_malicious_pickle_checkpoint_is_refused(tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": 1, "step": 1, "config": {}, "descriptor": _Payload(target),
                "generator": {}}, path)
    with pytest.raises(CheckpointError, match="refusing"):
        load_checkpoint(path)
    assert not target.exists()
    # and a plain pickle file is refused too
    path.write_bytes(pickle.dumps(_Payload(target)))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not target.exists()


def test_metrics_file_has_energies(tmp_path):
    Trainer(_cfg(iters=2), run_dir=tmp_path).fit(_clips())
    with (tmp_path / "metrics.csv").open() as fh:
        header = next(csv.reader(fh))
    assert header == ["step", "des_loss", "gen_loss", "energy_obs", "energy_syn", "langevin_rms", "seconds",
                      "lr_des", "lr_gen", "step_size", "event"]


# -- divergence ------------------------------------------------------------------------------
def _inject(monkeypatch, bad_calls, kind):
    """Make train_step's iterations number ``bad_calls`` (1-based) diverge for real: NaN weights,
    or revisions that explode."""
    import dyntex.trainer as trainer_mod

    real = trainer_mod.train_step
    calls = {"n": 0}

    def step(model, opts, observed, generator=None, sync=None, labels=None):
        calls["n"] += 1
        if calls["n"] in bad_calls:
            if kind == "nan":
                with torch.no_grad():
                    for p in model.descriptor.parameters():
                        p.fill_(float("nan"))
            else:
                model.config = model.config.replace(step_size=50.0)  # Langevin blows up
                try:
                    return real(model, opts, observed, generator, sync, labels)
                finally:
                    model.config = model.config.replace(step_size=0.002)
        return real(model, opts, observed, generator, sync, labels)

    monkeypatch.setattr(trainer_mod, "train_step", step)
    return calls


@pytest.mark.parametrize("kind", ["nan", "explode"])
def test_divergence_is_rolled_back_and_rates_lowered(tmp_path, monkeypatch, kind):
    calls = _inject(monkeypatch, {4}, kind)
    trainer = Trainer(_cfg(iters=6, checkpoint_every=2), run_dir=tmp_path)
    model = trainer.fit(_clips())
    assert calls["n"] == 8  # steps 1-3, the diverged 4th, then 3-6 again from the step-2 checkpoint
    assert trainer.step == 6 and trainer.recoveries == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert model.config.lr_des == pytest.approx(0.005)
    assert trainer.opts.descriptor.param_groups[0]["lr"] == pytest.approx(0.005)
    rows = read_metrics(tmp_path)
    events = [r for r in rows if r["event"]]
    assert len(events) == 1 and "rolled back to step 2" in events[0]["event"]
    assert [r["step"] for r in rows if not r["event"]] == [1, 2, 3, 4, 5, 6]
    # the recovery travels with the checkpoint: a resumed run keeps the lowered rate
    resumed = Trainer(_cfg(iters=7, checkpoint_every=2), run_dir=tmp_path, resume=True)
    assert resumed.config.lr_des == pytest.approx(0.005) and resumed.recoveries == 1


def test_divergence_without_run_dir_uses_memory_snapshot(monkeypatch):
    _inject(monkeypatch, {2}, "nan")
    trainer = Trainer(_cfg(iters=3, checkpoint_every=1))
    model = trainer.fit(_clips())
    assert trainer.step == 3 and all(torch.isfinite(p).all() for p in model.parameters())


def test_persistent_divergence_gives_up_with_clear_error(tmp_path, monkeypatch):
    from dyntex.errors import DivergenceError

    _inject(monkeypatch, set(range(3, 100)), "nan")
    trainer = Trainer(_cfg(iters=6, diverge_retries=2), run_dir=tmp_path)
    with pytest.raises(DivergenceError, match="did not recover after 2 retries"):
        trainer.fit(_clips())
