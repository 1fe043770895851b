"""SID tokenizer: fixed-length SIDs with END for unsuffixed items, vectorised round trips, user tokens."""

from __future__ import annotations

import pytest
import torch

from deepinterestgr.generate.testing import random_sid_table
from deepinterestgr.generate.tokenizer import INVALID_CODE, NUM_SPECIAL, PAD, SIDTokenizer
from deepinterestgr.quantize.sid import NO_SUFFIX, assign_sids


@pytest.fixture
def table():
    # items 0 and 2 collide on (1, 2); item 1 and 3 are unique
    return assign_sids(torch.tensor([[1, 2], [0, 3], [1, 2], [3, 3]]), codebook_size=4)


def test_layout_and_end_token(table):
    tok = SIDTokenizer(table)
    assert tok.sid_length == 3 and tok.num_suffix == 2
    assert tok.vocab_size == NUM_SPECIAL + 4 + 4 + (2 + 1)
    rows = tok.item_tokens.tolist()
    assert rows[0] == [NUM_SPECIAL + 1, NUM_SPECIAL + 4 + 2, tok.end_token + 1]  # suffix 0 -> END + 1
    assert rows[2][-1] == tok.end_token + 2
    assert rows[1][-1] == tok.end_token and rows[3][-1] == tok.end_token  # unique codes emit END
    assert PAD not in tok.item_tokens


def test_round_trips(table):
    tok = SIDTokenizer(table)
    items = torch.tensor([[0, 1], [2, 3]])
    tokens = tok.items_to_tokens(items)
    assert torch.equal(tok.tokens_to_items(tokens), items)
    assert torch.equal(tok.tokens_to_codes(tok.item_tokens), table.full())
    assert (tok.tokens_to_codes(tok.item_tokens)[[1, 3], -1] == NO_SUFFIX).all()


def test_large_random_table_round_trip():
    table = random_sid_table(num_items=3000, num_levels=3, codebook_size=16, seed=3)
    tok = SIDTokenizer(table)
    assert torch.equal(tok.tokens_to_items(tok.item_tokens), torch.arange(3000))
    assert torch.equal(tok.tokens_to_codes(tok.item_tokens), table.full())


def test_non_catalog_tokens_map_to_minus_one(table):
    tok = SIDTokenizer(table)
    bad = tok.item_tokens[1].clone()
    bad[-1] = tok.end_token + 1  # (0, 3) has no suffix 0
    assert tok.tokens_to_items(bad[None]).tolist() == [-1]
    shifted = tok.item_tokens[1].clone()
    shifted[0] = shifted[1]  # a level-1 token in the level-0 slot
    assert tok.tokens_to_items(shifted[None]).tolist() == [-1]
    assert tok.tokens_to_codes(shifted)[0] == INVALID_CODE
    assert tok.tokens_to_items(torch.zeros(1, 3, dtype=torch.long)).tolist() == [-1]


def test_history_encoding_right_aligned_and_user_tokens(table):
    tok = SIDTokenizer(table, num_user_buckets=7)
    enc = tok.encode_user_histories([[0, 1, 2, 3], [2]], max_history=3, users=["alice", "bob"])
    assert enc.tokens.shape == (2, 4, 3)
    assert enc.mask.tolist() == [[True, True, True, True], [True, False, False, True]]
    assert torch.equal(enc.tokens[0, 1:], tok.item_tokens[[1, 2, 3]])  # the last 3 items, oldest first
    assert (enc.tokens[1, 1:3] == PAD).all() and torch.equal(enc.tokens[1, 3], tok.item_tokens[2])
    assert enc.tokens[0, 0, 0] == tok.user_offset + tok.user_bucket("alice") and (enc.tokens[:, 0, 1:] == PAD).all()
    assert tok.user_bucket("alice") == SIDTokenizer(table, num_user_buckets=7).user_bucket("alice")  # stable hash


def test_state_round_trip(table):
    tok = SIDTokenizer(table, num_user_buckets=3)
    again = SIDTokenizer.from_state(tok.state())
    assert torch.equal(again.item_tokens, tok.item_tokens) and again.vocab_size == tok.vocab_size


def test_rejects_out_of_range_codes():
    from deepinterestgr.quantize.sid import SIDTable

    with pytest.raises(ValueError, match="codes must lie"):
        SIDTokenizer(SIDTable(torch.tensor([[0, 9]]), torch.tensor([-1]), 4))
