"""Attribute evidence: item vectors from attribute ids (brand, category ids) for catalogs without item text.

The evidence stage calls `embed_catalog`, which hands an `AttributeSource` plugin every item's `attributes` (the
data stage reads them, e.g. the P5 reader's `attribute_file`); quantize fuses the result with the other item vectors
when `data.use_attributes` is true. Attributes describe items, not users: no interaction is involved, so nothing
of the valid or test targets can reach the SIDs through them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import torch

from deepinterestgr.evidence.collaborative import SVDBasis, svd_basis
from deepinterestgr.evidence.contracts import AttributeSource

log = logging.getLogger(__name__)

WEIGHTINGS = ("tfidf", "binary")


def embed_catalog(plugin: AttributeSource, items: Sequence) -> tuple[torch.Tensor, dict]:
    """Embeddings [len(items), plugin.dim] of the items' attribute ids, plus a JSON summary."""
    started = time.perf_counter()
    attributes = [list(item.attributes) for item in items]
    emb = plugin.embed(attributes)
    if not isinstance(emb, torch.Tensor) or tuple(emb.shape) != (len(items), plugin.dim) or emb.dtype != torch.float32:
        got = f"{emb.dtype} {tuple(emb.shape)}" if isinstance(emb, torch.Tensor) else type(emb).__name__
        raise RuntimeError(f"attribute source {type(plugin).__name__} returned {got}, expected float32 "
                           f"{(len(items), plugin.dim)}")
    if not torch.isfinite(emb).all():
        raise RuntimeError(f"attribute source {type(plugin).__name__} returned NaN/inf embeddings")
    without = sum(1 for a in attributes if not a)
    summary = {"items": len(items), "distinct_attributes": len({a for row in attributes for a in row}),
               "dim": plugin.dim, "items_without_attributes": without,
               "seconds": round(time.perf_counter() - started, 2)}
    log.info("evidence: attributes %s: %d x %d from %d distinct attribute ids in %.1fs; %d items have none (zero "
             "rows)", type(plugin).__name__, len(items), plugin.dim, summary["distinct_attributes"],
             summary["seconds"], without)
    if without == len(items):
        log.warning("evidence: no item has attributes; did the data stage read them (e.g. the P5 reader's "
                    "attribute_file)?")
    return emb.contiguous(), summary


class AttributeSVD(AttributeSource):
    """Truncated SVD of the item x attribute-id matrix (latent semantic analysis): U * sqrt(S), rows L2-normalised.

    `weighting="tfidf"` weights an attribute by log(N / items holding it), so a category every item shares counts for
    little and a brand for much; `"binary"` keeps the plain multi-hot. Items with equal attribute sets get equal
    vectors (they can only be told apart by another source, e.g. collaborative evidence fused beside it); items
    without attributes get a zero row. Seeded `torch.svd_lowrank`, sign-fixed columns: equal inputs, equal bytes.
    """

    OVERSAMPLE, NITER = 16, 4

    def __init__(self, *, dim: int = 64, weighting: str = "tfidf", seed: int = 0) -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        self._dim, self.weighting, self.seed = int(dim), weighting, int(seed)

    @classmethod
    def for_contract_test(cls) -> "AttributeSVD":
        return cls(dim=3)

    @property
    def dim(self) -> int:
        return self._dim

    def describe(self) -> dict:
        return {"class": type(self).__name__, "dim": self._dim, "weighting": self.weighting, "seed": self.seed,
                "oversample": self.OVERSAMPLE, "niter": self.NITER}

    def embed(self, attributes: list[list[str]]) -> torch.Tensor:
        out = torch.zeros(len(attributes), self._dim, dtype=torch.float32)
        fitted = self._fit(attributes)
        if fitted is None:
            return out
        basis, _, _ = fitted
        emb = basis.embedding()
        has = torch.tensor([bool(row) for row in attributes])
        out[:, :emb.shape[1]] = torch.where(has[:, None], emb, torch.zeros_like(emb)).float()
        return out

    def embed_new(self, catalog: list[list[str]], new: list[list[str]]) -> torch.Tensor:
        """Folding-in: the new items' weighted attribute rows projected on the basis `embed(catalog)` was cut from
        (recomputed: the seeded SVD gives the same bytes), with the catalog's attribute weights. Attribute ids the
        catalog never held span no direction and are ignored; an item left with none gets a zero row."""
        out = torch.zeros(len(new), self._dim, dtype=torch.float32)
        fitted = self._fit(catalog)
        if fitted is None or not new:
            return out
        basis, vocab, weight = fitted
        rows = [i for i, row in enumerate(new) for a in set(row) if a in vocab]
        cols = [vocab[a] for row in new for a in sorted(set(row)) if a in vocab]
        if not rows:
            return out
        r, c = torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)
        matrix = torch.zeros(len(new), len(vocab), dtype=torch.float64).index_put_((r, c), weight[c])
        emb = basis.fold_in(matrix)
        has = torch.zeros(len(new), dtype=torch.bool)
        has[r] = True
        out[:, :emb.shape[1]] = torch.where(has[:, None], emb, torch.zeros_like(emb)).float()
        return out

    def _fit(self, attributes: list[list[str]]) -> tuple[SVDBasis, dict[str, int], torch.Tensor] | None:
        """The SVD basis of the weighted item x attribute matrix, its attribute vocabulary and per-attribute weight
        (None when no item holds an attribute)."""
        n = len(attributes)
        vocab = {a: j for j, a in enumerate(sorted({a for row in attributes for a in row}))}
        rows = [i for i, row in enumerate(attributes) for _ in set(row)]
        cols = [vocab[a] for row in attributes for a in sorted(set(row))]
        if not rows:
            return None
        index = torch.tensor([rows, cols], dtype=torch.long)
        ones = torch.ones(len(rows), dtype=torch.float64)
        weight = torch.ones(len(vocab), dtype=torch.float64)
        if self.weighting == "tfidf":
            holders = torch.zeros(len(vocab), dtype=torch.float64).index_add_(0, index[1], ones)
            weight = torch.log(n / holders) + 1.0  # +1: an attribute every item holds still counts
        matrix = torch.sparse_coo_tensor(index, weight[index[1]], (n, len(vocab)), check_invariants=True).coalesce()
        basis = svd_basis(matrix, self._dim, q=min(self._dim + self.OVERSAMPLE, n, len(vocab)), seed=self.seed,
                          niter=self.NITER)
        return basis, vocab, weight
