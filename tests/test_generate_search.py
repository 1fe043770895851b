"""Constrained beam search and sampling: only catalog SIDs, exact scores, same result as transformers' generate."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepinterestgr.generate.base import Generator
from deepinterestgr.generate.reference import hf_constrained_beam_search
from deepinterestgr.generate.search import constrained_beam_search, constrained_sample, sid_log_probs
from deepinterestgr.generate.t5 import T5SIDGenerator
from deepinterestgr.generate.testing import random_sid_table
from deepinterestgr.generate.tokenizer import SIDTokenizer
from deepinterestgr.generate.trie import DEAD, SIDTrie
from deepinterestgr.quantize.sid import assign_sids


class RandomTableGenerator(Generator):
    """A model with arbitrary (seeded) next-token distributions depending on the user and the whole prefix."""

    def __init__(self, *, vocab_size: int, sid_length: int, seed: int, scale: float = 3.0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.vocab_size, self.sid_length = vocab_size, sid_length
        self.token_table = torch.randn(sid_length + 1, vocab_size, vocab_size, generator=g) * scale
        self.user_table = torch.randn(vocab_size, vocab_size, generator=g) * scale

    def encode(self, history, history_mask):
        return (history[:, :, 0] * history_mask).sum(1) % self.vocab_size

    def repeat_state(self, state, n):
        return state.repeat_interleave(n, 0)

    def next_token_logits(self, state, prefix):
        logits = self.user_table[state].clone()
        for t in range(prefix.shape[1]):
            logits += self.token_table[t, prefix[:, t]] / (t + 1)
        return logits

    def forward(self, history, history_mask, target):
        state = self.encode(history, history_mask)
        return torch.stack([self.next_token_logits(state, target[:, :t]) for t in range(self.sid_length)], 1)


def _setup(num_items, levels, codebook, seed, batch=3):
    tok = SIDTokenizer(random_sid_table(num_items=num_items, num_levels=levels, codebook_size=codebook, seed=seed))
    gen = RandomTableGenerator(vocab_size=tok.vocab_size, sid_length=tok.sid_length, seed=seed)
    hist = torch.randint(0, num_items, (batch, 4), generator=torch.Generator().manual_seed(seed))
    enc = tok.encode_history(hist)
    return tok, gen, SIDTrie.from_tokenizer(tok), enc


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(num_items=st.integers(1, 60), levels=st.integers(1, 3), codebook=st.integers(2, 6),
       beam=st.integers(1, 25), seed=st.integers(0, 10_000))
def test_beam_search_only_emits_catalog_sids(num_items, levels, codebook, beam, seed):
    tok, gen, trie, enc = _setup(num_items, levels, codebook, seed)
    res = constrained_beam_search(gen, trie, enc.tokens, enc.mask, beam_size=beam)
    live = res.items >= 0
    assert (live.sum(1) == min(beam, num_items)).all()  # padding beams only when the catalog is smaller than K
    assert torch.isfinite(res.scores[live]).all() and torch.isinf(res.scores[~live]).all()
    assert torch.equal(tok.tokens_to_items(res.tokens)[live], res.items[live])
    assert trie.contains(res.tokens[live]).all()
    for row in res.items.tolist():  # distinct SIDs per user
        real = [i for i in row if i >= 0]
        assert len(real) == len(set(real))
    assert (res.scores[:, :-1] >= res.scores[:, 1:]).all()


@settings(max_examples=25, deadline=None)
@given(num_items=st.integers(1, 30), levels=st.integers(1, 3), seed=st.integers(0, 10_000))
def test_beam_wider_than_catalog_is_exhaustive(num_items, levels, seed):
    tok, gen, trie, enc = _setup(num_items, levels, 4, seed)
    res = constrained_beam_search(gen, trie, enc.tokens, enc.mask, beam_size=num_items + 3)
    b = enc.tokens.shape[0]
    every = tok.item_tokens.unsqueeze(0).expand(b, -1, -1)
    exact = gen.sequence_log_probs(enc.tokens.repeat_interleave(num_items, 0), enc.mask.repeat_interleave(num_items, 0),
                                   every.reshape(-1, tok.sid_length)).sum(-1).view(b, num_items)
    expected_scores, expected_items = exact.sort(dim=1, descending=True)
    assert torch.allclose(res.scores[:, :num_items], expected_scores, atol=1e-4)
    assert (res.items[:, num_items:] == -1).all()
    for r in range(b):  # same item set (order may differ only between exactly tied scores)
        assert sorted(res.items[r, :num_items].tolist()) == sorted(expected_items[r].tolist())


@settings(max_examples=25, deadline=None)
@given(num_items=st.integers(1, 40), levels=st.integers(1, 3), seed=st.integers(0, 10_000),
       temperature=st.sampled_from([0.3, 1.0, 5.0]))
def test_sampling_only_emits_catalog_sids(num_items, levels, seed, temperature):
    tok, gen, trie, enc = _setup(num_items, levels, 3, seed)
    res = constrained_sample(gen, trie, enc.tokens, enc.mask, num_samples=8, temperature=temperature,
                             generator_rng=torch.Generator().manual_seed(seed))
    assert (res.items >= 0).all() and torch.equal(tok.tokens_to_items(res.tokens), res.items)
    exact = gen.sequence_log_probs(enc.tokens.repeat_interleave(8, 0), enc.mask.repeat_interleave(8, 0),
                                   res.tokens.flatten(0, 1)).sum(-1).view_as(res.scores)
    assert torch.allclose(res.scores, exact, atol=1e-4)


def test_sampling_is_reproducible_with_a_seeded_rng():
    tok, gen, trie, enc = _setup(40, 3, 3, 5)
    a = constrained_sample(gen, trie, enc.tokens, enc.mask, num_samples=6,
                           generator_rng=torch.Generator().manual_seed(9))
    b = constrained_sample(gen, trie, enc.tokens, enc.mask, num_samples=6,
                           generator_rng=torch.Generator().manual_seed(9))
    assert torch.equal(a.items, b.items)


@pytest.mark.parametrize("renormalize", [False, True])
def test_matches_transformers_generate_reference(renormalize):
    torch.manual_seed(0)
    tok = SIDTokenizer(random_sid_table(num_items=300, num_levels=3, codebook_size=8, seed=2))
    gen = T5SIDGenerator(d_model=32, num_layers=2, num_decoder_layers=2, num_heads=2, d_kv=16, d_ff=64, dropout=0.0,
                         vocab_size=tok.vocab_size, sid_length=tok.sid_length).eval()
    hist = torch.randint(0, 300, (6, 7), generator=torch.Generator().manual_seed(1))
    hist[0, :5] = -1
    enc = tok.encode_history(hist)
    trie = SIDTrie.from_tokenizer(tok)
    ours = constrained_beam_search(gen, trie, enc.tokens, enc.mask, beam_size=12, renormalize=renormalize)
    ref = hf_constrained_beam_search(gen, tok, enc.tokens, enc.mask, beam_size=12, renormalize=renormalize)
    assert torch.equal(ours.items, ref.items)
    assert torch.allclose(ours.scores, ref.scores, atol=1e-4)
    assert (ours.items >= 0).all()
    # the teacher-forced log-probs of the found SIDs are their search scores
    b, k, s = ours.tokens.shape
    per_token = sid_log_probs(gen, trie, enc.tokens.repeat_interleave(k, 0), enc.mask.repeat_interleave(k, 0),
                              ours.tokens.flatten(0, 1), renormalize=renormalize)
    assert torch.allclose(per_token.sum(-1).view(b, k), ours.scores, atol=1e-4)


def test_renormalized_scores_are_a_distribution_over_the_catalog():
    """With renormalize, exp(scores) over every catalog SID sums to 1 per user (each step sums to 1 over allowed)."""
    tok, gen, trie, enc = _setup(30, 2, 3, 4)
    everything = constrained_beam_search(gen, trie, enc.tokens, enc.mask, beam_size=30, renormalize=True)
    assert (everything.items >= 0).all()
    torch.testing.assert_close(everything.scores.exp().sum(-1), torch.ones(len(enc.tokens)), rtol=1e-5, atol=1e-5)
    plain = constrained_beam_search(gen, trie, enc.tokens, enc.mask, beam_size=30)
    assert (plain.scores.exp().sum(-1) < 1).all()  # vocabulary-normalised: mass is lost on non-catalog tokens


def test_sid_log_probs_gives_padding_rows_zero_and_finite_gradients():
    tok, _, trie, enc = _setup(20, 2, 3, 0)
    gen = T5SIDGenerator(d_model=16, num_layers=1, num_decoder_layers=1, num_heads=2, d_kv=8, d_ff=16,
                         vocab_size=tok.vocab_size, sid_length=tok.sid_length)
    tokens = torch.stack([tok.item_tokens[3], torch.zeros_like(tok.item_tokens[3])])  # a catalog SID, a padding beam
    logp = sid_log_probs(gen, trie, enc.tokens[:2], enc.mask[:2], tokens, renormalize=True)
    assert (logp[0] < 0).any() and torch.equal(logp[1], torch.zeros_like(logp[1]))
    logp.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in gen.parameters() if p.grad is not None)


def test_empty_allowed_set_is_an_error_not_an_unconstrained_step():
    tok, gen, trie, enc = _setup(20, 2, 3, 0)
    lvl = trie.levels[1]
    lvl.ptr[1:] = lvl.ptr[-1]  # node 0 at level 1 loses every child
    with pytest.raises(RuntimeError, match="no allowed continuation"):
        constrained_beam_search(gen, trie, enc.tokens, enc.mask, beam_size=20)


def test_trie_rejects_duplicate_sids_and_walks_steps():
    with pytest.raises(ValueError, match="not unique"):
        SIDTrie.from_item_tokens(torch.tensor([[2, 3], [2, 3]]), vocab_size=5)
    trie = SIDTrie.from_item_tokens(torch.tensor([[2, 3], [2, 4], [1, 3]]), vocab_size=5)
    root = trie.root((1,))
    assert trie.allowed_mask(0, root)[0].nonzero().flatten().tolist() == [1, 2]
    node = trie.step(0, root, torch.tensor([2]))
    assert trie.allowed_mask(1, node)[0].nonzero().flatten().tolist() == [3, 4]
    assert trie.step(0, root, torch.tensor([3])).item() == DEAD
    assert trie.items_of_leaves(trie.step(1, node, torch.tensor([4]))).tolist() == [1]
    assert trie.contains(torch.tensor([[1, 3], [1, 4]])).tolist() == [True, False]


@pytest.mark.parametrize("search", ["beam", "sample"])
def test_renormalized_search_skips_a_forced_last_step(search):
    """Collision-free SIDs: the suffix level is always END, probability 1 after renormalisation, so no model call."""
    torch.manual_seed(0)
    codes = torch.stack(torch.meshgrid(torch.arange(4), torch.arange(3), torch.arange(5), indexing="ij"),
                        -1).view(-1, 3)
    tok = SIDTokenizer(assign_sids(codes, codebook_size=5))
    assert tok.num_suffix == 0
    gen = T5SIDGenerator(d_model=32, num_layers=2, num_decoder_layers=2, num_heads=2, d_kv=16, d_ff=64, dropout=0.0,
                         vocab_size=tok.vocab_size, sid_length=tok.sid_length).eval()
    calls = []
    step, window_step = gen.decode_step, gen.decode_step_window
    gen.decode_step = lambda decoding: (calls.append(1), step(decoding))[1]
    gen.decode_step_window = lambda decoding, lo, hi: (calls.append(1), window_step(decoding, lo, hi))[1]
    enc = tok.encode_history(torch.randint(0, len(codes), (5, 6), generator=torch.Generator().manual_seed(1)))
    trie = SIDTrie.from_tokenizer(tok)
    if search == "beam":
        ours = constrained_beam_search(gen, trie, enc.tokens, enc.mask, beam_size=12, renormalize=True)
        ref = hf_constrained_beam_search(gen, tok, enc.tokens, enc.mask, beam_size=12, renormalize=True)
        assert torch.equal(ours.items, ref.items)
        assert torch.allclose(ours.scores, ref.scores, atol=1e-4)
    else:
        ours = constrained_sample(gen, trie, enc.tokens, enc.mask, num_samples=4, renormalize=True,
                                  generator_rng=torch.Generator().manual_seed(3))
        assert trie.contains(ours.tokens).all() and (ours.tokens[..., -1] == tok.end_token).all()
        k = ours.tokens.shape[1]
        per_token = sid_log_probs(gen, trie, enc.tokens.repeat_interleave(k, 0), enc.mask.repeat_interleave(k, 0),
                                  ours.tokens.flatten(0, 1), renormalize=True)
        assert torch.allclose(per_token.sum(-1).view_as(ours.scores), ours.scores, atol=1e-5)
    assert len(calls) == tok.sid_length - 1
