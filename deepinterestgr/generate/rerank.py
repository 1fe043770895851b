"""Item-level re-ranking of constrained-beam candidates (LIGER-style): generation proposes, item vectors decide.

A beam's score is the sum of its SID tokens' log-probabilities; items that share their codes are told apart only by
the last levels. A generator with item-level scores (`Generator.has_item_scores`) also gives every catalog item a
log-probability `log softmax(user · item)`; the final score of a candidate is

    beam score + weight · item log-probability

so `weight = 0` is plain generative retrieval. With an item-to-item prior (`deepinterestgr.generate.prior`, a hybrid
with the co-occurrence count model) the score gains `+ prior_weight · prior log-prob`. The candidate set is the
beam's, or with `dense_candidates` M the beam's joined by the item-level top-M (LIGER's union of generative and dense
retrieval): each joined item is scored by the generator's own SID log-probability (`search.score_sids`), so one
formula ranks both kinds.
"""

from __future__ import annotations

from typing import Any

import torch

from deepinterestgr.generate.base import Generator
from deepinterestgr.generate.search import SearchResult, score_sids
from deepinterestgr.generate.trie import SIDTrie


def item_log_probs(generator: Generator, item_tokens: torch.Tensor, history: torch.Tensor,
                   history_mask: torch.Tensor) -> torch.Tensor:
    """Log-softmax [B, N] over the whole catalog of `user_vectors @ item_vectors(item_tokens).T`."""
    return catalog_log_probs(generator.user_vectors(history, history_mask), generator.item_vectors(item_tokens))


def catalog_log_probs(user_vectors: torch.Tensor, item_vectors: torch.Tensor) -> torch.Tensor:
    """Log-softmax [B, N] over the catalog of `user_vectors [B, d] @ item_vectors [N, d].T`, in float."""
    return torch.log_softmax(user_vectors.float() @ item_vectors.float().T, dim=-1)


def combined_scores(items: torch.Tensor, beam_scores: torch.Tensor, candidate_logp: torch.Tensor | None,
                    weight: float, candidate_prior: torch.Tensor | None = None,
                    prior_weight: float = 0.0) -> torch.Tensor:
    """beam score + weight * item log-prob (+ prior_weight * prior log-prob, `deepinterestgr.generate.prior`) of each
    candidate [B, K]; -inf for padding beams (item -1)."""
    score = beam_scores
    if weight:
        score = score + weight * candidate_logp
    if prior_weight:
        score = score + prior_weight * candidate_prior
    return torch.where(items >= 0, score, torch.full_like(beam_scores, float("-inf")))


def in_history(items: torch.Tensor, history_items: torch.Tensor) -> torch.Tensor:
    """[B, K] True where candidate `items` [B, K] is one of the user's `history_items` [B, H] (-1 = none)."""
    return (items.unsqueeze(-1) == history_items.unsqueeze(1)).any(-1) & (items >= 0)


def rerank(result: SearchResult, item_logp: torch.Tensor | None, weight: float, prior_logp: torch.Tensor | None = None,
           prior_weight: float = 0.0) -> SearchResult:
    """`result`'s candidates sorted by beam score + weight * item log-prob [B, N] (+ prior_weight * prior log-prob
    [B, N]); padding beams (item -1) stay last."""
    if weight == 0 and prior_weight == 0:
        return result
    index = result.items.clamp(min=0)
    candidate_logp = item_logp.gather(1, index) if weight else None
    candidate_prior = prior_logp.gather(1, index) if prior_weight else None
    scores, order = combined_scores(result.items, result.scores, candidate_logp, weight, candidate_prior,
                                    prior_weight).sort(dim=1, descending=True, stable=True)
    tokens = result.tokens.gather(1, order.unsqueeze(-1).expand_as(result.tokens))
    return SearchResult(tokens, scores, result.items.gather(1, order))


def without_items(scores: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Catalog scores [B, N] with -inf at each row's `items` [B, H] (-1 = none): e.g. history items kept out of a
    top-M that the no-repeat rule would drop anyway."""
    # summed, not scattered: a padding entry (-1, clamped to column 0) must not overwrite a real item 0's mark
    hit = torch.zeros(scores.shape, dtype=torch.int32, device=scores.device).scatter_add_(
        1, items.clamp(min=0), (items >= 0).int())
    return scores.masked_fill(hit > 0, float("-inf"))


def exclude_items(result: SearchResult, items: torch.Tensor) -> SearchResult:
    """`result` with every candidate that is in `items` [B, H] (a user's history item ids, -1 = none) moved behind
    the others with score -inf: the "never recommend what the user already has" rule, order otherwise kept."""
    seen = in_history(result.items, items)
    scores = result.scores.masked_fill(seen, float("-inf"))
    order = scores.argsort(dim=1, descending=True, stable=True)
    tokens = result.tokens.gather(1, order.unsqueeze(-1).expand_as(result.tokens))
    return SearchResult(tokens, scores.gather(1, order), result.items.gather(1, order).masked_fill(
        seen.gather(1, order), -1))


def with_dense_candidates(result: SearchResult, generator: Generator, trie: SIDTrie, state: Any,
                          item_logp: torch.Tensor, item_tokens: torch.Tensor, m: int, *,
                          renormalize: bool = False) -> SearchResult:
    """`result` [B, K] joined by each user's top-`m` items by item log-prob `item_logp` [B, N] (or any catalog score,
    e.g. an item prior's) that the beam did not find, scored by the generator's SID log-prob under encoder `state`
    (as the search scores): [B, K + m], sorted by score (items the beam already holds become padding: item -1,
    score -inf)."""
    top = item_logp.topk(min(m, item_logp.shape[1]), dim=-1).indices  # [B, m]
    found = in_history(top, result.items)
    # the missed items first (in item-score order), and only as many columns as the row missing most: most of the
    # item-level top-M is usually in the beam already, and each scored column costs a decoder pass
    order = found.long().argsort(dim=1, stable=True)
    top, found = top.gather(1, order), found.gather(1, order)
    width = int((~found).sum(1).max()) if len(top) else 0
    scores = torch.full(top.shape, float("-inf"), device=top.device)
    tokens = item_tokens[top]  # [B, m, S]
    scores[:, :width] = score_sids(generator, trie, state, tokens[:, :width], renormalize=renormalize)
    scores = scores.masked_fill(found, float("-inf"))
    items = torch.cat([result.items, top.masked_fill(found, -1)], dim=1)
    tokens = torch.cat([result.tokens, tokens.masked_fill(found.unsqueeze(-1), 0)], dim=1)
    scores, order = torch.cat([result.scores, scores], dim=1).sort(dim=1, descending=True, stable=True)
    return SearchResult(tokens.gather(1, order.unsqueeze(-1).expand_as(tokens)), scores, items.gather(1, order))
