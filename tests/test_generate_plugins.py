"""Every registered generator plugin (built-in or third-party) passes the same contract checks."""

from __future__ import annotations

import pytest

from deepinterestgr.generate.testing import check_generator_contract, random_sid_table
from deepinterestgr.generate.tokenizer import SIDTokenizer
from deepinterestgr.registry import get_registry

# small enough for one core: every built-in accepts these architecture arguments
TINY = dict(d_model=32, num_layers=1, num_heads=2, d_ff=32, dropout=0.0)


def _specs():
    return get_registry().specs("generator")


def test_builtins_registered():
    names = {s.name for s in _specs()}
    assert {"t5", "gpt"} <= names


@pytest.mark.parametrize("spec", _specs(), ids=lambda s: s.name)
@pytest.mark.parametrize("user_buckets,item_buckets", [(0, 0), (5, 0), (0, 64)])
def test_generator_contract(spec, user_buckets, item_buckets):
    import inspect

    params = inspect.signature(spec.cls).parameters
    kwargs = {k: v for k, v in TINY.items() if k in params}
    if "num_decoder_layers" in params:
        kwargs["num_decoder_layers"] = 1
    if "d_kv" in params:
        kwargs["d_kv"] = 8
    if item_buckets:
        kwargs["item_buckets"] = item_buckets
    tok = SIDTokenizer(random_sid_table(num_items=60, num_levels=3, codebook_size=4), num_user_buckets=user_buckets)
    check_generator_contract(spec.cls(**kwargs), tok)


def test_rebuilding_with_other_sizes_is_refused():
    from deepinterestgr.generate.t5 import T5SIDGenerator

    g = T5SIDGenerator(d_model=16, num_layers=1, num_decoder_layers=1, num_heads=2, d_kv=8, d_ff=16,
                       vocab_size=20, sid_length=3)
    g.build(vocab_size=20, sid_length=3)
    with pytest.raises(ValueError, match="SID table changed"):
        g.build(vocab_size=21, sid_length=3)


def test_item_identity_embedding_separates_items_that_share_codes():
    import torch

    from deepinterestgr.generate.t5 import HistoryItemEmbedding

    codes = torch.nn.Embedding(12, 8)
    # items 0 and 1 share their first two codes; a PAD row stays empty
    history = torch.tensor([[[2, 5, 9, 11], [2, 5, 10, 11], [0, 0, 0, 0]]])
    plain = HistoryItemEmbedding(codes, max_positions=4)
    hashed = HistoryItemEmbedding(codes, max_positions=4, item_buckets=4096)
    rows = hashed.hash_rows(history[0, :2])
    assert rows.shape == (2, 2) and not torch.equal(rows[0], rows[1])
    assert torch.equal(hashed.hash_rows(history[0, :2]), rows), "hashing must be deterministic"
    with torch.no_grad():
        hashed.recency.weight.copy_(plain.recency.weight)
        extra = hashed(history) - plain(history)
    assert torch.allclose(extra[0, 2], torch.zeros(8)), "a PAD row must not get an item vector"
    expected = hashed.item_hash(rows).sum(-2)
    torch.testing.assert_close(extra[0, :2], expected)
    with pytest.raises(ValueError, match="item_buckets"):
        HistoryItemEmbedding(codes, max_positions=4, item_buckets=-1)
