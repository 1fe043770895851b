"""Recall@K / NDCG@K against hand-computed values; duplicates and padding; identical on 1 and 2 DDP processes."""

from __future__ import annotations

import math
import os

import pytest
import torch

from deepinterestgr.generate.metrics import NDCGAtK, RecallAtK, hit_ranks, retrieval_collection, retrieval_metrics


def test_hand_computed_cases():
    pred = torch.tensor([
        [7, 3, 9, 1, 2, 5],  # target 7 at rank 0
        [1, 2, 3, 4, 8, 5],  # target 8 at rank 4
        [1, 2, 3, 4, 5, 6],  # target 9 absent
        [4, 4, 4, 9, 0, 0],  # duplicates count once: target 9 at de-duplicated rank 1
        [-1, 5, -1, 6, 1, 1],  # padding is not an item: target 6 at rank 1
    ])
    target = torch.tensor([7, 8, 9, 9, 6])
    assert hit_ranks(pred, target).tolist() == [0, 4, -1, 1, 1]
    r2, n2, r5, n5 = RecallAtK(2), NDCGAtK(2), RecallAtK(5), NDCGAtK(5)
    for m in (r2, n2, r5, n5):
        m.update(pred, target)
    assert r2.compute().item() == pytest.approx(3 / 5)
    assert r5.compute().item() == pytest.approx(4 / 5)
    assert n2.compute().item() == pytest.approx((1 + 2 / math.log2(3)) / 5)
    assert n5.compute().item() == pytest.approx((1 + 1 / math.log2(6) + 2 / math.log2(3)) / 5)


def test_batches_accumulate_like_one_batch():
    g = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 30, (64, 10), generator=g)
    target = torch.randint(0, 30, (64,), generator=g)
    one, split = NDCGAtK(10), NDCGAtK(10)
    one.update(pred, target)
    for p, t in zip(pred.split(7), target.split(7)):
        split.update(p, t)
    assert one.compute().item() == pytest.approx(split.compute().item())


def test_collection_keeps_recall_and_ndcg_apart():
    """torchmetrics compute groups would merge Recall@5 and NDCG@5 when a first batch makes their states equal
    (every hit at rank 0); afterwards NDCG@5 silently equalled Recall@5. The collection must keep them apart."""
    coll = retrieval_collection((5, 10), prefix="val/")
    coll.update(torch.tensor([[1, 2, 3, 4, 5, 6]]), torch.tensor([1]))  # first batch: hit at rank 0 only
    coll.update(torch.tensor([[1, 2, 3, 4, 5, 6]]), torch.tensor([4]))  # hit at rank 3
    out = {k: v.item() for k, v in coll.compute().items()}
    assert out["val/recall@5"] == pytest.approx(1.0)
    assert out["val/ndcg@5"] == pytest.approx((1 + 1 / math.log2(5)) / 2)


def test_collection_names():
    assert sorted(retrieval_metrics((5, 10))) == ["ndcg@10", "ndcg@5", "recall@10", "recall@5"]


def _ddp_worker(rank: int, world: int, port: int, pred, target, out):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        metrics = [RecallAtK(5), NDCGAtK(5), RecallAtK(10), NDCGAtK(10)]
        for m in metrics:
            m.update(pred[rank::world], target[rank::world])  # uneven shards
        values = [m.compute().item() for m in metrics]
        if rank == 0:
            out.put(values)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_identical_on_one_and_two_ddp_processes():
    import socket

    import torch.multiprocessing as mp

    g = torch.Generator().manual_seed(3)
    pred = torch.randint(0, 20, (51, 10), generator=g)
    target = torch.randint(0, 20, (51,), generator=g)
    single = [m for m in (RecallAtK(5), NDCGAtK(5), RecallAtK(10), NDCGAtK(10))]
    for m in single:
        m.update(pred, target)
    expected = [m.compute().item() for m in single]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.SimpleQueue()
    mp.start_processes(_ddp_worker, args=(2, port, pred, target, out), nprocs=2, start_method="spawn")
    assert out.get() == pytest.approx(expected, abs=1e-7)
