"""Evidence tensors -> batches of item vectors for the quantizer stage.

Reads `<run>/evidence/text_embeddings.safetensors` (key "embeddings" [N, D]); with `use_collaborative`,
`<run>/evidence/collab_embeddings.safetensors` (key "embeddings" [N, C]) too, concatenated onto the text vector; with
`use_attributes`, `<run>/evidence/attribute_embeddings.safetensors` likewise; with
`use_image_features`, `<run>/evidence/image_features.safetensors` (key "features" [N, F]). Widths come from the files,
never from a config.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningDataModule
from safetensors import safe_open
from torch.utils.data import DataLoader, Dataset

from deepinterestgr.artifacts import ArtifactError
from deepinterestgr.training import EpochBatchSampler, ResumableDataLoader, Seeded

log = logging.getLogger(__name__)

TEXT_FILE, TEXT_KEY = "text_embeddings.safetensors", "embeddings"
IMAGE_FILE, IMAGE_KEY = "image_features.safetensors", "features"
COLLAB_FILE, COLLAB_KEY = "collab_embeddings.safetensors", "embeddings"
ATTRIBUTE_FILE, ATTRIBUTE_KEY = "attribute_embeddings.safetensors", "embeddings"


def load_evidence_tensor(path: Path, key: str) -> torch.Tensor:
    """A 2-D finite float tensor from a safetensors file; ArtifactError naming the file and the fix otherwise."""
    fix = "Rerun the `evidence` stage (`dig pipeline ... --from evidence`)."
    if not path.exists():
        raise ArtifactError(f"{path}: not found. {fix}")
    try:
        with safe_open(str(path), framework="pt") as f:
            if key not in f.keys():
                raise ArtifactError(f"{path}: no tensor named {key!r} (has {sorted(f.keys())}). {fix}")
            t = f.get_tensor(key)
    except ArtifactError:
        raise
    except Exception as e:  # safetensors raises its own types for truncated / foreign files
        raise ArtifactError(f"{path}: unreadable ({e}). {fix}") from e
    if t.ndim != 2 or t.shape[0] == 0 or not t.is_floating_point():
        raise ArtifactError(f"{path}: {key!r} must be a non-empty float matrix [N, D], "
                            f"got {t.dtype} {tuple(t.shape)}. {fix}")
    t = t.float()
    bad = (~torch.isfinite(t)).any(dim=1)
    if bad.any():
        rows = bad.nonzero().squeeze(1)[:5].tolist()
        raise ArtifactError(f"{path}: {int(bad.sum())} rows of {key!r} hold NaN/inf (first item ids {rows}). {fix}")
    return t.contiguous()


class ItemVectors(Dataset):
    """Rows of the item table as {"item_id": long, "text": [D], "image": [F] (only with image features)}.
    "text" is the quantizer's main input: the text embedding, or concat(text, collab) with `use_collaborative`."""

    def __init__(self, text: torch.Tensor, image: torch.Tensor | None) -> None:
        self.text, self.image = text, image

    def __len__(self) -> int:
        return self.text.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        row = {"item_id": torch.tensor(i), "text": self.text[i]}
        if self.image is not None:
            row["image"] = self.image[i]
        return row


class EmbeddingDataModule(Seeded, LightningDataModule):
    """Item embeddings of one run directory. Train batches are shuffled items; `table()` is the whole table in order.

    Args (keyword-only):
        run_dir: the run directory (`<run>/evidence/...` is read).
        batch_size: items per training batch.
        num_workers: DataLoader workers (0 is right for in-memory tensors).
        use_image_features: also load the image branch's features (CMSA fusion in front of the quantizer).
        use_collaborative: also load `evidence/collab_embeddings.safetensors` (the evidence stage's `collaborative`
            role): the quantizer input becomes concat(L2norm(text), collaborative_weight * L2norm(collab)), or
            L2norm(collab) alone when the run has no text embeddings (evidence ran with `text_encoder: null`).
        collaborative_weight: scale of the collaborative half against the unit-norm text half (>= 0; 1 gives both
            equal weight in the quantizer's distances; no effect when it is the only part).
        use_attributes: also load `evidence/attribute_embeddings.safetensors` (the evidence stage's `attributes`
            role), concatenated as attribute_weight * L2norm(attributes) beside the other parts (alone: L2norm).
        attribute_weight: scale of the attribute part (>= 0), as collaborative_weight.
    """

    def __init__(self, *, run_dir: str, batch_size: int = 1024, num_workers: int = 0, use_image_features: bool = False,
                 use_collaborative: bool = False, collaborative_weight: float = 1.0, use_attributes: bool = False,
                 attribute_weight: float = 1.0) -> None:
        super().__init__()
        for name, weight in (("collaborative_weight", collaborative_weight), ("attribute_weight", attribute_weight)):
            if not (math.isfinite(weight) and weight >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {weight}")
        self.save_hyperparameters()
        self.run_dir, self.batch_size, self.num_workers = Path(run_dir), int(batch_size), int(num_workers)
        self.use_image_features = bool(use_image_features)
        self.use_collaborative, self.collaborative_weight = bool(use_collaborative), float(collaborative_weight)
        self.use_attributes, self.attribute_weight = bool(use_attributes), float(attribute_weight)
        self.text: torch.Tensor | None = None
        self.image: torch.Tensor | None = None

    @property
    def evidence_dir(self) -> Path:
        return self.run_dir / "evidence"

    @property
    def input_files(self) -> list[Path]:
        """The evidence files the quantizer input is built from (`run_quantize` records their content as inputs)."""
        text = self.evidence_dir / TEXT_FILE
        files = [text] if not self._extra_parts() or text.exists() else []
        files += [self.evidence_dir / f for f, _, _, _ in self._extra_parts()]
        return files + ([self.evidence_dir / IMAGE_FILE] if self.use_image_features else [])

    def _extra_parts(self) -> list[tuple[str, str, float, str]]:
        """(file, key, weight, name) of the parts fused beside the text embedding."""
        return ([(COLLAB_FILE, COLLAB_KEY, self.collaborative_weight, "collaborative")] if self.use_collaborative
                else []) + ([(ATTRIBUTE_FILE, ATTRIBUTE_KEY, self.attribute_weight, "attributes")]
                            if self.use_attributes else [])

    def setup(self, stage: str | None = None) -> None:
        if self.text is not None:
            return
        self.text = self._load_vectors()
        if self.use_image_features:
            image = load_evidence_tensor(self.evidence_dir / IMAGE_FILE, IMAGE_KEY)
            if image.shape[0] != self.text.shape[0]:
                raise ArtifactError(
                    f"{self.evidence_dir / IMAGE_FILE}: {image.shape[0]} rows but {TEXT_FILE} has "
                    f"{self.text.shape[0]}; both must have one row per item. Rerun the `evidence` stage."
                )
            self.image = image
        log.info("quantize data: %d items, text %d-d%s", self.num_items, self.text_dim,
                 f", image {self.image_dim}-d" if self.image is not None else "")

    def _load_vectors(self) -> torch.Tensor:
        """The text embeddings, or with `use_collaborative` / `use_attributes` the fusion of the class docstring."""
        text_path = self.evidence_dir / TEXT_FILE
        extra = self._extra_parts()
        if not extra:
            for name, option in ((COLLAB_FILE, "use_collaborative"), (ATTRIBUTE_FILE, "use_attributes")):
                if not text_path.exists() and (self.evidence_dir / name).exists():
                    raise ArtifactError(f"{text_path}: not found, but {name} is (evidence ran with text_encoder: "
                                        f"null): set data.{option}: true (configs/data/embeddings_collab.yaml).")
            return load_evidence_tensor(text_path, TEXT_KEY)
        parts = []
        for file, key, weight, name in extra:
            vectors = F.normalize(load_evidence_tensor(self.evidence_dir / file, key), dim=1)
            zero = int((vectors.abs().sum(dim=1) == 0).sum())
            parts.append((name, file, weight, vectors, zero))
        if text_path.exists():
            text = load_evidence_tensor(text_path, TEXT_KEY)
            parts.insert(0, ("text", TEXT_FILE, 1.0, F.normalize(text, dim=1), 0))
        first_file, first_rows = parts[0][1], parts[0][3].shape[0]
        for _, file, _, v, _ in parts[1:]:
            if v.shape[0] != first_rows:
                raise ArtifactError(
                    f"{self.evidence_dir / file}: {v.shape[0]} rows but {first_file} has {first_rows}; every fused "
                    "file must have one row per item. Rerun the `evidence` stage (all come from one catalog there).")
        log.info("quantize data: %s", " + ".join(
            f"{w:.3g} x {name} {v.shape[1]}-d" + (f" ({zero} zero rows)" if zero else "")
            for name, _, w, v, zero in parts))
        if len(parts) == 1:  # one part alone: its weight scales nothing
            if parts[0][4]:
                log.info("quantize data: no %s; the %d items with zero %s rows will share codes", TEXT_FILE,
                         parts[0][4], parts[0][0])
            return parts[0][3]
        return torch.cat([w * v for _, _, w, v, _ in parts], dim=1).contiguous()

    # widths the model reads in its own setup (never typed by users)
    @property
    def num_items(self) -> int:
        self._require_setup()
        return self.text.shape[0]

    @property
    def text_dim(self) -> int:
        self._require_setup()
        return self.text.shape[1]

    @property
    def image_dim(self) -> int | None:
        self._require_setup()
        return None if self.image is None else self.image.shape[1]

    def _require_setup(self) -> None:
        if self.text is None:
            raise RuntimeError("EmbeddingDataModule.setup() has not run yet")

    def table(self) -> dict[str, torch.Tensor]:
        """The whole item table, row = item_id: {"text": [N, D]} (+ {"image": [N, F]}); "text" as in ItemVectors."""
        self._require_setup()
        return {"text": self.text} | ({"image": self.image} if self.image is not None else {})

    def train_dataloader(self) -> DataLoader:
        self._require_setup()
        dataset = ItemVectors(self.text, self.image)
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1:  # Lightning shards with its DistributedSampler
            return DataLoader(dataset, batch_size=self.batch_size, shuffle=True, num_workers=self.num_workers,
                              drop_last=False, persistent_workers=self.num_workers > 0)
        # batch order from (seed, epoch) only: a fit resumed from its last checkpoint trains on the same batches
        sampler = EpochBatchSampler(len(dataset), batch_size=self.batch_size, seed=self.run_seed() or 0)
        return ResumableDataLoader(dataset, batch_sampler=sampler, num_workers=self.num_workers,
                                   persistent_workers=self.num_workers > 0)
