"""Reusable checks for generator plugins (third-party generators get them through the contract test) and tiny
run directories for tests and examples."""

from __future__ import annotations

import random
from pathlib import Path

import torch

from deepinterestgr.artifacts import atomic_write_jsonl
from deepinterestgr.generate.base import Generator
from deepinterestgr.generate.search import constrained_beam_search, constrained_sample
from deepinterestgr.generate.tokenizer import SIDTokenizer
from deepinterestgr.generate.trie import SIDTrie
from deepinterestgr.quantize.sid import SIDTable, assign_sids


def random_sid_table(*, num_items: int, num_levels: int = 3, codebook_size: int = 8, seed: int = 0) -> SIDTable:
    """Random codes (collisions included, as a quantizer gives) -> SID table with suffixes."""
    g = torch.Generator().manual_seed(seed)
    return assign_sids(torch.randint(0, codebook_size, (num_items, num_levels), generator=g),
                       codebook_size=codebook_size)


def write_tiny_run(
    run_dir: str | Path, *, num_items: int = 40, num_users: int = 30, num_levels: int = 3, codebook_size: int = 6,
    min_len: int = 3, max_len: int = 12, seed: int = 0,
) -> Path:
    """A run directory with `data/sequences.jsonl` and `quantize/sid_table.*`: users walk item chains (i -> i+1),
    so a generator can learn the pattern in a few steps."""
    run_dir = Path(run_dir)
    rng = random.Random(seed)
    rows = []
    for u in range(num_users):
        n = rng.randint(min_len, max_len)
        start = rng.randrange(num_items)
        rows.append({"user": f"u{u}", "items": [(start + j) % num_items for j in range(n)],
                     "timestamps": list(range(n))})
    atomic_write_jsonl(run_dir / "data" / "sequences.jsonl", rows)
    random_sid_table(num_items=num_items, num_levels=num_levels, codebook_size=codebook_size,
                     seed=seed).save(run_dir / "quantize")
    return run_dir


def check_generator_contract(generator: Generator, tokenizer: SIDTokenizer, *, batch: int = 3, rows: int = 5) -> None:
    """Shapes, finiteness, consistency of `forward` with step-wise decoding, repeat_state order, constrained search."""
    generator.build(vocab_size=tokenizer.vocab_size, sid_length=tokenizer.sid_length)
    generator.eval()
    g = torch.Generator().manual_seed(0)
    items = torch.randint(0, tokenizer.num_items, (batch, rows), generator=g)
    items[0, :2] = -1  # a padded history
    enc = tokenizer.encode_history(items) if not tokenizer.num_user_buckets else tokenizer.encode_history(
        items, user_buckets=torch.zeros(batch, dtype=torch.long))
    target = tokenizer.items_to_tokens(torch.randint(0, tokenizer.num_items, (batch,), generator=g))
    s, v = tokenizer.sid_length, tokenizer.vocab_size
    with torch.no_grad():
        logits = generator(enc.tokens, enc.mask, target)
        assert logits.shape == (batch, s, v), f"forward logits {tuple(logits.shape)} != {(batch, s, v)}"
        assert torch.isfinite(logits).all(), "forward produced non-finite logits"
        state = generator.encode(enc.tokens, enc.mask)
        for t in range(s):
            step = generator.next_token_logits(state, target[:, :t])
            assert torch.allclose(step, logits[:, t], atol=1e-4, rtol=1e-4), f"step {t} logits differ from forward"
        rep = generator.repeat_state(state, 2)
        step = generator.next_token_logits(rep, target.repeat_interleave(2, 0)[:, :1])
        assert torch.allclose(step[::2], step[1::2], atol=1e-5), "repeat_state must repeat each row consecutively"
        assert torch.allclose(step[::2], logits[:, 1], atol=1e-4, rtol=1e-4)
        lo, hi = int(tokenizer.level_offsets[0]), int(tokenizer.level_offsets[0] + tokenizer.level_sizes[0])
        full, _ = generator.decode_step(generator.start_decoding(state, enc.tokens.new_zeros(batch, 0)))
        window, _ = generator.decode_step_window(generator.start_decoding(state, enc.tokens.new_zeros(batch, 0)),
                                                 lo, hi)
        assert torch.allclose(window, full[:, lo:hi], atol=1e-5), "decode_step_window must be decode_step's slice"
    trie = SIDTrie.from_tokenizer(tokenizer)
    k = min(4, tokenizer.num_items)
    res = constrained_beam_search(generator, trie, enc.tokens, enc.mask, beam_size=k)
    assert res.tokens.shape == (batch, k, s) and res.items.shape == (batch, k)
    assert (res.items >= 0).all() and (tokenizer.tokens_to_items(res.tokens) == res.items).all()
    assert (res.scores[:, :-1] >= res.scores[:, 1:]).all(), "beam scores must be sorted"
    seq = generator.sequence_log_probs(enc.tokens.repeat_interleave(k, 0), enc.mask.repeat_interleave(k, 0),
                                       res.tokens.flatten(0, 1)).sum(-1).view(batch, k)
    assert torch.allclose(seq, res.scores, atol=1e-3), "beam scores must be the model's sum of log-probs"
    smp = constrained_sample(generator, trie, enc.tokens, enc.mask, num_samples=3,
                             generator_rng=torch.Generator().manual_seed(1))
    assert (smp.items >= 0).all() and trie.contains(smp.tokens).all()
