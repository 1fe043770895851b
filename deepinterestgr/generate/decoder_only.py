"""Decoder-only alternative: a GPT-2 (transformers) reading history items, then decoding the next item's SID.

Sequence per user: H history positions (one per item, as in the T5 generator), START, then SID tokens; the logits
at START and at each SID token predict the following token. No KV cache: S is 4, so re-running the short
sequence per step is simpler than reordering caches across beams.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from deepinterestgr.generate.base import Generator
from deepinterestgr.generate.t5 import HistoryItemEmbedding
from deepinterestgr.generate.tokenizer import START


class PrefixState(NamedTuple):
    history_embeds: torch.Tensor  # [B, H, d]
    mask: torch.Tensor  # [B, H] long


class DecoderOnlySIDGenerator(Generator):
    """GPT-2 decoder over [history items | START | SID tokens]."""

    def __init__(
        self,
        *,
        d_model: int = 128,
        num_layers: int = 4,
        num_heads: int = 4,
        d_ff: int = 512,
        dropout: float = 0.1,
        max_positions: int = 64,
        item_buckets: int = 0,
        vocab_size: int | None = None,
        sid_length: int | None = None,
    ) -> None:
        super().__init__()
        self.arch = dict(n_embd=d_model, n_layer=num_layers, n_head=num_heads, n_inner=d_ff,
                         resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout)
        self.max_positions = max_positions
        self.item_buckets = item_buckets  # see HistoryItemEmbedding
        self._build_if_sized(vocab_size, sid_length)

    def build(self, *, vocab_size: int, sid_length: int) -> None:
        super().build(vocab_size=vocab_size, sid_length=sid_length)
        if self.is_built:
            return
        config = GPT2Config(vocab_size=vocab_size, n_positions=self.max_positions + sid_length + 1,
                            bos_token_id=START, eos_token_id=START, tie_word_embeddings=True, use_cache=False,
                            **self.arch)
        self.gpt = GPT2LMHeadModel(config)
        self.history_embedding = HistoryItemEmbedding(self.gpt.transformer.wte, max_positions=self.max_positions,
                                                      item_buckets=self.item_buckets)
        self.vocab_size, self.sid_length = vocab_size, sid_length

    def encode(self, history: torch.Tensor, history_mask: torch.Tensor) -> PrefixState:
        if not self.is_built:
            raise RuntimeError("DecoderOnlySIDGenerator is not built: call build(vocab_size=..., sid_length=...)")
        return PrefixState(self.history_embedding(history), history_mask.long())

    def repeat_state(self, state: PrefixState, n: int) -> PrefixState:
        return PrefixState(state.history_embeds.repeat_interleave(n, 0), state.mask.repeat_interleave(n, 0))

    def _logits(self, state: PrefixState, tokens: torch.Tensor) -> torch.Tensor:
        """Logits at START and every token of `tokens` [B, t] -> [B, t+1, V]."""
        b, h = state.mask.shape
        start = tokens.new_full((b, 1), START)
        token_embeds = self.gpt.transformer.wte(torch.cat([start, tokens], dim=1))
        embeds = torch.cat([state.history_embeds, token_embeds], dim=1)
        mask = torch.cat([state.mask, state.mask.new_ones(b, token_embeds.shape[1])], dim=1)
        out = self.gpt(inputs_embeds=embeds, attention_mask=mask, use_cache=False)
        return out.logits[:, h:]

    def forward(self, history: torch.Tensor, history_mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self._logits(self.encode(history, history_mask), target[:, :-1])

    def next_token_logits(self, state: PrefixState, prefix: torch.Tensor) -> torch.Tensor:
        return self._logits(state, prefix)[:, -1]
