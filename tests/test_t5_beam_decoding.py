"""The inference decoder of T5SIDGenerator (t5_beam_decoding) against transformers' own T5 decoder."""

import pytest
import torch

from deepinterestgr.generate.t5 import EncoderState, T5Decoding, T5SIDGenerator
from deepinterestgr.generate.t5_beam_decoding import BeamDecoding
from deepinterestgr.generate.testing import random_sid_table
from deepinterestgr.generate.tokenizer import SIDTokenizer


def _setup(rows_per_user: int, **arch):
    torch.manual_seed(0)
    tok = SIDTokenizer(random_sid_table(num_items=60, num_levels=3, codebook_size=7))
    gen = T5SIDGenerator(d_model=32, num_layers=2, num_decoder_layers=3, num_heads=2, d_kv=8, d_ff=48, dropout=0.3,
                         vocab_size=tok.vocab_size, sid_length=tok.sid_length, **arch).eval()
    hist = torch.randint(0, 60, (4, 6))
    hist[0, :5] = -1  # one history item
    hist[2, :2] = -1
    enc = tok.encode_history(hist)
    state = gen.repeat_state(gen.encode(enc.tokens, enc.mask), rows_per_user)
    return tok, gen, state, enc


def _decode(gen: T5SIDGenerator, state: EncoderState, tokens: torch.Tensor, parents: torch.Tensor):
    """Run S steps feeding `tokens[:, t]` after reordering rows by `parents[:, t]`; logits of every step."""
    decoding = gen.start_decoding(state, tokens.new_zeros(tokens.shape[0], 0))
    out = []
    for t in range(tokens.shape[1]):
        logits, decoding = gen.decode_step(decoding)
        out.append(logits)
        decoding = gen.extend_decoding(decoding, parents[:, t], tokens[:, t])
    return decoding, torch.stack(out, 1)


@pytest.mark.parametrize("rows_per_user", [1, 5])
def test_fast_decoding_equals_transformers_decoder_with_reordered_beams(rows_per_user):
    tok, gen, state, _ = _setup(rows_per_user)
    n = state.rows
    tokens = tok.item_tokens[torch.randint(0, 60, (n,))]
    # beams jump between rows of the same user, as beam search reorders them
    user = torch.arange(n) // rows_per_user
    parents = user.unsqueeze(1) * rows_per_user + torch.randint(0, rows_per_user, (n, tokens.shape[1]))
    with torch.no_grad():
        fast_state, fast = _decode(gen, state, tokens, parents)
        gen.fast_decoding_applies = lambda: False  # the transformers cache path
        slow_state, slow = _decode(gen, state, tokens, parents)
    assert isinstance(fast_state, BeamDecoding) and isinstance(slow_state, T5Decoding)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)


def test_fast_decoding_matches_teacher_forced_forward():
    tok, gen, state, enc = _setup(1)
    target = tok.item_tokens[torch.tensor([3, 17, 42, 59])]
    with torch.no_grad():
        _, fast = _decode(gen, state, target, torch.arange(4).unsqueeze(1).expand_as(target))
        forced = gen(enc.tokens, enc.mask, target)
    torch.testing.assert_close(fast, forced, rtol=1e-5, atol=1e-5)


def test_training_mode_and_gradients_keep_the_transformers_path():
    _, gen, state, _ = _setup(2)
    empty = torch.zeros(state.rows, 0, dtype=torch.long)
    with torch.no_grad():
        assert isinstance(gen.start_decoding(state, empty), BeamDecoding)
        gen.train()
        assert isinstance(gen.start_decoding(state, empty), T5Decoding)  # dropout applies while training
    gen.eval()
    assert isinstance(gen.start_decoding(state, empty), T5Decoding)  # gradients need the autograd-tracked path


def test_fast_decoding_runs_under_bf16_autocast():
    """bf16-mixed evaluation: projections run in bf16, the cache and biases follow them."""
    from deepinterestgr.generate.search import constrained_beam_search
    from deepinterestgr.generate.trie import SIDTrie

    tok, gen, _, enc = _setup(1)
    trie = SIDTrie.from_tokenizer(tok)
    fp32 = constrained_beam_search(gen, trie, enc.tokens, enc.mask, beam_size=6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = constrained_beam_search(gen, trie, enc.tokens, enc.mask, beam_size=6)
    assert (bf16.items >= 0).all() and torch.isfinite(bf16.scores).all()
    assert (bf16.items[:, 0] == fp32.items[:, 0]).float().mean() >= 0.5  # bf16 rounding may swap close beams
