"""TIGER-style T5 generator with one encoder position per history item.

Each history item enters the encoder as ONE vector: the sum of its S code-token embeddings plus a learned recency
embedding (TIGER feeds S tokens per item; one position per item was measured ~8x faster per training step on 2 CPU
cores, and the decoder still predicts the next item's SID token by token).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from transformers import DynamicCache, EncoderDecoderCache, T5Config, T5ForConditionalGeneration

from deepinterestgr.generate.base import Generator
from deepinterestgr.generate.fast_dropout import use_fast_dropout
from deepinterestgr.generate.t5_beam_decoding import (
    BeamDecoding,
    beam_decode_step,
    extend_beam_decoding,
    start_beam_decoding,
)
from deepinterestgr.generate.tokenizer import PAD, START


class EncoderState(NamedTuple):
    """One row per user; `repeats` rows per user (beams, samples) are materialised only where a path needs them."""

    hidden: torch.Tensor  # [B0, H, d_model]
    mask: torch.Tensor  # [B0, H] long (1 = attend)
    cross_kv: tuple[tuple[torch.Tensor, torch.Tensor], ...]  # per decoder layer: cross-attn K, V [B0, heads, H, d_kv]
    repeats: int = 1  # decoding rows per user: B = B0 * repeats

    @property
    def rows(self) -> int:
        return self.hidden.shape[0] * self.repeats

    def repeated(self, x: torch.Tensor) -> torch.Tensor:
        return x.repeat_interleave(self.repeats, 0) if self.repeats > 1 else x

    def cross_cache(self) -> DynamicCache:
        """The cross-attention K/V as a transformers cache with B rows (one copy of the repeated tensors)."""
        cache = DynamicCache(list(self.cross_kv))
        if self.repeats > 1:
            cache.batch_repeat_interleave(self.repeats)
        return cache


class T5Decoding(NamedTuple):
    state: EncoderState
    self_cache: DynamicCache  # decoder self-attention K/V of the tokens fed so far (updated in place)
    cross_cache: DynamicCache  # built once per search: wrapping the K/V in a cache copies them
    next_input: torch.Tensor  # [B', 1] the token to feed at the next step


class HistoryItemEmbedding(nn.Module):
    """[B, H, S] SID tokens -> [B, H, d]: sum of the item's token embeddings + embedding of its recency.

    With `item_buckets > 0` each item also gets its own identity vector: the sum of two rows of a
    `[item_buckets, d]` table, picked by two independent hashes of its whole SID. Code embeddings are shared by
    every item with the same code, so alone they cannot memorise item-to-item transitions (what SASRec's item
    table and the co-occurrence baseline live on); two hashes make a shared pair of rows rare without the
    generator knowing the catalog size, and a cold item still gets a (hashed) vector.
    """

    _HASH_PRIME = 2_147_483_647  # 2^31 - 1: keys are reduced mod P first, so key * multiplier fits in int64
    _HASH_MULTIPLIERS = (1_000_003, 998_244_353)

    def __init__(self, token_embedding: nn.Embedding, *, max_positions: int, item_buckets: int = 0,
                 causal: bool = False) -> None:
        super().__init__()
        if item_buckets < 0:
            raise ValueError(f"item_buckets must be >= 0, got {item_buckets}")
        self.token_embedding = token_embedding
        # the position table: recency (rows from the newest) or, for a causal encoder, the ordinal from the oldest
        self.recency = nn.Embedding(max_positions, token_embedding.embedding_dim)
        self.max_positions = max_positions
        self.causal = causal
        self.item_buckets = item_buckets
        if item_buckets:
            self.item_hash = nn.Embedding(item_buckets, token_embedding.embedding_dim)
            nn.init.normal_(self.item_hash.weight, std=0.5)

    def sid_keys(self, tokens: torch.Tensor) -> torch.Tensor:
        """[..., S] SID tokens -> [...] one integer key per SID (mod 2^31 - 1), the input of both hashes."""
        vocab = self.token_embedding.num_embeddings
        key = torch.zeros(tokens.shape[:-1], dtype=torch.long, device=tokens.device)
        for s in range(tokens.shape[-1]):
            key = (key * vocab + tokens[..., s].long()) % self._HASH_PRIME
        return key

    def hash_rows(self, history: torch.Tensor) -> torch.Tensor:
        """[..., S] SID tokens -> [..., 2] rows of the item-identity table (one per hash)."""
        key = self.sid_keys(history)
        return torch.stack([(key * m) % self._HASH_PRIME % self.item_buckets for m in self._HASH_MULTIPLIERS], -1)

    def set_unseen_items(self, item_tokens: torch.Tensor | None) -> None:
        """SIDs [M, S] of items added after training (`dig items add`): their identity rows were never trained (the
        table starts at N(0, 0.5), larger than any code embedding), so these items get no identity vector and are
        represented by their codes alone, as every item is at the first step of training. None clears the set."""
        keys = None if item_tokens is None or not len(item_tokens) else torch.sort(self.sid_keys(item_tokens)).values
        self._unseen_keys = keys

    def identity_vectors(self, tokens: torch.Tensor) -> torch.Tensor:
        """[..., S] SID tokens -> [..., d] hashed identity vectors; zero for PAD rows and for unseen items."""
        keep = (tokens != PAD).any(-1, keepdim=True)
        unseen = getattr(self, "_unseen_keys", None)
        if unseen is not None:
            keep = keep & ~torch.isin(self.sid_keys(tokens), unseen.to(tokens.device)).unsqueeze(-1)
        return _bag_sum(self.hash_rows(tokens), self.item_hash.weight) * keep

    def item_vectors(self, tokens: torch.Tensor) -> torch.Tensor:
        """[..., S] SID tokens -> [..., d] the item's vector without recency (zero for an all-PAD row)."""
        emb = _bag_sum(tokens, self.token_embedding.weight, padding_idx=PAD)
        if self.item_buckets:
            emb = emb + self.identity_vectors(tokens)
        return emb

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        h = history.shape[1]
        if h > self.max_positions:
            raise ValueError(f"history has {h} rows but the generator was built for max_positions={self.max_positions}")
        if self.causal:
            # a causal encoder's row t must read the same inputs whether or not rows follow it (training scores
            # every row of a window at once, inference only the newest): positions count from the oldest item
            present = (history != PAD).any(-1)
            return self.item_vectors(history) + self.recency((present.long().cumsum(1) - 1).clamp(min=0))
        # rows are right-aligned (last row = most recent item), so recency = distance from the last row
        recency = torch.arange(h - 1, -1, -1, device=history.device)
        return self.item_vectors(history) + self.recency(recency)


class T5SIDGenerator(Generator):
    """T5 encoder-decoder (transformers) over SID tokens; TIGER size by default (4+4 layers, d 128, 6x64 heads)."""

    def __init__(
        self,
        *,
        d_model: int = 128,
        num_layers: int = 4,
        num_decoder_layers: int = 4,
        num_heads: int = 6,
        d_kv: int = 64,
        d_ff: int = 1024,
        dropout: float = 0.1,
        max_positions: int = 64,
        item_buckets: int = 0,
        item_scores: bool = False,
        causal: bool = False,
        fast_dropout: bool = False,
        vocab_size: int | None = None,
        sid_length: int | None = None,
    ) -> None:
        """
        Args:
            d_model, num_layers, num_decoder_layers, num_heads, d_kv, d_ff, dropout: the transformers T5 architecture
                (encoder layers, decoder layers, heads x per-head width, feed-forward width).
            max_positions: history rows the recency embedding covers (max_history, + 1 with user tokens).
            item_buckets: rows of the hashed item-identity table added to each history item (0 = codes only).
            item_scores: add item-level scores: a user vector (a projection of the encoder's newest position) dotted
                with each item's input vector (its code embeddings + identity vector, tied with the history input),
                for GeneratorModule's `item_loss_weight` / `rerank_weight`.
            causal: each history row attends only to itself and older rows, with positions counted from the oldest
                row, so one encoder pass over a user's window trains the next-item prediction of every row
                (`SequenceDataModule(all_positions=True)`, SASRec-style) instead of one pass per prefix. Inference
                reads the newest row, as without it.
            fast_dropout: T5's dropout layers draw their masks from 16-bit uniforms (`FastDropout`, the same
                distribution with a quarter of the random draws): a cheaper training step on CPU, no other change.
            vocab_size, sid_length: set from the SID table by GeneratorModule; given only when rebuilding.
        """
        super().__init__()
        self.arch = dict(d_model=d_model, num_layers=num_layers, num_decoder_layers=num_decoder_layers,
                         num_heads=num_heads, d_kv=d_kv, d_ff=d_ff, dropout_rate=dropout)
        self.max_positions = max_positions
        self.item_buckets = item_buckets
        self.has_item_scores = item_scores
        self.causal = causal
        self.fast_dropout = fast_dropout
        self._build_if_sized(vocab_size, sid_length)

    def build(self, *, vocab_size: int, sid_length: int) -> None:
        super().build(vocab_size=vocab_size, sid_length=sid_length)
        if self.is_built:
            return
        config = T5Config(vocab_size=vocab_size, feed_forward_proj="relu", pad_token_id=PAD, eos_token_id=PAD,
                          decoder_start_token_id=START, tie_word_embeddings=False, use_cache=False, **self.arch)
        self.t5 = T5ForConditionalGeneration(config)
        # transformers initialises an untied T5 lm_head with std 1, i.e. initial logits of std ~sqrt(d_model) and a
        # starting loss ~3x ln(vocab); std d_model^-0.5 starts at unit-scale logits, as the tied-and-scaled head would
        nn.init.normal_(self.t5.lm_head.weight, std=self.arch["d_model"] ** -0.5)
        if self.fast_dropout:
            use_fast_dropout(self.t5)
        self.history_embedding = HistoryItemEmbedding(self.t5.shared, max_positions=self.max_positions,
                                                      item_buckets=self.item_buckets, causal=self.causal)
        if self.has_item_scores:
            d = self.arch["d_model"]
            self.user_head = nn.Linear(d, d, bias=False)
            nn.init.normal_(self.user_head.weight, std=d**-0.5)
        self.vocab_size, self.sid_length = vocab_size, sid_length

    def _require_built(self) -> None:
        if not self.is_built:
            raise RuntimeError("T5SIDGenerator is not built: call build(vocab_size=..., sid_length=...) "
                               "(GeneratorModule does)")

    def encode(self, history: torch.Tensor, history_mask: torch.Tensor) -> EncoderState:
        self._require_built()
        mask = history_mask.long()
        hidden = self._encoder_hidden(history, mask)
        return EncoderState(hidden, mask, self._cross_kv(hidden))

    def _cross_kv(self, hidden: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
        """Cross-attention keys/values of every decoder layer, computed once per user.

        Beam search decodes K beams per user for S steps; without this, every step would re-project the same encoder
        states K times (the dominant cost of decoding). Same projection as T5Attention's cross-attention branch.
        """
        out = []
        for block in self.t5.decoder.block:
            attn = block.layer[1].EncDecAttention
            shape = (*hidden.shape[:-1], -1, attn.key_value_proj_dim)
            out.append((attn.k(hidden).view(shape).transpose(1, 2), attn.v(hidden).view(shape).transpose(1, 2)))
        return tuple(out)

    def repeat_state(self, state: EncoderState, n: int) -> EncoderState:
        # nothing is copied here: the inference decoder reads one copy per user, the transformers path repeats once
        return state._replace(repeats=state.repeats * n)

    def _decode(self, state: EncoderState, decoder_input_ids: torch.Tensor) -> torch.Tensor:
        # a fresh self-attention cache each call; the cross-attention cache is pre-filled, so T5 reuses it
        cache = EncoderDecoderCache(DynamicCache(), state.cross_cache())
        out = self.t5.decoder(input_ids=decoder_input_ids, encoder_hidden_states=state.repeated(state.hidden),
                              encoder_attention_mask=state.repeated(state.mask), cache=cache, use_cache=True)
        hidden = out.last_hidden_state
        if getattr(self.t5.config, "scale_decoder_outputs", False):
            hidden = hidden * (self.t5.model_dim**-0.5)
        return self.t5.lm_head(hidden)

    def _encoder_hidden(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        inputs = self.history_embedding(history)
        if self.causal:
            # transformers passes a prepared 4-d mask through as-is: added to T5's attention scores
            h = mask.shape[1]
            allowed = mask.bool()[:, None, None, :] & torch.ones(h, h, dtype=torch.bool, device=mask.device).tril()
            mask = torch.zeros(allowed.shape, dtype=inputs.dtype, device=inputs.device).masked_fill(
                ~allowed, torch.finfo(inputs.dtype).min)
        return self.t5.encoder(inputs_embeds=inputs, attention_mask=mask).last_hidden_state

    def _user_vectors(self, hidden: torch.Tensor) -> torch.Tensor:
        # the newest history row (right-aligned: always present), which reads every row
        return self._user_head(hidden[:, -1])

    def _user_head(self, rows: torch.Tensor) -> torch.Tensor:
        # Item vectors have components of size ~2 (four code rows + two identity rows), so unscaled dot products
        # start with logits of std ~sqrt(d) * 2 and a first item loss far above ln(num_items); d^-1/2 starts near 1.
        return self.user_head(rows) * self.arch["d_model"] ** -0.5

    def user_vectors(self, history: torch.Tensor, history_mask: torch.Tensor) -> torch.Tensor:
        self._require_built()
        if not self.has_item_scores:
            raise NotImplementedError("T5SIDGenerator was built without item_scores: true")
        return self._user_vectors(self._encoder_hidden(history, history_mask.long()))

    def user_vectors_from_state(self, state: EncoderState, history: torch.Tensor,
                                history_mask: torch.Tensor) -> torch.Tensor:
        if not self.has_item_scores:
            raise NotImplementedError("T5SIDGenerator was built without item_scores: true")
        return self._user_vectors(state.hidden)

    def item_vectors(self, item_tokens: torch.Tensor) -> torch.Tensor:
        self._require_built()
        if not self.has_item_scores:
            raise NotImplementedError("T5SIDGenerator was built without item_scores: true")
        return self.history_embedding.item_vectors(item_tokens)

    def set_unseen_items(self, item_tokens: torch.Tensor | None) -> None:
        self._require_built()
        if self.item_buckets:
            self.history_embedding.set_unseen_items(item_tokens)

    def teacher_forced(self, history: torch.Tensor, history_mask: torch.Tensor,
                       target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        self._require_built()
        mask = history_mask.long()
        hidden = self._encoder_hidden(history, mask)
        users = self._user_vectors(hidden) if self.has_item_scores else None
        return self._teacher_forced_logits(hidden, mask, target), users

    def forward(self, history: torch.Tensor, history_mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._require_built()
        mask = history_mask.long()
        return self._teacher_forced_logits(self._encoder_hidden(history, mask), mask, target)

    def teacher_forced_positions(self, history: torch.Tensor, history_mask: torch.Tensor, targets: torch.Tensor
                                 ) -> tuple[torch.Tensor, torch.Tensor | None, tuple[torch.Tensor, torch.Tensor]]:
        self._require_built()
        if not self.causal:
            raise ValueError("every-position training needs a causal encoder (T5SIDGenerator causal: true): a "
                             "bidirectional one lets each row read the items it is asked to predict")
        mask = history_mask.long()
        hidden = self._encoder_hidden(history, mask)
        b, t = (targets != PAD).any(-1).nonzero(as_tuple=True)
        # the decoder of row t cross-attends to rows <= t only: what the newest row of that prefix would see
        reach = torch.arange(history.shape[1], device=history.device) <= t.unsqueeze(1)
        logits = self._teacher_forced_logits(hidden[b], mask[b] * reach, targets[b, t])
        users = self._user_head(hidden[b, t]) if self.has_item_scores else None
        return logits, users, (b, t)

    def _teacher_forced_logits(self, hidden: torch.Tensor, mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        out = self.t5.decoder(input_ids=_shift_right(target), encoder_hidden_states=hidden, encoder_attention_mask=mask,
                              use_cache=False)
        hidden = out.last_hidden_state
        if getattr(self.t5.config, "scale_decoder_outputs", False):
            hidden = hidden * (self.t5.model_dim**-0.5)
        return self.t5.lm_head(hidden)

    def next_token_logits(self, state: EncoderState, prefix: torch.Tensor) -> torch.Tensor:
        start = prefix.new_full((state.rows, 1), START)
        return self._decode(state, torch.cat([start, prefix], dim=1))[:, -1]

    # incremental decoding with a self-attention KV cache: one new token per step instead of the whole prefix
    def fast_decoding_applies(self) -> bool:
        """Inference (eval mode, no gradients) decodes with `t5_beam_decoding`; training-mode calls keep dropout."""
        return not self.training and not torch.is_grad_enabled()

    def start_decoding(self, state: EncoderState, empty_prefix: torch.Tensor) -> T5Decoding | BeamDecoding:
        if self.fast_decoding_applies():
            return start_beam_decoding(self.t5, state.cross_kv, state.mask, rows_per_user=state.repeats,
                                       start_token=START, max_steps=self.sid_length)
        return T5Decoding(state, DynamicCache(), state.cross_cache(), empty_prefix.new_full((state.rows, 1), START))

    def decode_step(self, decoding: T5Decoding | BeamDecoding) -> tuple[torch.Tensor, T5Decoding | BeamDecoding]:
        if isinstance(decoding, BeamDecoding):
            return beam_decode_step(self.t5, decoding)
        state = decoding.state
        cache = EncoderDecoderCache(decoding.self_cache, decoding.cross_cache)
        # encoder states are only read for their shape here (the cross-attention cache is filled), but need B rows
        out = self.t5.decoder(input_ids=decoding.next_input, encoder_hidden_states=state.repeated(state.hidden),
                              encoder_attention_mask=state.repeated(state.mask), cache=cache, use_cache=True)
        hidden = out.last_hidden_state[:, -1]
        if getattr(self.t5.config, "scale_decoder_outputs", False):
            hidden = hidden * (self.t5.model_dim**-0.5)
        return self.t5.lm_head(hidden), decoding

    def decode_step_window(self, decoding: T5Decoding | BeamDecoding, lo: int,
                           hi: int) -> tuple[torch.Tensor, T5Decoding | BeamDecoding]:
        if isinstance(decoding, BeamDecoding):
            return beam_decode_step(self.t5, decoding, window=(lo, hi))
        return super().decode_step_window(decoding, lo, hi)

    def extend_decoding(self, decoding: T5Decoding | BeamDecoding, parent: torch.Tensor,
                        tokens: torch.Tensor) -> T5Decoding | BeamDecoding:
        if isinstance(decoding, BeamDecoding):
            return extend_beam_decoding(decoding, parent, tokens)
        decoding.self_cache.batch_select_indices(parent)
        return T5Decoding(decoding.state, decoding.self_cache, decoding.cross_cache, tokens.unsqueeze(-1))


def _bag_sum(indices: torch.Tensor, weight: torch.Tensor, padding_idx: int | None = None) -> torch.Tensor:
    """[..., n] row indices -> [..., d] the sum of those rows of `weight` (rows equal to `padding_idx` add nothing).

    `embedding_bag` gathers and sums in one kernel and its backward adds each bag's gradient to its rows directly;
    the gather-then-sum it replaces materialised [..., n, d] (the whole catalog's [items, S, d] at every training
    step of the item-level loss) and multiplied it by a PAD mask: measured 1.04x more per Beauty training step on top
    of the kept-memory allocator (`benchmarks/bench_train_path.py`)."""
    flat = indices.reshape(-1, indices.shape[-1])
    summed = nn.functional.embedding_bag(flat, weight, mode="sum", padding_idx=padding_idx)
    return summed.view(*indices.shape[:-1], weight.shape[1])


def _shift_right(target: torch.Tensor) -> torch.Tensor:
    """Decoder inputs for teacher forcing: START then the target's first S-1 tokens."""
    return torch.cat([target.new_full((target.shape[0], 1), START), target[:, :-1]], dim=1)
