"""Schema-constrained decoding for the LLM miner and judge: every generated token is checked against a JSON schema
(xgrammar), so the answer is valid JSON of the requested shape by construction, whatever the model's weights.

Why xgrammar (measured in benchmarks/bench_dcim_llm.py, README "DCIM with a real LLM"): its token
masks come from a grammar compiled once per tokenizer in C++, so the per-token cost stays well under the model's own
step on CPU, it takes a list of grammars (one per batch row, as the judge needs: one label per descriptor) and it
plugs into transformers' `generate` as a logits processor. lm-format-enforcer, the pure-Python alternative, walks
the tokenizer's prefix tree in Python at every step.

Validity by construction also needs the answer to end before `max_new_tokens` does: the schemas here bound every
part (descriptor length by a pattern, their number by maxItems, confidences by an enum of two-decimal values), so
`max_answer_chars` bounds the answer and, every token being at least one character, the token budget.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

#: a short lower-case usage phrase: starts with a letter or digit, no quotes, escapes or line breaks
DESCRIPTOR_CHARS = "a-z0-9 '&/+-"
CONFIDENCES = [round(i / 20, 2) for i in range(21)]  # 0.0, 0.05, ..., 1.0


def descriptors_schema(max_descriptors: int, max_chars: int = 40) -> dict:
    """`{"descriptors": [{"descriptor": str, "confidence": number in [0, 1]}, ...]}` with 1..max_descriptors rows."""
    if max_descriptors < 1 or max_chars < 1:
        raise ValueError(f"max_descriptors and max_chars must be >= 1, got {max_descriptors}, {max_chars}")
    row = {"type": "object",
           "properties": {"descriptor": {"type": "string",
                                         "pattern": f"^[a-z0-9][{DESCRIPTOR_CHARS}]{{0,{max_chars - 1}}}$"},
                          "confidence": {"type": "number", "enum": CONFIDENCES}},
           "required": ["descriptor", "confidence"], "additionalProperties": False}
    return {"type": "object", "properties": {"descriptors": {"type": "array", "items": row, "minItems": 1,
                                                             "maxItems": max_descriptors}},
            "required": ["descriptors"], "additionalProperties": False}


def labels_schema(count: int) -> dict:
    """`{"labels": [0 or 1, ...]}` with exactly `count` entries (one per descriptor)."""
    if count < 1:
        raise ValueError(f"labels_schema needs at least one descriptor, got {count}")
    return {"type": "object", "properties": {"labels": {"type": "array", "items": {"type": "integer", "enum": [0, 1]},
                                                        "minItems": count, "maxItems": count}},
            "required": ["labels"], "additionalProperties": False}


def max_answer_chars(schema: dict) -> int:
    """The longest answer a schema of this module admits (compact JSON, `, ` and `: ` separators)."""
    props = schema["properties"]
    if "labels" in props:
        n = props["labels"]["maxItems"]
        return len('{"labels": []}') + n + 2 * (n - 1)
    rows = props["descriptors"]
    n = rows["maxItems"]
    pattern = rows["items"]["properties"]["descriptor"]["pattern"]
    longest = 1 + int(re.search(r"\{0,(\d+)\}\$$", pattern).group(1))  # first character + the repeated ones
    confidence = max(len(json.dumps(c)) for c in CONFIDENCES)
    row = len('{"descriptor": "", "confidence": }') + longest + confidence
    return len('{"descriptors": []}') + n * row + 2 * (n - 1)


class SchemaConstraint:
    """JSON schemas compiled for one tokenizer; `logits_processor(schemas)` gives `generate` a fresh processor
    that masks, row by row, every token that would leave that row's schema (a processor serves one call)."""

    def __init__(self, tokenizer, vocab_size: int, stop_token_ids: list[int]) -> None:
        import xgrammar as xgr

        self.stop_token_ids = sorted(set(stop_token_ids))
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=self.stop_token_ids)
        self._compiler = xgr.GrammarCompiler(info)
        self._compile = lru_cache(maxsize=64)(self._compile_text)

    def _compile_text(self, schema_text: str):
        return self._compiler.compile_json_schema(schema_text, any_whitespace=False, strict_mode=True)

    def compiled(self, schema: dict):
        return self._compile(json.dumps(schema))  # key order is part of the grammar: never sort

    def opening(self, schema: dict) -> str:
        """The text every answer of `schema` starts with (`{"descriptors": [{"descriptor": "`): forced token by
        token, so it is written into the prompt instead of decoded one model call per token (xgrammar's
        jump-forward string)."""
        import xgrammar as xgr

        return xgr.GrammarMatcher(self.compiled(schema)).find_jump_forward_string()

    def logits_processor(self, schemas: list[dict], openings: list[str] | None = None):
        """A processor for one `generate` call; row i's matcher has already read `openings[i]` (in the prompt)."""
        return _SchemaLogitsProcessor([self.compiled(s) for s in schemas], openings or [""] * len(schemas))


class _SchemaLogitsProcessor:
    """xgrammar's transformers logits processor (xgrammar.contrib.hf) with matchers that start after an opening
    the prompt already holds. Reads the token chosen at the previous step, masks every token the row's grammar
    does not admit next; a finished row is left to `generate`'s stop handling."""

    def __init__(self, grammars: list, openings: list[str]) -> None:
        import xgrammar as xgr

        self.matchers = [xgr.GrammarMatcher(g) for g in grammars]
        for matcher, opening in zip(self.matchers, openings):
            if opening and not matcher.accept_string(opening):
                raise ValueError(f"the schema does not admit the opening {opening!r}")
        self.bitmask = xgr.allocate_token_bitmask(len(grammars), grammars[0].tokenizer_info.vocab_size)
        self.started = False

    def __call__(self, input_ids, scores):
        import xgrammar as xgr

        if input_ids.shape[0] != len(self.matchers):
            raise RuntimeError(f"{input_ids.shape[0]} rows for {len(self.matchers)} schemas")
        if self.started:
            for i, matcher in enumerate(self.matchers):
                if not matcher.is_terminated() and not matcher.accept_token(int(input_ids[i, -1])):
                    raise RuntimeError(f"row {i}: the grammar rejected its own masked choice")
        self.started = True
        for i, matcher in enumerate(self.matchers):
            if not matcher.is_terminated():
                matcher.fill_next_token_bitmask(self.bitmask, i)
        xgr.apply_token_bitmask_inplace(scores, self.bitmask.to(scores.device))
        return scores


def stop_tokens(tokenizer, model) -> list[int]:
    """The ids that end an answer: the tokenizer's EOS and the model's generation EOS (chat models often differ)."""
    ids = [tokenizer.eos_token_id]
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += eos if isinstance(eos, list) else [eos]
    return [int(i) for i in ids if i is not None]
