"""One ranker for the generate and rl stages: SID tokenizer + trie, constrained beam search with the optional
item-level re-ranking and no-repeat rule, Recall/NDCG@K with catalog-diversity counters, test outputs, and the
default checkpoint callbacks.

`GeneratorModule` and `PolicyModule` both compose a `Ranker`, so a policy ranks exactly as the generator it started
from (same beam, same re-ranking weight, same no-repeat rule) and both write the same `metrics_test.json` fields.
"""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path
from typing import NamedTuple

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from deepinterestgr.artifacts import atomic_write_json, atomic_write_jsonl
from deepinterestgr.generate.base import Generator
from deepinterestgr.generate.metrics import retrieval_collection
from deepinterestgr.generate.prior import CooccurrencePrior
from deepinterestgr.generate.rerank import (
    catalog_log_probs,
    exclude_items,
    item_log_probs,
    rerank,
    with_dense_candidates,
    without_items,
)
from deepinterestgr.generate.search import SearchResult, constrained_beam_search
from deepinterestgr.generate.tokenizer import SIDTokenizer
from deepinterestgr.generate.trie import SIDTrie

log = logging.getLogger(__name__)


class CandidateSets(NamedTuple):
    results: dict[tuple[int, int], SearchResult]  # (dense M, prior P) -> the joined candidates, beam-score order
    item_logp: torch.Tensor | None  # [B, N] item-level log-probs of the whole catalog (None when not asked)
    prior_logp: torch.Tensor | None  # [B, N] the item prior's log-probs (None when not asked)


#: what a checkpoint records of the ranking it was evaluated with (a policy started from it ranks the same way)
RANKING_KEY = "ranking"


def sid_table_hash(tokenizer: SIDTokenizer) -> str:
    """SHA-256 of the SID table a model was trained on (codes, suffixes, codebook size, user buckets)."""
    h = hashlib.sha256()
    h.update(tokenizer.table.codes.to(torch.int64).contiguous().numpy().tobytes())
    h.update(tokenizer.table.suffix.to(torch.int64).contiguous().numpy().tobytes())
    h.update(f"{tokenizer.codebook_size}/{tokenizer.num_user_buckets}".encode())
    return h.hexdigest()


def check_ranking_options(beam_size: int, ks: tuple[int, ...], rerank_weight: float | None,
                          dense_candidates: int | None = 0) -> None:
    if dense_candidates is not None and dense_candidates < 0:
        raise ValueError(f"dense_candidates must be >= 0, got {dense_candidates}")
    if beam_size < max(ks):
        raise ValueError(f"beam_size {beam_size} < max(ks) {max(ks)}: @{max(ks)} metrics would rank fewer than "
                         f"{max(ks)} items; raise beam_size to at least {max(ks)}")
    if rerank_weight is not None and rerank_weight < 0:
        raise ValueError(f"rerank_weight must be >= 0, got {rerank_weight}")


def require_item_scores(generator: Generator, rerank_weight: float, what: str = "rerank_weight") -> None:
    if not getattr(generator, "has_item_scores", False):
        raise ValueError(f"{what} {rerank_weight} needs a generator with item-level scores; "
                         f"{type(generator).__name__} has none")


class Ranker(nn.Module):
    """Ranks the catalog for user histories with a generator and scores the ranking against targets.

    An `nn.Module` only so that Lightning moves its metric states with the LightningModule that holds it; it has no
    parameters. The tokenizer is attached later (`set_tokenizer`): it comes from the data or from a checkpoint.
    """

    def __init__(self, *, renormalize: bool = False, beam_size: int = 20, rerank_weight: float = 0.0,
                 exclude_history: bool = False, ks: tuple[int, ...] = (5, 10), dense_candidates: int = 0,
                 prior_weight: float = 0.0, prior_candidates: int = 0) -> None:
        super().__init__()
        check_ranking_options(beam_size, tuple(ks), rerank_weight, dense_candidates)
        if prior_weight < 0 or prior_candidates < 0:
            raise ValueError(f"prior_weight and prior_candidates must be >= 0, got {prior_weight}, {prior_candidates}")
        self.renormalize, self.beam_size = bool(renormalize), int(beam_size)
        self.dense_candidates, self.prior_weight = int(dense_candidates), float(prior_weight)
        self.prior_candidates = int(prior_candidates)
        #: the item-to-item prior of a hybrid ranking (`prior_weight` > 0): fitted by the module, or from a checkpoint
        self.prior: CooccurrencePrior | None = None
        self.rerank_weight, self.exclude_history, self.ks = float(rerank_weight), bool(exclude_history), tuple(ks)
        self.tokenizer: SIDTokenizer | None = None
        self._trie: SIDTrie | None = None
        self._item_tokens: torch.Tensor | None = None
        # compute groups off (retrieval_collection): they merged Recall@5/@10 and NDCG@5/@10 whenever the first batch
        # had no hit below rank 5, after which every @5 metric reported its @10 twin (seen on Beauty)
        self.val_metrics = retrieval_collection(self.ks, prefix="val/")
        self.test_metrics = retrieval_collection(self.ks, prefix="test/")
        self._top1: dict[str, torch.Tensor] = {}
        self._topk: dict[str, torch.Tensor] = {}
        self.test_rows: list[dict] = []

    def options(self) -> dict:
        return {"renormalize": self.renormalize, "beam_size": self.beam_size, "rerank_weight": self.rerank_weight,
                "exclude_history": self.exclude_history, "dense_candidates": self.dense_candidates,
                "prior_weight": self.prior_weight, "prior_candidates": self.prior_candidates}

    # ------------------------------------------------------------------------------------------------ tokens
    def set_tokenizer(self, tokenizer: SIDTokenizer) -> None:
        self.tokenizer = tokenizer
        self._trie = None
        self._item_tokens = None

    def _require_tokenizer(self) -> SIDTokenizer:
        if self.tokenizer is None:
            raise RuntimeError("the ranker has no SID tokenizer yet (it comes from the datamodule or a checkpoint)")
        return self.tokenizer

    def trie(self, device: torch.device) -> SIDTrie:
        if self._trie is None or self._trie.device != torch.device(device):
            self._trie = SIDTrie.from_tokenizer(self._require_tokenizer(), device=device)
        return self._trie

    def item_tokens(self, device: torch.device) -> torch.Tensor:
        """SID tokens [N, S] of every catalog item, on `device`."""
        if self._item_tokens is None or self._item_tokens.device != torch.device(device):
            self._item_tokens = self._require_tokenizer().item_tokens.to(device)
        return self._item_tokens

    def history_items(self, history: torch.Tensor, history_mask: torch.Tensor) -> torch.Tensor:
        """Item ids [B, H] of the history rows (-1 for padding and user-token rows)."""
        return self._require_tokenizer().tokens_to_items(history).masked_fill(~history_mask, -1)

    def item_vectors(self, generator: Generator, device: torch.device) -> torch.Tensor:
        """Item vectors [N, d] (float) of every catalog item under `generator`'s current weights."""
        require_item_scores(generator, self.rerank_weight)
        return generator.item_vectors(self.item_tokens(device)).float()

    @torch.no_grad()
    def item_log_probs(self, generator: Generator, history: torch.Tensor, history_mask: torch.Tensor) -> torch.Tensor:
        """Item-level log-probabilities [B, N] over the whole catalog (generators with item-level scores)."""
        return item_log_probs(generator, self.item_tokens(history.device), history, history_mask)

    # ------------------------------------------------------------------------------------------------ ranking
    def rank(self, generator: Generator, history: torch.Tensor, history_mask: torch.Tensor, *,
             beam_size: int | None = None, rerank_weight: float | None = None,
             exclude_history: bool | None = None, item_vectors: torch.Tensor | None = None,
             dense_candidates: int | None = None, prior_weight: float | None = None,
             prior_candidates: int | None = None) -> SearchResult:
        """Constrained beam search (SearchResult: tokens [B,K,S], scores [B,K], items [B,K]), joined by the item-level
        top-`dense_candidates` the beam missed (then [B, K + M]), re-ranked by item-level scores when the re-ranking
        weight is > 0 (and by the item-to-item prior when `prior_weight` is > 0, whose top-`prior_candidates` the
        candidates also join: a hybrid ranking) and without history items under the no-repeat rule (defaults: the
        ranker's own options).

        One encoder pass serves the search and the user vectors. `item_vectors` [N, d]: the catalog's item vectors
        when the caller keeps them (a server, whose weights do not change); else computed here.
        """
        weight = self.rerank_weight if rerank_weight is None else rerank_weight
        dense = self.dense_candidates if dense_candidates is None else dense_candidates
        if weight:
            require_item_scores(generator, weight)
        prior = self.prior_weight if prior_weight is None else prior_weight
        joined = self.prior_candidates if prior_candidates is None else prior_candidates
        sets = self.candidate_sets(generator, history, history_mask, beam_size=beam_size, joins=[(dense, joined)],
                                   item_vectors=item_vectors, item_scores=bool(weight), prior_scores=bool(prior))
        result = rerank(sets.results[dense, joined], sets.item_logp, weight, sets.prior_logp, prior)
        if self.exclude_history if exclude_history is None else exclude_history:
            result = exclude_items(result, self.history_items(history, history_mask))
        return result

    def candidate_sets(self, generator: Generator, history: torch.Tensor, history_mask: torch.Tensor, *,
                       beam_size: int | None = None, joins=((0, 0),), item_vectors: torch.Tensor | None = None,
                       item_scores: bool = False, prior_scores: bool = False) -> CandidateSets:
        """One encoder pass and one constrained beam search, joined for each (M, P) of `joins` by the item-level
        top-M the beam missed and then by the item prior's top-P non-history items still missing: the candidates
        `rank` re-ranks, in beam-score order, for several candidate settings at the price of one search (an offline
        sweep over them). With `item_scores` / `prior_scores` (or joins that need them), also the catalog's
        item-level / prior log-probs [B, N]."""
        joins = [(int(m), int(p)) for m, p in joins]
        for m, p in joins:
            if m < 0 or p < 0:
                raise ValueError(f"dense_candidates and prior_candidates must be >= 0, got {m}, {p}")
            if m:
                require_item_scores(generator, m, "dense_candidates")
        if (prior_scores or any(p for _, p in joins)) and (self.prior is None or not self.prior.fitted):
            asked = ", ".join(str(p) for _, p in joins)
            raise ValueError(f"a prior_weight > 0 or prior_candidates ({asked}) need a fitted item prior: configure "
                             "the generate stage's `model.init_args.prior` (configs/model/cooccurrence_prior.yaml) "
                             "or set both to 0")
        state = generator.encode(history, history_mask)
        trie = self.trie(history.device)
        searched = constrained_beam_search(generator, trie, history, history_mask,
                                           beam_size=beam_size or self.beam_size, renormalize=self.renormalize,
                                           state=state)
        item_logp = prior_logp = history_items = None
        if item_scores or any(m for m, _ in joins):
            if item_vectors is None:
                item_vectors = self.item_vectors(generator, history.device)
            users = generator.user_vectors_from_state(state, history, history_mask)
            item_logp = catalog_log_probs(users, item_vectors)
        if prior_scores or any(p for _, p in joins):
            history_items = self.history_items(history, history_mask)
            prior_logp = self.prior.log_probs(history_items, num_items=self._require_tokenizer().num_items)
        # the prior's top non-history items the beam missed: a symmetric count model's top is mostly the history
        # itself, which the no-repeat rule would drop
        prior_outside = without_items(prior_logp, history_items) if any(p for _, p in joins) else None
        item_tokens = self.item_tokens(history.device)
        dense_joined: dict[int, SearchResult] = {}
        results: dict[tuple[int, int], SearchResult] = {}
        for m, p in joins:
            if m not in dense_joined:
                dense_joined[m] = (with_dense_candidates(searched, generator, trie, state, item_logp, item_tokens, m,
                                                         renormalize=self.renormalize) if m else searched)
            results[m, p] = (with_dense_candidates(dense_joined[m], generator, trie, state, prior_outside,
                                                   item_tokens, p, renormalize=self.renormalize)
                             if p else dense_joined[m])
        return CandidateSets(results, item_logp, prior_logp)

    # ------------------------------------------------------------------------------------------------ metrics
    def update(self, split: str, result: SearchResult, targets: torch.Tensor) -> None:
        (self.val_metrics if split == "val" else self.test_metrics).update(result.items, targets)
        n = self._require_tokenizer().num_items
        top1, topk = result.items[:, 0], result.items[:, : max(self.ks)]
        if split not in self._top1:
            self._top1[split] = torch.zeros(n, dtype=torch.long, device=result.items.device)
            self._topk[split] = torch.zeros(n, dtype=torch.long, device=result.items.device)
        self._top1[split] += torch.bincount(top1[top1 >= 0], minlength=n)
        self._topk[split] += torch.bincount(topk[topk >= 0], minlength=n)

    def compute(self, split: str, strategy=None) -> dict[str, float]:
        """Recall/NDCG@K, distinct top-1 items, top-K catalog coverage and the number of users, summed over DDP
        ranks (`strategy.reduce`); resets the split's state."""
        metrics = self.val_metrics if split == "val" else self.test_metrics
        count = next(iter(metrics.values())).count.clone()
        values = {k: float(v) for k, v in metrics.compute().items()}
        metrics.reset()
        top1, topk = self._top1.pop(split, None), self._topk.pop(split, None)
        if strategy is not None:
            count = strategy.reduce(count, reduce_op="sum")
            if top1 is not None:
                top1, topk = strategy.reduce(top1, reduce_op="sum"), strategy.reduce(topk, reduce_op="sum")
        k = max(self.ks)
        if top1 is not None:
            values[f"{split}/distinct_top1"] = float((top1 > 0).sum())
            values[f"{split}/coverage@{k}"] = float((topk > 0).sum()) / self._require_tokenizer().num_items
        values[f"{split}/num_users"] = float(count)
        return values

    def log_validation(self, module, label: str) -> dict[str, float]:
        """Compute the validation split (summed over DDP ranks: equal on every rank), log it through `module` (the
        ranking metrics on the progress bar) and, outside the sanity check, one `label: metrics` line."""
        values = self.compute("val", module.trainer.strategy)
        ranking = {k: v for k, v in values.items() if "ndcg" in k or "recall" in k}
        module.log_dict(ranking, prog_bar=True)
        module.log_dict({k: v for k, v in values.items() if k not in ranking})
        if not module.trainer.sanity_checking:
            log.info("%s: %s", label, ", ".join(f"{k}={float(v):.4f}" for k, v in ranking.items()))
        return values

    def record_test_rows(self, batch: dict, result: SearchResult, users=None) -> None:
        """Per-user top-K items and scores, for `results_test.jsonl`."""
        for u, t, items, scores in zip(batch["user_index"].tolist(), batch["target_item"].tolist(),
                                       result.items.tolist(), result.scores.tolist()):
            user = users.users[u] if users is not None else str(u)
            scores = [x if math.isfinite(x) else None for x in scores]  # padding beams: strict JSON has no -inf
            self.test_rows.append({"user": user, "target": t, "items": items, "scores": scores})

    def write_test_outputs(self, out_dir: Path, values: dict, *, num_users: int | None, extra: dict,
                           is_global_zero: bool, rank_suffix: str = "") -> None:
        """`metrics_test.json` (metrics, ranking options, users evaluated, `extra`) and, when test rows were
        recorded, `results_test<rank>.jsonl`."""
        if is_global_zero:
            evaluated = int(values.pop("test/num_users"))
            atomic_write_json(out_dir / "metrics_test.json", {
                **values, **self.options(), "num_users": num_users, "num_users_evaluated": evaluated, **extra})
        if self.test_rows:
            atomic_write_jsonl(out_dir / f"results_test{rank_suffix}.jsonl", self.test_rows)
        self.test_rows = []


def user_configured_checkpoint(trainer) -> bool:
    """Whether the trainer config brings its own ModelCheckpoint on a metric (Lightning's default one monitors
    nothing): then the stages add none of theirs. A dirpath is no sign: on a resumed fit Lightning's default callback
    already has one, and taking it for the user's left the resumed fit without its best/last checkpoints."""
    return any(isinstance(c, ModelCheckpoint) and c.monitor for c in trainer.callbacks)


def best_and_last_checkpoints(dirpath: Path, monitor: str) -> list[ModelCheckpoint]:
    """`best.ckpt` on the validation metric (higher is better) and `last.ckpt` at every validation, without version
    suffixes. `last` is its own monitor-less callback: Lightning's `save_last=True` rewrites `last.ckpt` only when
    the best improves, so a fit interrupted after a plateau resumed from its last improvement, not its last step."""
    return [ModelCheckpoint(dirpath=dirpath, filename="best", monitor=monitor, mode="max", save_top_k=1,
                            enable_version_counter=False, auto_insert_metric_name=False),
            ModelCheckpoint(dirpath=dirpath, filename="last", save_top_k=1, enable_version_counter=False)]
