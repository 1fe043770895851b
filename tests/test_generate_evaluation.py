"""Offline generator evaluation: ranks under a re-ranking weight, metrics from ranks, the paired bootstrap."""

from __future__ import annotations

import torch

from deepinterestgr.generate.evaluation import (
    Candidates,
    metrics_from_ranks,
    ndcg_per_user,
    paired_bootstrap,
    ranks,
    reranked_items,
)
from deepinterestgr.generate.metrics import hit_ranks, retrieval_metrics


def _candidates() -> Candidates:
    items = torch.tensor([[3, 1, 2], [5, 4, -1]])
    beam = torch.tensor([[-1.0, -1.5, -4.0], [-0.5, -0.7, float("-inf")]])
    item_logp = torch.log(torch.tensor([[0.1, 0.1, 0.8], [0.1, 0.5, 1.0]]))
    return Candidates(items, beam, item_logp, None, targets=torch.tensor([2, 4]), users=torch.arange(2))


def test_ranks_follow_the_weight_and_padding_never_ranks():
    c = _candidates()
    assert ranks(c, 0.0).tolist() == [2, 1]
    # user 0: -1 + ln .1 = -3.30, -1.5 + ln .1 = -3.80, -4 + ln .8 = -4.22 -> target still last at weight 1
    assert ranks(c, 1.0).tolist() == [2, 0]
    assert ranks(c, 10.0).tolist() == [0, 0]
    assert reranked_items(c, 10.0)[1].tolist() == [4, 5, -1]


def _random_candidates(users: int = 400, width: int = 12, seed: int = 0) -> tuple[Candidates, torch.Tensor]:
    """Search-like candidates (each item once per row, padding -1 with score -inf) with many exact score ties,
    targets sometimes absent and sometimes in the history, and a prior log-prob per candidate."""
    g = torch.Generator().manual_seed(seed)
    items = torch.stack([torch.randperm(40, generator=g)[:width] for _ in range(users)])
    items = items.masked_fill(torch.rand(users, width, generator=g) < 0.15, -1)
    beam = torch.randint(-6, 0, (users, width), generator=g).float()  # integers: ties everywhere
    beam = beam.masked_fill(items < 0, float("-inf"))
    item_logp = torch.randint(-4, 0, (users, width), generator=g).float() / 2
    targets = torch.randint(0, 40, (users,), generator=g)
    history = torch.randint(-1, 40, (users, 5), generator=g)
    prior = torch.randint(-3, 0, (users, width), generator=g).float().masked_fill(items < 0, float("-inf"))
    return Candidates(items, beam, item_logp, None, targets=targets, users=torch.arange(users),
                      history_items=history), prior


def test_counted_ranks_equal_the_ranks_of_the_sorted_reranked_list():
    c, prior = _random_candidates()
    assert (ranks(c) >= 0).any() and (ranks(c) < 0).any()
    for weight in (0.0, 0.5, 1.0, 4.0):
        for exclude in (False, True):
            for prior_weight in (0.0, 1.0):
                sorted_list = reranked_items(c, weight, exclude_history=exclude, prior_logp=prior,
                                             prior_weight=prior_weight)
                assert torch.equal(ranks(c, weight, exclude_history=exclude, prior_logp=prior,
                                         prior_weight=prior_weight), hit_ranks(sorted_list, c.targets)), \
                    (weight, exclude, prior_weight)
    # a list that names an item twice (never a search's) is ranked by de-duplicating it, as hit_ranks does
    twice = c._replace(items=c.items.clone())
    twice.items[:, 1] = twice.items[:, 0]
    assert torch.equal(ranks(twice, 1.0), hit_ranks(reranked_items(twice, 1.0), c.targets))


def test_metrics_from_ranks_match_the_torchmetrics_implementation():
    g = torch.Generator().manual_seed(0)
    pred = torch.stack([torch.randperm(30, generator=g)[:10] for _ in range(50)])
    target = torch.randint(0, 30, (50,), generator=g)
    from deepinterestgr.generate.metrics import hit_ranks

    ours = metrics_from_ranks(hit_ranks(pred, target))
    for name, metric in retrieval_metrics((5, 10)).items():
        metric.update(pred, target)
        assert abs(float(metric.compute()) - ours[name]) < 1e-6, name
    assert torch.isclose(ndcg_per_user(hit_ranks(pred, target)).mean(), torch.tensor(ours["ndcg@10"]))


def test_paired_bootstrap_ci_brackets_a_real_difference_and_covers_zero_without_one():
    g = torch.Generator().manual_seed(1)
    a = (torch.rand(4000, generator=g) < 0.10).float()
    shifted = paired_bootstrap(a, a * 0, samples=500)
    assert shifted["ci95"][0] > 0 and abs(shifted["mean_diff"] - float(a.mean())) < 1e-6
    b = a[torch.randperm(4000, generator=g)]  # same distribution, unpaired noise
    same = paired_bootstrap(a, b, samples=500)
    assert same["ci95"][0] <= 0 <= same["ci95"][1]


def test_exclude_history_drops_history_items_and_moves_the_rest_up():
    c = _candidates()._replace(history_items=torch.tensor([[3, -1], [9, 5]]))
    assert reranked_items(c, 0.0, exclude_history=True).tolist() == [[-1, 1, 2], [-1, 4, -1]]
    assert ranks(c, 0.0, exclude_history=True).tolist() == [1, 0]  # item 3 / 5 no longer take rank 0
    import pytest

    with pytest.raises(ValueError, match="without history items"):
        ranks(_candidates(), 0.0, exclude_history=True)


def test_cold_slots_put_the_best_cold_items_at_the_bottom_of_the_top_k():
    from deepinterestgr.generate.evaluation import with_cold_slots

    items = torch.tensor([[0, 1, 2, 3, 4, 5], [0, -1, 2, 3, 4, 5]])
    cold = torch.tensor([[9, 8, 7], [8, 9, 7]])
    history = torch.tensor([[-1], [8]])
    out = with_cold_slots(items, cold, 2, k=4, history_items=history)
    assert out[0].tolist() == [0, 1, 9, 8, 2, 3, 4, 5]
    assert out[1].tolist() == [0, -1, 9, 7, 2, 3, 4, 5]  # 8 is a history item: the next cold item takes its slot
    assert torch.equal(with_cold_slots(items, cold, 0, k=4), items)
