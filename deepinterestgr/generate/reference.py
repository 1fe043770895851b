"""Reference constrained beam search on transformers' `generate(..., prefix_allowed_tokens_fn=...)`.

Kept for tests (our vectorised search must return the same SIDs and scores) and for the speed comparison in
`benchmarks/bench_beam_search.py`. The allowed-token function is a Python dict trie called once per beam per step,
as in TIGER/LC-Rec-style code; that per-beam Python call is what the tensor trie removes.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from transformers.modeling_outputs import BaseModelOutput

from deepinterestgr.generate.search import SearchResult
from deepinterestgr.generate.t5 import T5SIDGenerator
from deepinterestgr.generate.tokenizer import START, SIDTokenizer


def prefix_allowed_tokens(tokenizer: SIDTokenizer):
    """`prefix_allowed_tokens_fn(batch_id, input_ids)` for transformers: the next tokens of catalog SIDs."""
    nxt: dict[tuple[int, ...], set[int]] = defaultdict(set)
    for row in tokenizer.item_tokens.tolist():
        for t in range(len(row)):
            nxt[tuple(row[:t])].add(row[t])
    allowed = {k: sorted(v) for k, v in nxt.items()}

    def fn(batch_id: int, input_ids: torch.Tensor) -> list[int]:
        # input_ids starts with the decoder start token; an unknown prefix returns [] (transformers then masks all)
        return allowed.get(tuple(input_ids.tolist()[1:]), [])

    return fn


@torch.no_grad()
def hf_constrained_beam_search(
    generator: T5SIDGenerator, tokenizer: SIDTokenizer, history: torch.Tensor, history_mask: torch.Tensor, *,
    beam_size: int = 20, allowed_fn=None, renormalize: bool = False,
) -> SearchResult:
    """transformers beam search (num_beams = num_return_sequences = K, length_penalty 0 so scores are sums of
    log-probs) constrained by `prefix_allowed_tokens_fn`. Same result type as `constrained_beam_search`."""
    b, s = history.shape[0], tokenizer.sid_length
    state = generator.encode(history, history_mask)
    out = generator.t5.generate(
        encoder_outputs=BaseModelOutput(last_hidden_state=state.hidden),
        attention_mask=state.mask,
        decoder_input_ids=torch.full((b, 1), START, dtype=torch.long, device=history.device),
        num_beams=beam_size,
        num_return_sequences=beam_size,
        max_new_tokens=s,
        min_new_tokens=s,
        do_sample=False,
        length_penalty=0.0,
        early_stopping=True,
        prefix_allowed_tokens_fn=allowed_fn or prefix_allowed_tokens(tokenizer),
        renormalize_logits=renormalize,
        output_scores=True,
        return_dict_in_generate=True,
        use_cache=True,
    )
    tokens = out.sequences[:, 1:1 + s].reshape(b, beam_size, s)
    scores = out.sequences_scores.reshape(b, beam_size).float()
    return SearchResult(tokens, scores, tokenizer.tokens_to_items(tokens))
