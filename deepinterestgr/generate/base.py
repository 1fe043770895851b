"""The generator contract: a seq2seq model over SID tokens.

Inputs (built by the SID tokenizer, `deepinterestgr.generate.tokenizer`):
  history      [B, H, S] long: SID tokens of up to H history items (S = L + 1 tokens per item), PAD = 0
  history_mask [B, H] bool: True where a history item exists
  target       [B, S] long: SID tokens of the next item (the decoder target, teacher forcing)
Token ids are global over the vocabulary (`vocab_size`), one range per SID level, see the tokenizer.

Search (beam, sampling) is generic over this contract: `encode` once, `repeat_state` for beams or groups,
then `next_token_logits` for each of the S decoding steps.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, NamedTuple

import torch
from torch import nn

from deepinterestgr.init_args import RecordsInitArgs


class PrefixDecoding(NamedTuple):
    """The default incremental-decoding state: the encoder state and the decoded prefix [B', t]."""

    state: Any
    prefix: torch.Tensor


class Generator(RecordsInitArgs, nn.Module, ABC):
    vocab_size: int
    sid_length: int  # S = tokens per SID

    @abstractmethod
    def forward(self, history: torch.Tensor, history_mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits [B, S, vocab_size] for every target position."""

    @abstractmethod
    def encode(self, history: torch.Tensor, history_mask: torch.Tensor) -> Any:
        """Encoder state for `next_token_logits` (opaque to callers)."""

    @abstractmethod
    def repeat_state(self, state: Any, n: int) -> Any:
        """Each batch row repeated n times consecutively (row b -> rows b*n .. b*n+n-1)."""

    @abstractmethod
    def next_token_logits(self, state: Any, prefix: torch.Tensor) -> torch.Tensor:
        """Logits [B', vocab_size] of the next token given decoded `prefix` [B', t] (t may be 0)."""

    def sequence_log_probs(self, history: torch.Tensor, history_mask: torch.Tensor,
                           target: torch.Tensor) -> torch.Tensor:
        """Per-token log-probabilities [B, S] of `target` (full-vocabulary softmax, teacher forced)."""
        logits = self(history, history_mask, target).float()
        return torch.log_softmax(logits, dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)

    def teacher_forced_positions(self, history: torch.Tensor, history_mask: torch.Tensor, targets: torch.Tensor
                                 ) -> tuple[torch.Tensor, torch.Tensor | None, tuple[torch.Tensor, torch.Tensor]]:
        """Every-position training (`SequenceDataModule(all_positions=True)`): `targets` [B, H, S] holds, for each
        history row, the SID of the item that follows it (PAD rows: none). Returns teacher-forced logits [N, S,
        vocab] of the N rows with a target, their user vectors [N, d] (None without item scores) and their (batch,
        row) indices, each row predicted from itself and older rows only (a causal encoder)."""
        raise NotImplementedError(f"{type(self).__name__} has no every-position training (T5SIDGenerator causal: "
                                  "true has)")

    # ------------------------------------------------------------------------------------ item-level scores
    # Optional (`has_item_scores`): a user vector from the encoder and an item vector from an item's SID tokens, so
    # items that share every code but the last can still be told apart at the output (dense re-ranking of the beam,
    # LIGER-style). Code embeddings alone are shared by every item with that code.
    has_item_scores: bool = False

    def teacher_forced(self, history: torch.Tensor, history_mask: torch.Tensor,
                       target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Teacher-forced logits [B, S, vocab] and, when `has_item_scores`, user vectors [B, d] from the same
        encoder pass (None otherwise)."""
        return self(history, history_mask, target), None

    def user_vectors(self, history: torch.Tensor, history_mask: torch.Tensor) -> torch.Tensor:
        """One vector [B, d] per user for item-level scores `user_vectors @ item_vectors.T`."""
        raise NotImplementedError(f"{type(self).__name__} has no item-level scores")

    def user_vectors_from_state(self, state: Any, history: torch.Tensor, history_mask: torch.Tensor) -> torch.Tensor:
        """`user_vectors` of histories whose `encode` gave `state`: a generator whose user vector is read off its
        encoder overrides this to skip a second encoder pass (the search's state is reused)."""
        return self.user_vectors(history, history_mask)

    def item_vectors(self, item_tokens: torch.Tensor) -> torch.Tensor:
        """One vector [N, d] per item from its SID tokens [N, S]."""
        raise NotImplementedError(f"{type(self).__name__} has no item-level scores")

    def set_unseen_items(self, item_tokens: torch.Tensor | None) -> None:
        """SIDs [M, S] of items added after training (`dig items add`), for generators with per-item parameters
        that those items never trained; generators whose inputs are codes only need nothing (the default)."""

    # ------------------------------------------------------------------------------------ incremental decoding
    # Search drives decoding through these three calls. The defaults re-run `next_token_logits` on the whole prefix;
    # a generator with a KV cache overrides them (T5SIDGenerator) so each step costs one token. A decoding state is
    # consumed by the call it is passed to (implementations may update caches in place).
    def start_decoding(self, state: Any, empty_prefix: torch.Tensor) -> Any:
        """Decoding state for `state` (B' rows, e.g. after `repeat_state`) and an empty prefix [B', 0]."""
        return PrefixDecoding(state, empty_prefix)

    def decode_step(self, decoding: Any) -> tuple[torch.Tensor, Any]:
        """Logits [B', vocab_size] of the next token, and the state to pass to `extend_decoding`."""
        return self.next_token_logits(decoding.state, decoding.prefix), decoding

    def decode_step_window(self, decoding: Any, lo: int, hi: int) -> tuple[torch.Tensor, Any]:
        """`decode_step`'s logits of tokens [lo, hi) only, [B', hi - lo]: what a search scoring over the catalog's
        continuations needs (each SID level owns one token range). A generator whose output layer can skip the
        other rows overrides it (T5SIDGenerator: a third of the vocabulary's output layer on 256-code levels)."""
        logits, decoding = self.decode_step(decoding)
        return logits[:, lo:hi], decoding

    def extend_decoding(self, decoding: Any, parent: torch.Tensor, tokens: torch.Tensor) -> Any:
        """Row i continues row `parent[i]`'s prefix with `tokens[i]`. `parent[i]` must be a row with the same encoder
        state as row i (a beam of the same user): encoder states are not reordered."""
        return PrefixDecoding(decoding.state, torch.cat([decoding.prefix[parent], tokens.unsqueeze(-1)], dim=1))

    # ------------------------------------------------------------------------------------------ lazy sizing
    # The vocabulary and SID length come from the SID table, which exists only once the data is loaded: users never
    # type them. Generators are constructed from their architecture alone and `build` adds the sized layers.
    @property
    def is_built(self) -> bool:
        return getattr(self, "vocab_size", None) is not None and getattr(self, "sid_length", None) is not None

    def _build_if_sized(self, vocab_size: int | None, sid_length: int | None) -> None:
        """Constructors take the sizes optionally (they are saved in hparams), so a checkpoint rebuilds the model
        eagerly while a config leaves them to the SID table at `configure_model` time."""
        self.vocab_size = self.sid_length = None
        if vocab_size is not None and sid_length is not None:
            self.build(vocab_size=vocab_size, sid_length=sid_length)

    def build(self, *, vocab_size: int, sid_length: int) -> None:
        """Create the vocabulary-dependent layers. A generator already built with the same sizes ignores the call."""
        if self.is_built and (self.vocab_size, self.sid_length) != (vocab_size, sid_length):
            raise ValueError(
                f"{type(self).__name__} was built for vocab {self.vocab_size} x SID length {self.sid_length}, "
                f"not {vocab_size} x {sid_length}: the SID table changed since this model was trained"
            )
