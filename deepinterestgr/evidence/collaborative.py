"""Collaborative item embeddings: evidence from who-bought-what-together, for items whose text says too little.

The evidence stage calls `embed_run`, which hands a `CollaborativeSource` plugin the *training* part of every
user's sequence only (items[:-2], the leave-one-out split every later stage uses): SIDs built from the valid or test
targets would leak the answer into the generator's vocabulary.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch

from deepinterestgr.artifacts import ArtifactError
from deepinterestgr.evidence.contracts import CollaborativeSource

log = logging.getLogger(__name__)

WEIGHTINGS = ("ppmi", "degree")


def training_sequences(sequences: Sequence) -> list[list[int]]:
    """items[:-2] of every `UserSequence` (`deepinterestgr.data.split.leave_one_out`): nothing a source sees may
    contain a valid or test target."""
    from deepinterestgr.data.split import leave_one_out

    return [leave_one_out(s).train for s in sequences]


def embed_run(plugin: CollaborativeSource, run_dir: str | Path, num_items: int) -> tuple[torch.Tensor, dict]:
    """Embeddings [num_items, plugin.dim] of `<run>/data/sequences.jsonl`'s training part, plus a JSON summary
    (zero rows = items without collaborative signal). Raises ArtifactError naming the file on bad sequences."""
    from deepinterestgr.data.io import data_dir, load_sequences

    path = data_dir(run_dir) / "sequences.jsonl"
    started = time.perf_counter()
    try:
        train = training_sequences(load_sequences(run_dir))
    except ValueError as e:  # a user under 3 interactions: there is no training part to take
        raise ArtifactError(f"{path}: {e}. Rerun `dig data prepare` with min_interactions >= 3.") from e
    for row, seq in enumerate(train):
        bad = [i for i in seq if not 0 <= i < num_items]
        if bad:
            raise ArtifactError(f"{path}:{row + 1}: item id {bad[0]} outside the catalog [0, {num_items}). "
                                "Rerun `dig data prepare` so catalog and sequences come from one run.")
    emb = plugin.embed(train, num_items)
    if not isinstance(emb, torch.Tensor) or tuple(emb.shape) != (num_items, plugin.dim) or emb.dtype != torch.float32:
        got = f"{emb.dtype} {tuple(emb.shape)}" if isinstance(emb, torch.Tensor) else type(emb).__name__
        raise RuntimeError(f"collaborative source {type(plugin).__name__} returned {got}, expected float32 "
                           f"{(num_items, plugin.dim)}")
    if not torch.isfinite(emb).all():
        raise RuntimeError(f"collaborative source {type(plugin).__name__} returned NaN/inf embeddings")
    zero = int((emb.abs().sum(dim=1) == 0).sum())
    summary = {"users": len(train), "train_interactions": sum(map(len, train)), "dim": plugin.dim,
               "zero_rows": zero, "zero_row_share": round(zero / max(1, num_items), 4),
               "seconds": round(time.perf_counter() - started, 2)}
    log.info("evidence: collaborative %s: %d x %d from %d training interactions in %.1fs; %d items (%.1f%%) have "
             "no training co-occurrence (zero rows)", type(plugin).__name__, num_items, plugin.dim,
             summary["train_interactions"], summary["seconds"], zero, 100 * summary["zero_row_share"])
    return emb.contiguous(), summary


class SVDBasis(NamedTuple):
    """The first k directions of a seeded randomised SVD, columns sign-fixed: matrix ~ u diag(s) v^T."""

    u: torch.Tensor  # [rows, k]
    s: torch.Tensor  # [k]
    v: torch.Tensor  # [cols, k]

    def embedding(self) -> torch.Tensor:
        """Rows of U * sqrt(S), L2-normalised."""
        return torch.nn.functional.normalize(self.u * self.s.clamp(min=0).sqrt(), dim=1)

    def fold_in(self, rows: torch.Tensor) -> torch.Tensor:
        """The embedding of new rows [M, cols] of the matrix, unchanged basis: u = rows v / s (LSI folding-in), so
        a row of the fitted matrix folds in to (about) its own embedding; directions with s = 0 contribute 0."""
        s = self.s.to(rows.dtype)
        u = (rows @ self.v.to(rows.dtype)) / torch.where(s > 0, s, torch.ones_like(s))
        return torch.nn.functional.normalize(u * s.clamp(min=0).sqrt(), dim=1)


def svd_basis(matrix: torch.Tensor, dim: int, *, q: int, seed: int, niter: int) -> SVDBasis:
    """A seeded randomised SVD (`torch.svd_lowrank` with q directions) cut to its first min(dim, q) directions.
    An SVD column is defined up to its sign: each is fixed (largest entry of u positive) so that equal inputs give
    equal bytes whatever the LAPACK build."""
    with torch.random.fork_rng(devices=[]):  # seeded without touching the caller's global RNG
        torch.manual_seed(seed)
        u, s, v = torch.svd_lowrank(matrix, q=q, niter=niter)
    k = min(dim, q)
    u, s, v = u[:, :k], s[:k], v[:, :k]
    signs = torch.sign(u.gather(0, u.abs().argmax(dim=0, keepdim=True)))
    return SVDBasis(u * signs, s, v * signs)


def svd_embedding(matrix: torch.Tensor, dim: int, *, q: int, seed: int, niter: int) -> torch.Tensor:
    """`svd_basis(...).embedding()`: shared by the collaborative and attribute sources."""
    return svd_basis(matrix, dim, q=q, seed=seed, niter=niter).embedding()


class CooccurrenceSVD(CollaborativeSource):
    """Truncated SVD of the item-item co-occurrence of the training sequences: U * sqrt(S), rows L2-normalised.

    Counts pairs of items at most `window` positions apart in one training sequence (None: anywhere in it),
    symmetric. `weighting="ppmi"` takes max(0, log(C_ij * total / (d_i d_j))), which stops popular items from
    dominating every direction; `"degree"` takes D^-1/2 C D^-1/2 (spectral embedding). The SVD is
    `torch.svd_lowrank` with a fixed seed (the same sequences give the same bytes). Items without any remaining
    co-occurrence get a zero row: they carry no collaborative signal and the quantizer then relies on their text.
    """

    #: extra random directions and power iterations of the randomised SVD: enough for ~1e-3 accuracy on Beauty
    OVERSAMPLE, NITER = 16, 4

    def __init__(self, *, dim: int = 64, window: int | None = 3, seed: int = 0, weighting: str = "ppmi") -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if window is not None and window < 1:
            raise ValueError(f"window must be >= 1 (or None for the whole sequence), got {window}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        self._dim, self.window, self.seed, self.weighting = int(dim), window, int(seed), weighting

    @classmethod
    def for_contract_test(cls) -> "CooccurrenceSVD":
        return cls(dim=4)

    @property
    def dim(self) -> int:
        return self._dim

    def describe(self) -> dict:
        return {"class": type(self).__name__, "dim": self._dim, "window": self.window, "seed": self.seed,
                "weighting": self.weighting, "oversample": self.OVERSAMPLE, "niter": self.NITER}

    def embed(self, train_sequences: list[list[int]], num_items: int) -> torch.Tensor:
        from deepinterestgr.baselines.cooccurrence import cooccurrence_counts

        out = torch.zeros(num_items, self._dim, dtype=torch.float32)
        counts = cooccurrence_counts(train_sequences, num_items, window=self.window)
        index, values = counts.indices(), counts.values()
        if values.numel() == 0:
            return out
        degree = torch.zeros(num_items, dtype=torch.float64).index_add_(0, index[0], values)
        if self.weighting == "ppmi":
            values = torch.log(values * values.sum() / (degree[index[0]] * degree[index[1]]))
            keep = values > 0
            index, values = index[:, keep], values[keep]
        else:
            values = values / (degree[index[0]] * degree[index[1]]).sqrt()
        if values.numel() == 0:
            return out
        matrix = torch.sparse_coo_tensor(index, values, (num_items, num_items), check_invariants=True).coalesce()
        emb = svd_embedding(matrix, self._dim, q=min(self._dim + self.OVERSAMPLE, num_items), seed=self.seed,
                            niter=self.NITER)
        k = emb.shape[1]
        has_signal = torch.zeros(num_items, dtype=torch.bool)
        has_signal[index[0]] = True  # no weighted co-occurrence left: exactly zero, not normalised round-off
        out[:, :k] = torch.where(has_signal[:, None], emb, torch.zeros_like(emb)).float()
        return out
