"""QARM quality judges: label each descriptor 1 (specific, actionable, grounded in the item) or 0."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from deepinterestgr.artifacts import stable_hash
from deepinterestgr.data.schema import Item
from deepinterestgr.evidence.cache import model_identity
from deepinterestgr.evidence.constrained import labels_schema
from deepinterestgr.evidence.contracts import Descriptor, JudgeResult, QualityJudge, SharesTextEncoder, TextEncoder
from deepinterestgr.evidence.llm import PACKAGED_SMOLLM2, ChatGenerator
from deepinterestgr.evidence.miners import complete_with_repair
from deepinterestgr.evidence.parsing import parse_labels
from deepinterestgr.evidence.text import item_text, truncate
from deepinterestgr.evidence.text_encoders import encode_memoized

if TYPE_CHECKING:
    import torch

# Words that carry no intent on their own: a descriptor made only of these says nothing about why to buy the item.
GENERIC_WORDS = frozenset("""
a an the and or for of to in on with at by from as is it this that product products item items good great best nice
quality high excellent use used using daily everyday general personal people anyone everyone thing things stuff
beauty makeup cosmetic cosmetics care purchase buy buying shopping customer customers value
""".split())
STOP_WORDS = frozenset("a an the and or for of to in on with at by from as is it this that your my new".split())
TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def _stem(word: str) -> str:
    # a crude plural/verb-form folding is enough for overlap between short phrases ("lashes" ~ "lash")
    for suffix in ("ing", "es", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def content_words(text: str) -> set[str]:
    return {_stem(w) for w in TOKEN.findall(text.lower()) if w not in STOP_WORDS}


class RuleQualityJudge(SharesTextEncoder, QualityJudge):
    """Cheap rules, no model: a descriptor is accepted when it is
    specific (≥ `min_words` words, ≤ `max_words`, not only generic words), and
    grounded: shares a non-generic content word with the item text (`lexical=True`), or — with
    `embedding_grounding` (by `text_encoder`; None shares the evidence stage's) — has cosine ≥ `min_cosine` with
    the whole item text or one of its lines/sentences. "Actionable" is approximated by the length window: a usage
    situation, not a sentence.
    Measured on the synthetic catalog (zero-shot descriptors, truth known): accepting at segment cosine ≥ 0.5
    gives precision 0.31 / recall 0.43 against a 0.14 base rate; whole-text cosine ≥ 0.3 was no better than chance.
    Caveat: when the miner ranks by the same encoder, embedding grounding is partly circular."""

    def __init__(
        self,
        *,
        min_words: int = 2,
        max_words: int = 8,
        embedding_grounding: bool = True,
        text_encoder: TextEncoder | None = None,
        min_cosine: float = 0.5,
        lexical: bool = True,
    ) -> None:
        self.min_words, self.max_words, self.min_cosine, self.lexical = min_words, max_words, min_cosine, lexical
        self.embedding_grounding = embedding_grounding
        self.text_encoder = text_encoder
        # descriptors repeat across items (a vocabulary miner has ~100): embed each distinct one once per encoder
        self._descriptor_embeddings: dict[str, "torch.Tensor"] = {}
        self._embedded_by: int | None = None

    @classmethod
    def for_contract_test(cls) -> "RuleQualityJudge":
        return cls(embedding_grounding=False)

    def needs_text_encoder(self) -> bool:
        return self.embedding_grounding and self.text_encoder is None

    def describe(self) -> dict:
        return {"class": type(self).__name__, "min_words": self.min_words, "max_words": self.max_words,
                "min_cosine": self.min_cosine, "lexical": self.lexical, "grounding": "max-segment-cosine",
                "generic_words": stable_hash(sorted(GENERIC_WORDS))[:16],
                "text_encoder": self.encoder.describe() if self.embedding_grounding else None}

    def judge(self, items: Sequence[Item], descriptors: Sequence[Sequence[Descriptor]]) -> list[list[int]]:
        return [r.labels for r in self.judge_detailed(items, descriptors)]

    def judge_detailed(self, items, descriptors, captions=None) -> list[JudgeResult]:
        captions = captions or [""] * len(items)
        texts = [item_text(it, cap) for it, cap in zip(items, captions)]
        cosines = self._cosines(texts, descriptors)
        results = []
        for text, descs, cos in zip(texts, descriptors, cosines):
            words = content_words(text) - GENERIC_WORDS
            labels = []
            for d, c in zip(descs, cos):
                tokens = TOKEN.findall(d.descriptor.lower())
                specific = self.min_words <= len(tokens) <= self.max_words and any(
                    t not in GENERIC_WORDS for t in tokens)
                lexical = self.lexical and bool(content_words(d.descriptor) & words)
                grounded = lexical or (c is not None and c >= self.min_cosine)
                labels.append(int(specific and grounded))
            results.append(JudgeResult(labels=labels))
        return results

    def _cosines(self, texts: list[str], descriptors) -> list[list[float | None]]:
        if not self.embedding_grounding:
            return [[None] * len(d) for d in descriptors]
        flat = [d.descriptor for descs in descriptors for d in descs]
        if not flat:
            return [[] for _ in descriptors]
        if self._embedded_by != id(self.encoder):
            self._descriptor_embeddings, self._embedded_by = {}, id(self.encoder)
        new = sorted({t for t in flat if t not in self._descriptor_embeddings})
        if new:
            if len(self._descriptor_embeddings) > 100_000:  # free-text miners: bound the memo
                self._descriptor_embeddings.clear()
            self._descriptor_embeddings.update(zip(new, self.encoder.encode(new)))
        from deepinterestgr.evidence.miners import segment_text

        pieces = [[t, *segment_text(t)] for t in texts]  # whole text first, then its lines and sentences
        emb = encode_memoized(self.encoder, [p for ps in pieces for p in ps])
        out, k = [], 0
        for ps, descs in zip(pieces, descriptors):
            block = emb[k : k + len(ps)]
            k += len(ps)
            out.append([float((block @ self._descriptor_embeddings[d.descriptor]).max()) for d in descs])
        return out


JUDGE_SYSTEM = (
    "You check intent descriptors written for a product. For each numbered descriptor answer 1 if it is specific "
    "(not generic), actionable (a concrete usage situation or need) and grounded in the product text, else 0. "
    'Answer with only this JSON: {"labels": [1, 0, ...]} with exactly one label per descriptor, in order.'
)
JUDGE_FEW_SHOT = [
    ("Product: Travel Size Shampoo and Conditioner Set, 1 oz bottles\nDescriptors:\n1. travel-size for carry-on\n"
     "2. good product\n3. festival party glitter", '{"labels": [1, 0, 0]}'),
]
JUDGE_REPAIR = ('Your answer could not be used: {error}. Reply again with only {{"labels": [...]}}, one 0 or 1 '
                "per descriptor, in order.")


class LLMQualityJudge(QualityJudge):
    """A causal LM labels each descriptor 0/1 (specific, actionable, grounded) as strict JSON
    `{"labels": [...]}`, one per descriptor; one repair retry, then a per-item failure with the raw answers.
    `constrained=True` (default) decodes inside a schema with exactly one 0/1 label per descriptor.
    Loads like the LLM miner (`model`: hub id, local folder, `packaged:smollm2-135m-instruct`, or
    `tiny-random-chat-lm` for tests). `sort_by_length` (default) batches items of similar prompt length: less left
    padding to prefill, the same answers."""

    def __init__(
        self,
        *,
        model: str = PACKAGED_SMOLLM2,
        gguf_file: str | None = None,
        max_new_tokens: int = 48,
        repetition_penalty: float = 1.0,
        batch_size: int = 8,
        max_item_chars: int = 600,
        constrained: bool = True,
        device: str = "cpu",
        int8: bool = False,
        sort_by_length: bool = True,
    ) -> None:
        self.model_id, self.gguf_file, self.max_item_chars = model, gguf_file, max_item_chars
        self.constrained = constrained
        self.int8 = int8
        # the answer repeats "0, 1" tokens by design: a repetition penalty would push the model off the format
        self.generator = ChatGenerator.load(model, gguf_file, device=device, int8=int8,
                                            max_new_tokens=max_new_tokens, repetition_penalty=repetition_penalty,
                                            batch_size=batch_size, constrained=constrained,
                                            sort_by_length=sort_by_length)

    @classmethod
    def for_contract_test(cls) -> "LLMQualityJudge":
        return cls(model="tiny-random-chat-lm", max_new_tokens=8, batch_size=4)

    def describe(self) -> dict:
        return {"class": type(self).__name__, "model": model_identity(self.model_id), "gguf_file": self.gguf_file,
                "max_new_tokens": self.generator.max_new_tokens, "max_item_chars": self.max_item_chars,
                "repetition_penalty": self.generator.repetition_penalty,
                "prompt": stable_hash([JUDGE_SYSTEM, JUDGE_FEW_SHOT, JUDGE_REPAIR])[:16], "decoding": "greedy",
                "constrained": self.constrained, **({"int8": True} if self.int8 else {})}

    def conversation(self, item: Item, descriptors: Sequence[Descriptor], caption: str = "") -> list[dict]:
        text, _ = truncate(item_text(item, caption), self.max_item_chars)
        numbered = "\n".join(f"{k}. {d.descriptor}" for k, d in enumerate(descriptors, 1))
        messages = [{"role": "system", "content": JUDGE_SYSTEM}]
        for question, answer in JUDGE_FEW_SHOT:
            messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        messages.append({"role": "user", "content": f"Product: {text}\nDescriptors:\n{numbered}"})
        return messages

    def judge(self, items: Sequence[Item], descriptors: Sequence[Sequence[Descriptor]]) -> list[list[int]]:
        results = self.judge_detailed(items, descriptors)
        failed = [r.error for r in results if r.labels is None]
        if failed:
            raise ValueError(f"{len(failed)} items could not be judged, e.g. {failed[0]}; use judge_detailed")
        return [r.labels for r in results]

    def judge_detailed(self, items, descriptors, captions=None) -> list[JudgeResult]:
        captions = captions or [""] * len(items)
        results: list[JudgeResult | None] = [JudgeResult(labels=[]) if not d else None for d in descriptors]
        todo = [i for i, r in enumerate(results) if r is None]  # nothing to ask about items without descriptors
        answers = complete_with_repair(
            self.generator,
            [self.conversation(items[i], descriptors[i], captions[i]) for i in todo],
            parse=lambda k, text: parse_labels(text, expected=len(descriptors[todo[k]])),
            repair=lambda error: JUDGE_REPAIR.format(error=error),
            wrap=lambda value, raw: JudgeResult(labels=value, raw=raw),
            fail=lambda error, raw: JudgeResult(error=error, raw=raw),
            schemas=[labels_schema(len(descriptors[i])) for i in todo] if self.constrained else None,
        )
        for i, answer in zip(todo, answers):
            results[i] = answer
        return results  # type: ignore[return-value]
