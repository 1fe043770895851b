"""Contracts of the evidence plugin kinds. Each is small: one method that does the work, plus `describe()`,
which returns the JSON-able identity (model id + settings) used in cache keys and manifests.

Plugins are typed constructor arguments of the evidence stage (`class_path` / `init_args` in its YAML, as for every
other stage); they remember their constructor arguments (`init_config()`), which the stage's manifest records so
`dig items add` can rebuild them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from deepinterestgr.init_args import RecordsInitArgs

if TYPE_CHECKING:  # heavy imports stay out of module import
    import torch
    from PIL import Image

    from deepinterestgr.data.schema import Item


class EvidencePlugin(RecordsInitArgs, ABC):
    def describe(self) -> dict:
        """Identity for cache keys and manifests: class, model id and every setting that changes the output."""
        return {"class": type(self).__name__}


@dataclass
class Descriptor:
    descriptor: str
    confidence: float | None = None  # in [0, 1]; None when the miner gives none


@dataclass
class MiningResult:
    """DCIM output for one item. `error` set (and `raw` kept) when the miner failed; descriptors is then empty."""

    descriptors: list[Descriptor] = field(default_factory=list)
    error: str | None = None
    raw: str | None = None


class TextEncoder(EvidencePlugin):
    """Texts -> L2-normalised float32 embeddings [N, dim]."""

    @property
    @abstractmethod
    def dim(self) -> int: ...

    @abstractmethod
    def encode(self, texts: Sequence[str]) -> "torch.Tensor": ...


class IntentMiner(EvidencePlugin):
    """Items -> item-side latent usage intents, strongest first (DCIM)."""

    @abstractmethod
    def mine(self, items: Sequence["Item"], captions: Sequence[str] | None = None) -> list[MiningResult]: ...


@dataclass
class JudgeResult:
    """QARM labels for one item's descriptors (same order). `labels` is None and `error` (+ `raw`) set on failure."""

    labels: list[int] | None = None
    error: str | None = None
    raw: str | None = None


class QualityJudge(EvidencePlugin):
    """Labels each descriptor 1 (specific, actionable, grounded in the item) or 0 (QARM)."""

    @abstractmethod
    def judge(self, items: Sequence["Item"], descriptors: Sequence[Sequence[Descriptor]]) -> list[list[int]]: ...

    def judge_detailed(
        self, items: Sequence["Item"], descriptors: Sequence[Sequence[Descriptor]],
        captions: Sequence[str] | None = None
    ) -> list[JudgeResult]:
        """Like `judge`, but a judge that can fail per item (an LLM) reports the failure instead of raising.
        The default wraps `judge`, which cannot fail per item; `captions` lets a judge ground on the CMSA caption."""
        return [JudgeResult(labels=list(map(int, labels))) for labels in self.judge(items, descriptors)]


class SharesTextEncoder:
    """A plugin that embeds text (the zero-shot miner, the rule judge). Given no `text_encoder` of its own it uses the
    evidence stage's, so the stage, the miner and the judge load one model and embed each item text once."""

    text_encoder: TextEncoder | None = None
    _stage_encoder: TextEncoder | None = None

    def needs_text_encoder(self) -> bool:
        """True when this plugin embeds text and was given no encoder of its own."""
        return self.text_encoder is None

    def share_text_encoder(self, encoder: TextEncoder | None) -> None:
        self._stage_encoder = encoder

    @property
    def encoder(self) -> TextEncoder:
        encoder = self.text_encoder or self._stage_encoder
        if encoder is None:
            raise ValueError(f"{type(self).__name__} embeds text but has no text encoder: give it "
                             "init_args.text_encoder, or set the evidence stage's text_encoder (it shares that one)")
        return encoder


class Captioner(EvidencePlugin):
    """CMSA caption branch: images -> recommendation-oriented captions (text the enriched item text includes)."""

    @abstractmethod
    def caption(self, images: Sequence["Image.Image"], items: Sequence["Item"]) -> list[str]: ...


class CollaborativeSource(EvidencePlugin):
    """Training interactions -> one float32 vector per item [num_items, dim] (collaborative evidence for SIDs).

    `embed` receives only the training part of every user's sequence (items[:-2]; the stage slices it), so the
    valid and test targets can never shape the SIDs. An item without training interactions gets a zero row."""

    @property
    @abstractmethod
    def dim(self) -> int: ...

    @abstractmethod
    def embed(self, train_sequences: list[list[int]], num_items: int) -> "torch.Tensor": ...


class AttributeSource(EvidencePlugin):
    """Item attribute ids (`Item.attributes`: brand, category ids, ...) -> one float32 vector per item [N, dim].

    For catalogs whose items carry attribute ids but no text (Sports: S3-Rec's brand + category ids). `embed` sees
    the whole catalog's attributes, never an interaction. An item without attributes gets a zero row."""

    @property
    @abstractmethod
    def dim(self) -> int: ...

    @abstractmethod
    def embed(self, attributes: list[list[str]]) -> "torch.Tensor": ...

    def embed_new(self, catalog: list[list[str]], new: list[list[str]]) -> "torch.Tensor":
        """Vectors [len(new), dim] for items added after `embed(catalog)` ran, in the space of that call: the rows
        `embed(catalog)` gave stay what they were (`dig items add` places new items with the trained quantizer). A
        source that cannot do this keeps the default, and `dig items add` refuses runs whose SIDs fuse it."""
        raise NotImplementedError(f"{type(self).__name__} cannot embed items added after the catalog was embedded")


class ImageEncoder(EvidencePlugin):
    """CMSA image branch: images -> pooled features of a frozen encoder (fused with the text before quantization)."""

    @property
    @abstractmethod
    def num_features(self) -> int: ...

    @abstractmethod
    def encode(self, images: Sequence["Image.Image"]) -> "torch.Tensor":
        """Pooled features [N, num_features] of a frozen encoder."""
