"""Exact-resume building blocks: batch order from (seed, epoch) only, the in-epoch position round trip through a
loader state, and per-step reseeding."""

from __future__ import annotations

import torch

from deepinterestgr.training import EpochBatchSampler, ResumableDataLoader, StepSeed


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
