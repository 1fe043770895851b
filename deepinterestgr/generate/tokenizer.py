"""SID tokenizer: every item's Semantic ID as exactly S = L + 1 tokens from one global vocabulary.

Vocabulary layout (token ids are contiguous ranges, so "which level is this token" is one comparison):

    0                        PAD (never a SID token; padding of history rows)
    1                        START (decoder start; the T5 convention of a fixed first decoder input)
    [off_l, off_l + C)       level l = 0..L-1 semantic code c -> off_l + c        (C = codebook size)
    off_L                    END: "this item has no suffix" (its L codes are unique)
    [off_L + 1, off_L + 1 + k) suffix code j -> off_L + 1 + j                      (k = table.num_suffix)
    [user_offset, + U)       optional hashed user tokens (TIGER), U = num_user_buckets

Every item emits a token at the suffix position (END when it has no suffix), so SIDs are fixed-size tensors and the
prefix trie and beam search never deal with ragged lengths.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import NamedTuple

import torch

from deepinterestgr.quantize.sid import NO_SUFFIX, SIDTable

PAD = 0
START = 1
NUM_SPECIAL = 2
#: code returned by `tokens_to_codes` for a token outside its level's range (only unconstrained sampling emits those)
INVALID_CODE = -2


class EncodedHistory(NamedTuple):
    tokens: torch.Tensor  # [B, H, S] long, PAD rows where no item
    mask: torch.Tensor  # [B, H] bool, True where a history row is present


class SIDTokenizer:
    """Maps items <-> SID tokens for one SID table. Stateless after construction; all maps are vectorised."""

    def __init__(self, table: SIDTable, *, num_user_buckets: int = 0) -> None:
        if table.num_items == 0:
            raise ValueError("SIDTokenizer: the SID table is empty; rerun the `quantize` stage")
        if num_user_buckets < 0:
            raise ValueError(f"num_user_buckets must be >= 0, got {num_user_buckets}")
        table.check_unique()
        self.table = table
        self.num_levels = table.num_levels
        self.sid_length = table.num_levels + 1
        self.codebook_size = table.codebook_size
        self.num_suffix = table.num_suffix
        self.num_user_buckets = num_user_buckets
        # first token id of each of the S levels, and each level's vocabulary size
        sizes = [self.codebook_size] * self.num_levels + [self.num_suffix + 1]
        offsets = [NUM_SPECIAL]
        for s in sizes[:-1]:
            offsets.append(offsets[-1] + s)
        self.level_sizes = torch.tensor(sizes, dtype=torch.long)
        self.level_offsets = torch.tensor(offsets, dtype=torch.long)
        self.end_token = offsets[-1]
        self.user_offset = offsets[-1] + sizes[-1]
        self.vocab_size = self.user_offset + num_user_buckets

        codes = table.codes
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ValueError(f"SID table codes must lie in [0, {self.codebook_size}); "
                             f"got [{int(codes.min())}, {int(codes.max())}]")
        suffix_local = torch.where(table.suffix == NO_SUFFIX, torch.zeros_like(table.suffix), table.suffix + 1)
        local = torch.cat([codes, suffix_local[:, None]], dim=1)
        self.item_tokens = local + self.level_offsets  # [N, S]
        # mixed-radix key of each SID -> item id, for vectorised tokens -> item lookups
        strides = torch.ones(self.sid_length, dtype=torch.long)
        for i in range(self.sid_length - 2, -1, -1):
            strides[i] = strides[i + 1] * sizes[i + 1]
        self._strides = strides
        keys = (local * strides).sum(-1)
        self._sorted_keys, order = torch.sort(keys)
        self._sorted_items = order

    @property
    def num_items(self) -> int:
        return self.table.num_items

    def state(self) -> dict:
        """What `from_state` needs to rebuild this tokenizer (stored in generator checkpoints)."""
        return {"codes": self.table.codes.clone(), "suffix": self.table.suffix.clone(),
                "codebook_size": self.codebook_size, "num_user_buckets": self.num_user_buckets}

    @classmethod
    def from_state(cls, state: dict) -> "SIDTokenizer":
        table = SIDTable(state["codes"], state["suffix"], int(state["codebook_size"]))
        return cls(table, num_user_buckets=int(state["num_user_buckets"]))

    # --------------------------------------------------------------------------------------- tokens <-> items
    def _local(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-level local indices of `tokens` [..., S] and a mask of tokens inside their level's range."""
        if tokens.shape[-1] != self.sid_length:
            raise ValueError(f"expected SID tokens [..., {self.sid_length}], got {tuple(tokens.shape)}")
        offsets, sizes = self.level_offsets.to(tokens.device), self.level_sizes.to(tokens.device)
        local = tokens.long() - offsets
        return local, (local >= 0) & (local < sizes)

    def tokens_to_items(self, tokens: torch.Tensor) -> torch.Tensor:
        """Item ids [...] of SID tokens [..., S]; -1 where the tokens are not a catalog SID."""
        local, ok = self._local(tokens)
        keys = (local.clamp(min=0) * self._strides.to(tokens.device)).sum(-1)
        sorted_keys = self._sorted_keys.to(tokens.device)
        pos = torch.searchsorted(sorted_keys, keys).clamp(max=len(sorted_keys) - 1)
        found = (sorted_keys[pos] == keys) & ok.all(-1)
        return torch.where(found, self._sorted_items.to(tokens.device)[pos], torch.full_like(keys, -1))

    def tokens_to_codes(self, tokens: torch.Tensor) -> torch.Tensor:
        """Codes [..., L+1] (SIDTable.full() layout): suffix NO_SUFFIX for END, INVALID_CODE for out-of-level tokens."""
        local, ok = self._local(tokens)
        codes = local.clone()
        codes[..., -1] = local[..., -1] - 1  # END (local 0) -> NO_SUFFIX (-1), suffix j+1 -> j
        return torch.where(ok, codes, torch.full_like(codes, INVALID_CODE))

    def items_to_tokens(self, items: torch.Tensor) -> torch.Tensor:
        """SID tokens [..., S] of item ids [...]; item -1 gives a PAD row."""
        items = items.long()
        table = self.item_tokens.to(items.device)
        toks = table[items.clamp(min=0)]
        return torch.where((items >= 0).unsqueeze(-1), toks, torch.zeros_like(toks))

    # --------------------------------------------------------------------------------------- model inputs
    def user_bucket(self, user: str) -> int:
        """Hashed user bucket (stable across processes: crc32, not Python's salted hash)."""
        if not self.num_user_buckets:
            raise ValueError("user tokens are disabled (num_user_buckets=0)")
        return zlib.crc32(user.encode("utf-8")) % self.num_user_buckets

    def history_rows(self, max_history: int) -> int:
        """Rows H of an encoded history: the item slots plus the user-token slot when enabled."""
        return max_history + (1 if self.num_user_buckets else 0)

    def encode_history(
        self, histories: torch.Tensor, *, user_buckets: torch.Tensor | None = None
    ) -> EncodedHistory:
        """Encoder input from item-id histories [B, max_history] (right-aligned, -1 = no item).

        The most recent item sits in the last row, so a row index is a recency position for every user. With user
        tokens enabled, row 0 is `[USER_b, PAD, ...]`: a user is one more encoder position, like a history item.
        """
        tokens = self.items_to_tokens(histories)
        mask = histories >= 0
        if self.num_user_buckets:
            if user_buckets is None:
                raise ValueError("user tokens are enabled: pass user_buckets [B]")
            user_row = torch.zeros(tokens.shape[0], 1, self.sid_length, dtype=torch.long, device=tokens.device)
            user_row[:, 0, 0] = self.user_offset + user_buckets.long()
            tokens = torch.cat([user_row, tokens], dim=1)
            mask = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)
        return EncodedHistory(tokens, mask)

    def encode_user_histories(self, histories: Sequence[Sequence[int]], *, max_history: int,
                              users: Sequence[str] | None = None) -> EncodedHistory:
        """Convenience for ragged Python lists: keep the last `max_history` items of each, right-aligned."""
        ids = torch.full((len(histories), max_history), -1, dtype=torch.long)
        for row, h in enumerate(histories):
            h = list(h)[-max_history:]
            if h:
                ids[row, max_history - len(h):] = torch.tensor(h, dtype=torch.long)
        buckets = None
        if self.num_user_buckets:
            if users is None:
                raise ValueError("user tokens are enabled: pass users")
            buckets = torch.tensor([self.user_bucket(u) for u in users], dtype=torch.long)
        return self.encode_history(ids, user_buckets=buckets)
