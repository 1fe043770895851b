"""Item-level re-ranking of constrained-beam candidates (LIGER-style): generation proposes, item vectors decide.

A beam's score is the sum of its SID tokens' log-probabilities; items that share their codes are told apart only by
the last levels. A generator with item-level scores (`Generator.has_item_scores`) also gives every catalog item a
log-probability `log softmax(user · item)`; the final score of a candidate is

    beam score + weight · item log-probability

so `weight = 0` is plain generative retrieval, and the candidate set is always the beam's (no item outside the
constrained search is ever returned).
"""

from __future__ import annotations

import torch

from deepinterestgr.generate.base import Generator
from deepinterestgr.generate.search import SearchResult


def item_log_probs(generator: Generator, item_tokens: torch.Tensor, history: torch.Tensor,
                   history_mask: torch.Tensor) -> torch.Tensor:
    """Log-softmax [B, N] over the whole catalog of `user_vectors @ item_vectors(item_tokens).T`."""
    users = generator.user_vectors(history, history_mask).float()
    return torch.log_softmax(users @ generator.item_vectors(item_tokens).float().T, dim=-1)


def rerank(result: SearchResult, item_logp: torch.Tensor, weight: float) -> SearchResult:
    """`result`'s candidates sorted by beam score + weight * item log-prob [B, N]; padding beams (item -1) stay last."""
    if weight == 0:
        return result
    present = result.items >= 0
    extra = item_logp.gather(1, result.items.clamp(min=0))
    scores = torch.where(present, result.scores + weight * extra, torch.full_like(result.scores, float("-inf")))
    scores, order = scores.sort(dim=1, descending=True, stable=True)
    tokens = result.tokens.gather(1, order.unsqueeze(-1).expand_as(result.tokens))
    return SearchResult(tokens, scores, result.items.gather(1, order))


def exclude_items(result: SearchResult, items: torch.Tensor) -> SearchResult:
    """`result` with every candidate that is in `items` [B, H] (a user's history item ids, -1 = none) moved behind
    the others with score -inf: the "never recommend what the user already has" rule, order otherwise kept."""
    seen = (result.items.unsqueeze(-1) == items.unsqueeze(1)).any(-1) & (result.items >= 0)
    scores = result.scores.masked_fill(seen, float("-inf"))
    order = scores.argsort(dim=1, descending=True, stable=True)
    tokens = result.tokens.gather(1, order.unsqueeze(-1).expand_as(result.tokens))
    return SearchResult(tokens, scores.gather(1, order), result.items.gather(1, order).masked_fill(
        seen.gather(1, order), -1))
