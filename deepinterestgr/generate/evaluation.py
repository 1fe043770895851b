"""Offline evaluation of a trained generator: one beam search per user, then any re-ranking weight for free.

`collect_candidates` runs the constrained beam search once over a split and keeps, per user, the candidates, their
beam scores and (for generators with item-level scores) their item log-probabilities, plus the item-level top-K
over the whole catalog. `ranks` then gives each user's 0-based target rank for a re-ranking weight without another
search, so a weight can be selected on valid and applied to test, and per-user ranks feed paired bootstraps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from deepinterestgr.generate.metrics import hit_ranks
from deepinterestgr.generate.rerank import combined_scores, in_history


class Candidates(NamedTuple):
    items: torch.Tensor  # [U, B] beam candidates (-1 = padding beam), beam order
    beam_scores: torch.Tensor  # [U, B] sum of SID log-probs (-inf for padding)
    item_logp: torch.Tensor | None  # [U, B] item-level log-prob of each candidate (None without item scores)
    item_top: torch.Tensor | None  # [U, K] item-level top-K over the whole catalog (a diagnostic, not generative)
    targets: torch.Tensor  # [U]
    users: torch.Tensor  # [U] row of each user in sequences.jsonl
    history_items: torch.Tensor | None = None  # [U, H] the items the generator read (-1 = padding)
    cold_top: torch.Tensor | None = None  # [U, M] item-level top-M among `cold_items` (items added after training)


def collect_candidates(module, datamodule, split: str, *, beam_size: int, top_k: int = 10,
                       progress: bool = True, cold_items: torch.Tensor | None = None,
                       dense_candidates: int = 0, prior_candidates: int = 0) -> Candidates:
    """Beam-search every example of `split` ("valid" or "test") served by `datamodule` (a set-up SequenceDataModule);
    with `dense_candidates` M, each user's candidates are the beam's joined by the item-level top-M it missed
    (`GeneratorModule.dense_candidates`), [U, beam_size + M], and with `prior_candidates` P by the item prior's top-P
    it missed (the module's ranker needs a fitted prior), [U, beam_size + M + P].
    With `cold_items` (ids of items added after training) and item-level scores, also the top-`top_k` of those items
    by item-level score (`cold_top`, for `with_cold_slots`)."""
    joins = [(dense_candidates, prior_candidates)]
    return collect_candidate_sets(module, datamodule, split, beam_size=beam_size, joins=joins, top_k=top_k,
                                  progress=progress, cold_items=cold_items)[dense_candidates, prior_candidates]


@torch.no_grad()
def collect_candidate_sets(module, datamodule, split: str, *, beam_size: int, joins=((0, 0),), top_k: int = 10,
                           progress: bool = True,
                           cold_items: torch.Tensor | None = None) -> dict[tuple[int, int], Candidates]:
    """`collect_candidates` for several (dense M, prior P) settings from one beam search per batch: each setting's
    candidates are the ones `collect_candidates` gives for it, and the search (the costly part) runs once."""
    module.eval()
    has_items = bool(getattr(module.generator, "has_item_scores", False))
    loader = datamodule.val_dataloader() if split == "valid" else datamodule.test_dataloader()
    max_rows = datamodule.tokenizer.history_rows(datamodule.max_history)  # batches are trimmed: pad to one width
    joins = list(dict.fromkeys((int(m), int(p)) for m, p in joins))
    parts = {key: {k: [] for k in ("items", "beam_scores", "item_logp")} for key in joins}
    shared: dict[str, list[torch.Tensor]] = {k: [] for k in ("item_top", "targets", "users", "history_items",
                                                             "cold_top")}
    settings = " | ".join(" + ".join([f"{m} dense"] * bool(m) + [f"{p} prior"] * bool(p)) or "beam only"
                          for m, p in joins)
    desc = f"beam search ({split}, beam {beam_size}: {settings})"
    for batch in tqdm(loader, desc=desc, disable=not progress):
        sets = module.ranker.candidate_sets(module.generator, batch["history"], batch["history_mask"],
                                            beam_size=beam_size, joins=joins, item_scores=has_items)
        for key, result in sets.results.items():
            parts[key]["items"].append(result.items)
            parts[key]["beam_scores"].append(result.scores)
            if has_items:
                parts[key]["item_logp"].append(sets.item_logp.gather(1, result.items.clamp(min=0)))
        if has_items:
            shared["item_top"].append(sets.item_logp.topk(top_k, dim=-1).indices)
            if cold_items is not None:
                cold = cold_items.to(sets.item_logp.device)
                shared["cold_top"].append(cold[sets.item_logp[:, cold].topk(min(top_k, len(cold)), dim=-1).indices])
        shared["targets"].append(batch["target_item"])
        shared["users"].append(batch["user_index"])
        hist = module.history_items(batch["history"], batch["history_mask"])
        shared["history_items"].append(torch.nn.functional.pad(hist, (max_rows - hist.shape[1], 0), value=-1))
    common = {k: torch.cat(v) if v else None for k, v in shared.items()}
    return {key: Candidates(**{k: torch.cat(v) if v else None for k, v in part.items()}, **common)
            for key, part in parts.items()}


def reranked_items(c: Candidates, weight: float, *, exclude_history: bool = False,
                   prior_logp: torch.Tensor | None = None, prior_weight: float = 0.0) -> torch.Tensor:
    """Candidates [U, B] ordered by beam score + weight * item log-prob (weight 0: the beam's order), plus
    prior_weight * `prior_logp` [U, B] (an item-to-item prior's log-prob of each candidate,
    `CooccurrencePrior.candidate_log_probs`), history items removed (-1) with `exclude_history`."""
    items = c.items
    if prior_weight and prior_logp is None:
        raise ValueError("prior_weight > 0 needs the candidates' prior log-probs (prior_logp)")
    weight = weight if c.item_logp is not None else 0.0
    if weight or prior_weight:
        score = combined_scores(c.items, c.beam_scores, c.item_logp, weight, prior_logp, prior_weight)
        items = c.items.gather(1, score.argsort(dim=1, descending=True, stable=True))
    if exclude_history:
        if c.history_items is None:
            raise ValueError("these candidates were collected without history items; collect them again")
        items = items.masked_fill(in_history(items, c.history_items), -1)  # hit_ranks skips padding: later move up
    return items


def with_cold_slots(items: torch.Tensor, cold_top: torch.Tensor, slots: int, *, k: int = 10,
                    history_items: torch.Tensor | None = None) -> torch.Tensor:
    """A ranked list [U, K'] whose positions k-slots .. k-1 hold the best `slots` cold items by item-level score
    (`Candidates.cold_top`; history items and items already listed above are skipped): a generator that never
    emits an item added after training still shows some, at the price of its own lowest slots in the top k."""
    if slots <= 0:
        return items
    head, tail = items[:, : k - slots], items[:, k - slots:]
    cold = cold_top.masked_fill(in_history(cold_top, head), -1)
    if history_items is not None:
        cold = cold.masked_fill(in_history(cold, history_items), -1)
    # the first `slots` remaining cold items per row, in score order (stable sort puts -1 gaps last)
    order = (cold < 0).long().argsort(dim=1, stable=True)
    picked = cold.gather(1, order)[:, :slots]
    tail = tail.masked_fill(in_history(tail, picked), -1)
    return torch.cat([head, picked, tail], dim=1)


def ranks(c: Candidates, weight: float = 0.0, *, exclude_history: bool = False,
          prior_logp: torch.Tensor | None = None, prior_weight: float = 0.0) -> torch.Tensor:
    """0-based rank [U] of each user's target after re-ranking with `weight` (the prior's `prior_weight`, and the
    no-repeat rule); -1 when not among the candidates. Equal to `hit_ranks(reranked_items(...), c.targets)`, counted
    without sorting: a selection sweep calls this hundreds of times on [22k, 120] candidates."""
    if not _unique_candidates(c.items):  # the count below assumes each item once per row: hit_ranks de-duplicates
        return hit_ranks(reranked_items(c, weight, exclude_history=exclude_history, prior_logp=prior_logp,
                                        prior_weight=prior_weight), c.targets)
    if prior_weight and prior_logp is None:
        raise ValueError("prior_weight > 0 needs the candidates' prior log-probs (prior_logp)")
    if exclude_history and c.history_items is None:
        raise ValueError("these candidates were collected without history items; collect them again")
    listed = c.items >= 0
    if exclude_history:  # history items leave the list (hit_ranks skips them): those behind move up
        listed &= ~in_history(c.items, c.history_items)
    is_target = (c.items == c.targets.unsqueeze(1)) & listed
    position = torch.arange(c.items.shape[1], device=c.items.device)
    target_pos = is_target.long().argmax(1, keepdim=True)  # [U, 1]; any column when the target is not listed
    before = position < target_pos
    weight = weight if c.item_logp is not None else 0.0
    if weight or prior_weight:  # the stable descending sort of reranked_items: higher scores, then earlier ties
        score = combined_scores(c.items, c.beam_scores, c.item_logp, weight, prior_logp, prior_weight)
        target_score = score.gather(1, target_pos)
        before = (score > target_score) | ((score == target_score) & before)
    rank = (before & listed).sum(1)
    return torch.where(is_target.any(1), rank, torch.full_like(rank, -1))


def _unique_candidates(items: torch.Tensor) -> bool:
    """True when no row of `items` [U, K] lists an item (>= 0) twice (a search's candidates never do)."""
    ordered = items.sort(dim=1).values
    return not bool(((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)).any())


def metrics_from_ranks(rank: torch.Tensor, ks: Sequence[int] = (5, 10)) -> dict[str, float]:
    """Recall@K / NDCG@K (one relevant item per user) from 0-based ranks (-1 = miss)."""
    out = {}
    for k in ks:
        out[f"recall@{k}"] = float(((rank >= 0) & (rank < k)).float().mean())
        out[f"ndcg@{k}"] = float(ndcg_per_user(rank, k).mean())
    return out


def ndcg_per_user(rank: torch.Tensor, k: int = 10) -> torch.Tensor:
    """Per-user NDCG@k [U] from 0-based ranks (the quantity a paired bootstrap resamples)."""
    hit = (rank >= 0) & (rank < k)
    return torch.where(hit, 1.0 / torch.log2(rank.float() + 2), torch.zeros(()))


def paired_bootstrap(a: torch.Tensor, b: torch.Tensor, *, samples: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mean of a - b over users with a 95% percentile CI from resampling users (the same users for both)."""
    if a.shape != b.shape:
        raise ValueError(f"paired bootstrap needs the same users: {tuple(a.shape)} vs {tuple(b.shape)}")
    diff = (a - b).double()
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(diff), (samples, len(diff)), generator=g)
    means = diff[idx].mean(1)
    lo, hi = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return {"mean_diff": float(diff.mean()), "ci95": [lo, hi], "samples": samples, "users": len(diff)}


def valid_curve(stage_dir, *, tag: str = "val/ndcg@10") -> list[dict]:
    """[{"step", "val_ndcg@10", "wall_s"}] of a fit's TensorBoard events under `<stage_dir>/lightning_logs/`, wall time
    counted from its first logged training step (the quality-per-CPU-minute curve)."""
    import glob
    from pathlib import Path

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    points = []
    for path in sorted(glob.glob(str(Path(stage_dir) / "lightning_logs" / "version_*" / "events*"))):
        events = EventAccumulator(path)
        events.Reload()
        scalars = events.Tags()["scalars"]
        if tag not in scalars or "train/loss" not in scalars:
            continue
        start = events.Scalars("train/loss")[0].wall_time
        points += [{"step": e.step, tag.replace("/", "_"): round(e.value, 4), "wall_s": round(e.wall_time - start)}
                   for e in events.Scalars(tag)]
    return points
