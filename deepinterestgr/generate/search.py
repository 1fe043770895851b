"""Constrained decoding over the batch x beam tensor: exact beam search and sampling that only emit catalog SIDs.

Scores follow transformers' `prefix_allowed_tokens_fn`: log-softmax over the full vocabulary, then disallowed tokens
set to -inf, so a beam's score is the model's sum of log-probabilities of its SID. With `renormalize=True` (as
`generate(..., renormalize_logits=True)`) each step's log-softmax runs over the allowed tokens only: the scores of a
model trained on catalog-normalised targets (`GeneratorModule(renormalize=True)`). Nothing here can prune a beam
(no top-k/top-p/temperature in beam search), and an empty allowed set raises instead of decoding unconstrained.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from einops import rearrange

from deepinterestgr.generate.base import Generator
from deepinterestgr.generate.trie import DEAD, SIDTrie


class SearchResult(NamedTuple):
    tokens: torch.Tensor  # [B, K, S] long, SID tokens (PAD = 0 in padding beams)
    scores: torch.Tensor  # [B, K] float, sum of log-probs; -inf for padding beams; sorted descending for beam search
    items: torch.Tensor  # [B, K] long, item ids; -1 for padding beams


def allowed_log_softmax(logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """log-softmax over the allowed entries of the last dim; -inf elsewhere, and everywhere in rows with none
    allowed."""
    x = logits.float().masked_fill(~allowed, float("-inf"))
    lse = torch.logsumexp(x, dim=-1, keepdim=True)
    return x - torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))


def sid_log_probs(generator: Generator, trie: SIDTrie, history: torch.Tensor, history_mask: torch.Tensor,
                  tokens: torch.Tensor, *, renormalize: bool = False) -> torch.Tensor:
    """Teacher-forced per-token log-probs [B, S] of SIDs `tokens`, normalised as search scores them (differentiable).

    With `renormalize`, rows that are not catalog SIDs (padding beams) get 0: callers mask them out.
    """
    if not renormalize:
        return generator.sequence_log_probs(history, history_mask, tokens)
    logits = generator(history, history_mask, tokens).float()
    allowed = trie.path_masks(tokens, strict=False)
    # finfo.min, not -inf: a row with nothing allowed must keep finite gradients
    x = logits.masked_fill(~allowed, torch.finfo(logits.dtype).min)
    logp = torch.log_softmax(x, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    on_path = allowed.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return torch.where(on_path, logp, torch.zeros_like(logp))


@torch.no_grad()
def score_sids(generator: Generator, trie: SIDTrie, state: Any, tokens: torch.Tensor, *,
               renormalize: bool = False) -> torch.Tensor:
    """Beam scores [B, M] of M given catalog SIDs per user (`tokens` [B, M, S]), for B users whose `encode` gave
    `state`: the sum of their tokens' log-probs exactly as `constrained_beam_search` scores a beam (with
    `renormalize`, each step's softmax over the tokens that continue the prefix in the catalog), through the same
    incremental decoding. Candidates that did not come from a search (an item-level top-M) become comparable with the
    beam's own."""
    b, m, s = tokens.shape
    depth = _check_depth(generator, trie)
    flat = tokens.reshape(b * m, s)
    total = torch.zeros(b * m, device=flat.device)
    if not flat.numel():
        return total.view(b, m)
    decoding = generator.start_decoding(generator.repeat_state(state, m), flat.new_zeros(b * m, 0))
    allowed = trie.path_masks(flat, strict=False) if renormalize else None
    rows = torch.arange(b * m, device=flat.device)
    for t in range(depth):
        if renormalize:
            lo, hi = trie.token_window(t)  # as the search: only the level's own tokens are scored
            step_allowed = allowed[:, t, lo:hi]
            if bool((step_allowed.sum(-1) <= 1).all()):
                continue  # a forced step (one continuation): renormalised log-prob 0, no model call, as the search
            logits, decoding = generator.decode_step_window(decoding, lo, hi)
            logp = allowed_log_softmax(logits, step_allowed)
        else:
            lo = 0
            logits, decoding = generator.decode_step(decoding)
            logp = torch.log_softmax(logits.float(), dim=-1)
        total += logp.gather(1, (flat[:, t: t + 1] - lo).clamp(min=0)).squeeze(1)
        if t + 1 < depth:
            decoding = generator.extend_decoding(decoding, rows, flat[:, t])
    return total.view(b, m)


def _check_depth(generator: Generator, trie: SIDTrie) -> int:
    depth = trie.depth
    if getattr(generator, "sid_length", depth) != depth:
        raise ValueError(f"generator decodes {generator.sid_length} tokens per SID but the trie has depth {depth}")
    return depth


@torch.no_grad()
def constrained_beam_search(
    generator: Generator, trie: SIDTrie, history: torch.Tensor, history_mask: torch.Tensor, *, beam_size: int = 20,
    renormalize: bool = False, state: Any = None,
) -> SearchResult:
    """Top-`beam_size` catalog SIDs per user by exact (width-K) beam search.

    `state`: what `generator.encode(history, history_mask)` returned, when the caller needs it too (else encoded here).

    Where a prefix has fewer continuations than K, the missing beams are padding (-inf score, DEAD node) and are
    replaced as soon as real candidates exist; items are -1 only when fewer than K catalog SIDs exist in total.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    depth = _check_depth(generator, trie)
    b, k = history.shape[0], beam_size
    state = generator.repeat_state(generator.encode(history, history_mask) if state is None else state, k)
    decoding = generator.start_decoding(state, history.new_zeros(b * k, 0))
    row_base = (torch.arange(b, device=history.device) * k).unsqueeze(1)  # first row of each user's beams

    tokens = history.new_zeros(b, k, 0)
    scores, nodes = history.new_zeros(b, 1, dtype=torch.float), trie.root((b, 1))
    for t in range(depth):
        # catalog-renormalised scores need only the level's tokens (its own range of the vocabulary)
        window = trie.token_window(t) if renormalize else (0, trie.vocab_size)
        if renormalize and t == depth - 1 and _forced(trie, t, nodes):
            # every beam has one continuation (the suffix level of a collision-free table: END), whose
            # renormalised probability is 1: the model call would change no score
            logits = None
        else:
            logits, decoding = (generator.decode_step_window(decoding, *window) if renormalize
                                else generator.decode_step(decoding))
            if t == 0:  # all K beams of a user share the empty prefix: expand one of them (else one SID fills K)
                logits = rearrange(logits, "(b k) v -> b k v", k=k)[:, 0]
        scores, parent, tok, nodes = _expand(trie, t, nodes, scores, logits, window[0], k, renormalize)
        tokens = torch.cat([tokens.gather(1, parent.unsqueeze(-1).expand(-1, -1, t)), tok.unsqueeze(-1)], dim=-1)
        if t + 1 < depth:
            decoding = generator.extend_decoding(decoding, (row_base + parent).reshape(-1), tok.reshape(-1))

    dead = nodes == DEAD
    tokens = tokens.masked_fill(dead.unsqueeze(-1), 0)
    return SearchResult(tokens, scores, trie.items_of_leaves(nodes))


def _forced(trie: SIDTrie, level: int, nodes: torch.Tensor) -> bool:
    """Whether no beam has a choice at `level`: at most one continuation each."""
    ptr = trie.levels[level].ptr
    safe = nodes.clamp(min=0)
    return bool((((ptr[safe + 1] - ptr[safe]) <= 1) | (nodes == DEAD)).all())


def _expand(trie: SIDTrie, level: int, nodes: torch.Tensor, scores: torch.Tensor, logits: torch.Tensor | None,
            first_token: int, k: int, renormalize: bool) -> tuple[torch.Tensor, ...]:
    """One beam-search level over the trie's edges only: `nodes` / `scores` [B, R] are the live prefixes (DEAD
    for padding beams) and `logits` [B * R, V] their next-token logits, column j for token `first_token + j` (the
    whole vocabulary, or with `renormalize` the level's window; None: each prefix has one continuation, of
    renormalised probability 1). A level offers about R x (children per prefix) candidates per user, a small
    share of R x codebook (Beauty: ~1.3 children per prefix at level 2 of 256), so masks over the codebook cost
    more than the ranking. Returns the top-k (scores [B, k] descending, parent index into R, token, child node);
    DEAD / -inf where a user has fewer than k candidates. Candidates are ordered (parent, token), as a dense
    [R, codebook] layout would be."""
    b, r = nodes.shape
    lvl = trie.levels[level]
    rows, edge = trie.edges(level, nodes.reshape(-1))
    if not len(rows):  # no live prefix at all: only padding beams
        zeros = nodes.new_zeros(b, k)
        return scores.new_full((b, k), float("-inf")), zeros, zeros, torch.full_like(zeros, DEAD)
    take = torch.Tensor.index_select  # 1-d gathers: several times faster than `x[idx]` on CPU
    tokens = take(lvl.child_token, 0, edge)
    if logits is None:
        logp = torch.zeros(len(rows), device=nodes.device)
    else:
        logits = logits.float()
        picked = take(logits.reshape(-1), 0, rows * logits.shape[-1] + tokens - first_token)
        if renormalize:  # log-softmax over each prefix's allowed tokens
            n = b * r
            top = torch.full((n,), float("-inf"), device=nodes.device).scatter_reduce(0, rows, picked, "amax")
            total = torch.zeros(n, device=nodes.device).index_add_(0, rows, torch.exp(picked - take(top, 0, rows)))
            logp = picked - take(top + torch.log(total), 0, rows)
        else:  # normalised over the whole vocabulary
            logp = picked - take(torch.logsumexp(logits, dim=-1), 0, rows)
    cand = take(scores.reshape(-1), 0, rows) + logp
    # per-user candidate lists, padded to the longest, then top-k per user
    user = torch.div(rows, r, rounding_mode="floor")
    per_user = torch.bincount(user, minlength=b)
    first = torch.cumsum(per_user, 0) - per_user
    dense = cand.new_full((b, int(per_user.max())), float("-inf"))
    dense.view(-1).index_put_((user * dense.shape[1] + torch.arange(len(rows), device=nodes.device)
                               - take(first, 0, user),), cand)
    top_scores, idx = _topk_padded(dense, k)
    chosen = (first.unsqueeze(1) + idx).clamp(max=len(rows) - 1).reshape(-1)
    live = torch.isfinite(top_scores)
    parent = take(rows, 0, chosen).view(b, k) - torch.arange(b, device=nodes.device).unsqueeze(1) * r
    child = take(lvl.child_node, 0, take(edge, 0, chosen)).view(b, k)
    return (top_scores, torch.where(live, parent, 0), torch.where(live, take(tokens, 0, chosen).view(b, k), 0),
            torch.where(live, child, DEAD))


def _topk_padded(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """topk along the last dim that tolerates k > width (pads with -inf scores and index 0)."""
    width = x.shape[-1]
    vals, idx = torch.topk(x, min(k, width), dim=-1)
    if k > width:
        pad = k - width
        vals = torch.cat([vals, vals.new_full((*vals.shape[:-1], pad), float("-inf"))], dim=-1)
        idx = torch.cat([idx, idx.new_zeros((*idx.shape[:-1], pad))], dim=-1)
    return vals, idx


@torch.no_grad()
def constrained_sample(
    generator: Generator,
    trie: SIDTrie,
    history: torch.Tensor,
    history_mask: torch.Tensor,
    *,
    num_samples: int,
    temperature: float = 1.0,
    generator_rng: torch.Generator | None = None,
    renormalize: bool = False,
) -> SearchResult:
    """`num_samples` SIDs per user sampled token by token from the model restricted to catalog SIDs.

    Sampling uses softmax(logits / temperature) renormalised over the allowed tokens; `scores` are the model's
    temperature-free sum of log-probs of each sample (full-vocabulary, or allowed-token with `renormalize`),
    comparable with beam-search scores.
    Samples are in draw order (not sorted) and may repeat, as GRPO groups need.
    """
    if num_samples < 1 or temperature <= 0:
        raise ValueError(f"need num_samples >= 1 and temperature > 0, got {num_samples}, {temperature}")
    depth = _check_depth(generator, trie)
    b, n = history.shape[0], num_samples
    state = generator.repeat_state(generator.encode(history, history_mask), n)
    decoding = generator.start_decoding(state, history.new_zeros(b * n, 0))
    rows = torch.arange(b * n, device=history.device)
    nodes = trie.root((b * n,))
    tokens = history.new_zeros(b * n, 0)
    scores = torch.zeros(b * n, device=history.device)
    for t in range(depth):
        allowed = trie.allowed_mask(t, nodes)
        if not bool(allowed.any(-1).all()):
            raise RuntimeError(f"constrained_sample: empty allowed set at step {t}")
        if renormalize and t == depth - 1 and _forced(trie, t, nodes):
            tok = allowed.long().argmax(-1)  # the only continuation, renormalised probability 1 (see beam search)
        else:
            logits, decoding = generator.decode_step(decoding)
            logits = logits.float()
            logp = allowed_log_softmax(logits, allowed) if renormalize else torch.log_softmax(logits, dim=-1)
            probs = torch.softmax((logits / temperature).masked_fill(~allowed, float("-inf")), dim=-1)
            tok = torch.multinomial(probs, 1, generator=generator_rng).squeeze(-1)
            scores = scores + logp.gather(-1, tok.unsqueeze(-1)).squeeze(-1)
        nodes = trie.step(t, nodes, tok)
        tokens = torch.cat([tokens, tok.unsqueeze(-1)], dim=-1)
        if t + 1 < depth:
            decoding = generator.extend_decoding(decoding, rows, tok)
    per_user = "(b n) ... -> b n ..."
    return SearchResult(rearrange(tokens, per_user, b=b), rearrange(scores, per_user, b=b),
                        rearrange(trie.items_of_leaves(nodes), per_user, b=b))
