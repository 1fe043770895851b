"""Inference-time incremental decoding of a transformers T5 decoder for beams that share their user's encoder state.

Beam search feeds R = K rows per user through the decoder, one token per step, for S steps. transformers' decoder
would attend each row to its own copy of the user's cross-attention keys/values (R copies: the copy alone cost a
third of search time), rebuild masks and position biases at every call and go through the cache classes. Here:

- cross-attention reads the user's K/V once for all its R rows (a [B, heads, R, d_kv] x [B, heads, L, d_kv] matmul);
- the first step runs once per user: every beam starts from the same START token, so its R rows are identical;
- the self-attention position bias of all S steps is computed once per search;
- the self-attention cache is a plain list of tensors reordered with one `index_select` per layer.

The arithmetic is T5's (RMS layer norms, unscaled dot products plus a relative position bias shared by all layers,
ReLU/gated feed-forward, the eager attention of `transformers`), so logits equal the transformers decoder's within
float rounding; `tests/test_t5_beam_decoding.py` compares them. Only for eval mode without gradients: dropout is
not applied (callers check `T5SIDGenerator.fast_decoding_applies`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from transformers import T5ForConditionalGeneration


class BeamDecoding(NamedTuple):
    cross_kv: tuple[tuple[torch.Tensor, torch.Tensor], ...]  # per layer: K, V [B, heads, L, d_kv], one copy per user
    cross_bias: torch.Tensor  # [B, 1, 1, L] additive encoder mask
    self_bias: torch.Tensor  # [heads, S_max, S_max] causal relative position bias of the decoder
    rows_per_user: int  # R: rows of the decoding batch per user after the first step
    self_kv: tuple[tuple[torch.Tensor, torch.Tensor], ...]  # per layer: K, V [N, heads, t, d_kv] of the fed tokens
    next_input: torch.Tensor  # [N] the tokens to feed at the next step (N = B before the first extend, else B * R)


def start_beam_decoding(t5: T5ForConditionalGeneration, cross_kv, encoder_mask: torch.Tensor, *, rows_per_user: int,
                        start_token: int, max_steps: int) -> BeamDecoding:
    """Decoding state for B users (`cross_kv` and `encoder_mask` [B, L] hold one row per user)."""
    first = t5.decoder.block[0].layer[0].SelfAttention
    # decoder self-attention is causal, so the bias is only read on and below the diagonal
    self_bias = first.compute_bias(max_steps, max_steps, device=encoder_mask.device)[0]
    dtype = cross_kv[0][0].dtype
    cross_bias = torch.zeros(encoder_mask.shape, dtype=dtype, device=encoder_mask.device)
    cross_bias = cross_bias.masked_fill(encoder_mask == 0, torch.finfo(dtype).min)[:, None, None, :]
    b = encoder_mask.shape[0]
    empty = tuple((cross_kv[0][0].new_zeros(b, k.shape[1], 0, k.shape[3]),) * 2 for k, _ in cross_kv)
    return BeamDecoding(tuple(cross_kv), cross_bias, self_bias, rows_per_user, empty,
                        encoder_mask.new_full((b,), start_token, dtype=torch.long))


def beam_decode_step(t5: T5ForConditionalGeneration, decoding: BeamDecoding,
                     window: tuple[int, int] | None = None) -> tuple[torch.Tensor, BeamDecoding]:
    """Logits [B * R, vocab] of the next token of every row (the first step's rows are repeated R times); with
    `window=(lo, hi)` only those tokens' logits, [B * R, hi - lo] (the output layer's other rows are skipped)."""
    x = t5.decoder.embed_tokens(decoding.next_input)  # [N, d]
    n, b = x.shape[0], decoding.cross_bias.shape[0]
    rows = n // b
    t = decoding.self_kv[0][0].shape[2]  # tokens already fed
    bias = decoding.self_bias[:, t, : t + 1].unsqueeze(1)  # [heads, 1, t+1]
    new_self_kv = []
    for block, (ck, cv), (sk, sv) in zip(t5.decoder.block, decoding.cross_kv, decoding.self_kv):
        sa_layer, ca_layer, ff_layer = block.layer
        sa = sa_layer.SelfAttention
        h = sa_layer.layer_norm(x)
        q = sa.q(h).view(n, sa.n_heads, 1, sa.key_value_proj_dim)
        k, v = sa.k(h).view(n, sa.n_heads, 1, -1), sa.v(h).view(n, sa.n_heads, 1, -1)
        if t:  # nothing cached before the first step
            k, v = torch.cat([sk.to(k.dtype), k], dim=2), torch.cat([sv.to(v.dtype), v], dim=2)
        new_self_kv.append((k, v))
        attn = torch.softmax(q @ k.transpose(-1, -2) + bias, dim=-1)  # [N, heads, 1, t+1]
        x = x + sa.o((attn @ v).reshape(n, -1))

        ca = ca_layer.EncDecAttention
        h = ca_layer.layer_norm(x)
        q = ca.q(h).view(b, rows, ca.n_heads, ca.key_value_proj_dim).transpose(1, 2)  # [B, heads, R, d_kv]
        attn = torch.softmax(q @ ck.transpose(-1, -2) + decoding.cross_bias, dim=-1)  # [B, heads, R, L]
        x = x + ca.o((attn @ cv).transpose(1, 2).reshape(n, -1))

        x = x + ff_layer.DenseReluDense(ff_layer.layer_norm(x))
    x = t5.decoder.final_layer_norm(x)
    if getattr(t5.config, "scale_decoder_outputs", False):
        x = x * (t5.model_dim**-0.5)
    rows_kept = slice(None) if window is None else slice(*window)
    bias = t5.lm_head.bias
    logits = torch.nn.functional.linear(x, t5.lm_head.weight[rows_kept], None if bias is None else bias[rows_kept])
    if rows == 1 and decoding.rows_per_user > 1:
        logits = logits.repeat_interleave(decoding.rows_per_user, 0)
    return logits, decoding._replace(self_kv=tuple(new_self_kv))


def extend_beam_decoding(decoding: BeamDecoding, parent: torch.Tensor, tokens: torch.Tensor) -> BeamDecoding:
    """Row i continues row `parent[i]` (an index into the B * R rows) with `tokens[i]`."""
    n_fed = decoding.self_kv[0][0].shape[0]
    b = decoding.cross_bias.shape[0]
    if n_fed == b and decoding.rows_per_user > 1:
        parent = parent // decoding.rows_per_user  # after the first step a user's R rows are one computed row
    self_kv = tuple((k.index_select(0, parent), v.index_select(0, parent)) for k, v in decoding.self_kv)
    return decoding._replace(self_kv=self_kv, next_input=tokens)
