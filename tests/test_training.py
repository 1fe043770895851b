"""Exact-resume building blocks: batch order from (seed, epoch) only, the in-epoch position round trip through a
loader state, and per-step reseeding."""

from __future__ import annotations

import torch

from deepinterestgr.training import EpochBatchSampler, ResumableDataLoader, StepSeed, resumable_checkpoint


def _epoch(sampler: EpochBatchSampler, epoch: int) -> list[list[int]]:
    sampler.set_epoch(epoch)
    return list(sampler)


def test_order_depends_on_seed_and_epoch_only():
    lengths = torch.randint(1, 20, (103,))
    a = EpochBatchSampler(103, batch_size=8, seed=7, lengths=lengths, pool_batches=3)
    b = EpochBatchSampler(103, batch_size=8, seed=7, lengths=lengths, pool_batches=3)
    assert _epoch(a, 2) == _epoch(b, 2)  # b never saw epochs 0 and 1
    assert _epoch(a, 2) != _epoch(a, 3)
    assert _epoch(EpochBatchSampler(103, batch_size=8, seed=8, lengths=lengths, pool_batches=3), 2) != _epoch(a, 2)
    batches = _epoch(a, 5)
    assert sorted(i for batch in batches for i in batch) == list(range(103)) and len(batches) == len(a)
    plain = _epoch(EpochBatchSampler(103, batch_size=8, seed=7), 0)
    assert sorted(i for batch in plain for i in batch) == list(range(103))


def test_loader_state_resumes_inside_the_epoch_and_not_after_it():
    def loader(seed=3):
        return ResumableDataLoader(list(range(50)), batch_sampler=EpochBatchSampler(50, batch_size=4, seed=seed))

    full = loader()
    full.batch_sampler.set_epoch(1)
    expected = [b.tolist() for b in full]

    interrupted = loader()
    interrupted.batch_sampler.set_epoch(1)
    it = iter(interrupted)
    seen = [next(it).tolist() for _ in range(5)]
    state = interrupted.state_dict()
    assert state["seed"] == 3

    resumed = loader()
    resumed.load_state_dict(state)
    resumed.batch_sampler.set_epoch(1)  # Lightning resumes an interrupted epoch in that epoch
    assert seen + [b.tolist() for b in resumed] == expected

    ended = loader()
    ended.batch_sampler.set_epoch(1)
    list(ended)
    after_end = loader()
    after_end.load_state_dict(ended.state_dict())
    after_end.batch_sampler.set_epoch(2)  # a checkpoint at the end of epoch 1 resumes in epoch 2: nothing skipped
    assert len(list(after_end)) == len(after_end.batch_sampler)

    legacy = loader()  # a checkpoint of the loader before torchdata: (epoch, batches served)
    legacy.load_state_dict({"epoch": 1, "served": 5, "seed": 3})
    legacy.batch_sampler.set_epoch(1)
    assert seen + [b.tolist() for b in legacy] == expected


def test_loader_state_counts_consumed_batches_with_worker_processes():
    """Workers prefetch batches ahead of the training step; the saved position is what was consumed."""
    def loader():
        return ResumableDataLoader(list(range(60)), batch_sampler=EpochBatchSampler(60, batch_size=4, seed=9),
                                   num_workers=2)

    full = loader()
    expected = [b.tolist() for b in full]
    interrupted = loader()
    it = iter(interrupted)
    seen = [next(it).tolist() for _ in range(6)]
    state = interrupted.state_dict()
    del it
    resumed = loader()
    resumed.load_state_dict(state)
    resumed.batch_sampler.set_epoch(0)
    assert seen + [b.tolist() for b in resumed] == expected


def test_loader_refuses_a_state_drawn_with_another_seed():
    import pytest

    loader = ResumableDataLoader(list(range(8)), batch_sampler=EpochBatchSampler(8, batch_size=2, seed=1))
    with pytest.raises(ValueError, match="seed 2.*this run uses 1"):
        loader.load_state_dict({"epoch": 0, "served": 1, "seed": 2})


def test_step_seed_draws_depend_on_the_step_not_on_history():
    class FakeTrainer:
        global_rank = 0

        def __init__(self, step):
            self.global_step = step

    cb = StepSeed()
    cb.seed = 11
    cb.on_train_batch_start(FakeTrainer(4), None, None, 0)
    first = torch.rand(3)
    torch.rand(100)  # whatever ran before must not matter
    cb.on_train_batch_start(FakeTrainer(4), None, None, 0)
    assert torch.equal(torch.rand(3), first)
    cb.on_train_batch_start(FakeTrainer(5), None, None, 0)
    assert not torch.equal(torch.rand(3), first)
    restored = StepSeed()
    restored.load_state_dict(cb.state_dict())
    assert restored.seed == 11


def test_a_checkpoint_resumes_only_under_the_stage_record_its_manifest_would_hold(tmp_path, capsys):
    import json

    from deepinterestgr.artifacts import stage_record

    stage = tmp_path / "generate"
    config, inputs = {"seed_everything": 42, "model": {"lr": 0.01}}, {"data": "a", "quantize": "b"}
    assert resumable_checkpoint(stage, config, inputs) is None  # nothing to resume; the fit's record is written
    assert json.loads((stage / "fit_record.json").read_text()) == stage_record(config, inputs)
    (stage / "checkpoints").mkdir()
    (stage / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    assert resumable_checkpoint(stage, config, inputs) == stage / "checkpoints" / "last.ckpt"
    assert resumable_checkpoint(stage, {**config, "model": {"lr": 0.01}}, dict(inputs)) is not None  # equal values
    # another seed, or another upstream manifest: the old checkpoint is moved aside, never resumed
    assert resumable_checkpoint(stage, {**config, "seed_everything": 7}, inputs) is None
    assert (stage / "checkpoints.previous" / "last.ckpt").exists() and not (stage / "checkpoints").exists()
    assert json.loads((stage / "fit_record.json").read_text())["config"]["seed_everything"] == 7
    (stage / "checkpoints").mkdir()
    (stage / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    assert resumable_checkpoint(stage, {**config, "seed_everything": 7}, {**inputs, "quantize": "c"}) is None
    (stage / "checkpoints").mkdir()
    (stage / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    newer = {**config, "seed_everything": 7}, {**inputs, "quantize": "c"}
    assert resumable_checkpoint(stage, *newer, fresh=True) is None
    assert "a fresh fit was asked for" in capsys.readouterr().out


def test_the_cli_hands_its_resolved_seed_to_modules_and_datamodules(tmp_path, monkeypatch):
    """Not through PL_GLOBAL_SEED: an earlier run in the same process may have left another seed there."""
    from pathlib import Path

    from deepinterestgr.lightning_configs import resolved_config, run_lightning

    repo = Path(__file__).resolve().parents[1]
    args = [x for c in ("trainer/cpu.yaml", "model/generator_t5_tiny.yaml", "data/sequences_tiny.yaml")
            for x in ("-c", str(repo / "configs" / c))]
    cli = run_lightning([*args, "--data.run_dir", str(tmp_path), "--seed_everything", "7"], run=False)
    monkeypatch.setenv("PL_GLOBAL_SEED", "5")
    assert cli.model.run_seed() == 7 and cli.datamodule.run_seed() == 7
    assert resolved_config(cli)["seed_everything"] == 7
    drawn = run_lightning([*args, "--data.run_dir", str(tmp_path), "--seed_everything", "true"], run=False)
    seed = resolved_config(drawn)["seed_everything"]
    assert isinstance(seed, int) and not isinstance(seed, bool) and drawn.datamodule.run_seed() == seed
    step_seed = StepSeed()
    step_seed.setup(None, cli.model, "fit")
    assert step_seed.seed == 7
