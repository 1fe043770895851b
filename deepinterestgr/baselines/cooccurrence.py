"""Item-to-item transition + co-occurrence counts of the last few history items (BASELINES.md's ~20-line heuristic).

    score(j | history) = sum over the last `last_n` history items h_r (r = 0 newest) of
                         recency_decay**r * (T[h_r, j] + cooccurrence_weight * C[h_r, j])
                         + a popularity tie-break far below one count

T[i, j] counts how often j directly follows i in a training sequence; C[i, j] counts pairs of distinct positions
holding i and j in the same training sequence (within `window` positions when set), both directions. Nothing is
excluded: history items compete like any other item (the full-ranking protocol). Popularity orders items the
neighbours do not separate and fills the list for histories whose items have no recorded neighbours; equal
popularity falls back to the smaller item id.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from deepinterestgr.baselines.base import SequenceRecommender, check_sequences
from deepinterestgr.baselines.popularity import item_counts


def _sparse_counts(rows: list[int], cols: list[int], n: int) -> torch.Tensor:
    """Summed pair counts as a coalesced sparse COO [n, n] float64 matrix."""
    index = torch.tensor([rows, cols], dtype=torch.long).reshape(2, -1)
    values = torch.ones(index.shape[1], dtype=torch.float64)
    return torch.sparse_coo_tensor(index, values, (n, n), check_invariants=True).coalesce()


def transition_counts(sequences: Sequence[Sequence[int]], num_items: int) -> torch.Tensor:
    """T [N, N] sparse: T[i, j] = number of times item j directly follows item i."""
    rows, cols = [], []
    for seq in sequences:
        rows.extend(seq[:-1])
        cols.extend(seq[1:])
    return _sparse_counts(rows, cols, num_items)


def cooccurrence_counts(sequences: Sequence[Sequence[int]], num_items: int, *,
                        window: int | None = None) -> torch.Tensor:
    """C [N, N] sparse, symmetric: pairs of distinct positions (at most `window` apart when set) in one sequence."""
    rows, cols = [], []
    for seq in sequences:
        for x, a in enumerate(seq):
            stop = len(seq) if window is None else min(len(seq), x + window + 1)
            for b in seq[x + 1 : stop]:
                rows.extend((a, b))
                cols.extend((b, a))
    return _sparse_counts(rows, cols, num_items)


class CoOccurrence(SequenceRecommender):
    """Transition + co-occurrence neighbours of the last `last_n` history items, weighted by recency."""

    def __init__(
        self,
        *,
        last_n: int = 3,
        recency_decay: float = 0.5,
        cooccurrence_weight: float = 0.1,
        window: int | None = None,
        batch_size: int = 1024,
    ) -> None:
        if last_n < 1:
            raise ValueError(f"last_n must be >= 1, got {last_n}")
        if not 0 < recency_decay <= 1:
            raise ValueError(f"recency_decay must be in (0, 1], got {recency_decay}")
        if cooccurrence_weight < 0:
            raise ValueError(f"cooccurrence_weight must be >= 0, got {cooccurrence_weight}")
        if window is not None and window < 1:
            raise ValueError(f"window must be >= 1 or None, got {window}")
        self.last_n, self.recency_decay, self.cooccurrence_weight = last_n, recency_decay, cooccurrence_weight
        self.window, self.batch_size = window, batch_size
        self.neighbours: torch.Tensor | None = None  # [N(from), N(to)] sparse
        self.tie_break: torch.Tensor | None = None

    def fit(self, train_sequences: Sequence[Sequence[int]], *, num_items: int) -> "CoOccurrence":
        check_sequences(train_sequences, num_items, what="co-occurrence training sequences")
        self.num_items = num_items
        neighbours = transition_counts(train_sequences, num_items)
        if self.cooccurrence_weight > 0:
            cooc = cooccurrence_counts(train_sequences, num_items, window=self.window)
            neighbours = neighbours + self.cooccurrence_weight * cooc
        self.neighbours = neighbours.coalesce()
        counts = item_counts(train_sequences, num_items)
        # Popularity, then the smaller id, decide between equal neighbour scores: both terms stay far below any
        # difference a weighted count can make, and the id term below one popularity count (exact ids, so topk,
        # much faster than a full stable sort, gives the same list as sorting by (score, popularity, -id)).
        pop_unit = 1e-6 / counts.max().clamp(min=1.0)
        ids = torch.arange(num_items, dtype=torch.float64)
        self.tie_break = pop_unit * counts + 0.1 * pop_unit * (1 - ids / num_items)
        return self

    def history_weights(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        """H [U, N] sparse: recency weight of each of the last `last_n` items of each history (repeats add up)."""
        rows, cols, values = [], [], []
        for u, hist in enumerate(histories):
            for r, item in enumerate(reversed(hist[-self.last_n :])):
                rows.append(u)
                cols.append(item)
                values.append(self.recency_decay**r)
        index = torch.tensor([rows, cols], dtype=torch.long).reshape(2, -1)
        values = torch.tensor(values, dtype=torch.float64)
        return torch.sparse_coo_tensor(index, values, (len(histories), self.num_items),
                                       check_invariants=True).coalesce()

    def neighbour_scores(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        """The recency-weighted neighbour counts [U, N] float64 of one batch of histories (no tie-break)."""
        if self.neighbours is None:
            raise RuntimeError("CoOccurrence scores asked for before fit")
        check_sequences(histories, self.num_items, what="co-occurrence histories")
        with warnings.catch_warnings():  # torch flags its (correct) sparse kernels as beta on every call
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return torch.sparse.mm(self.history_weights(histories), self.neighbours).to_dense()

    def scores(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        """Scores [U, N] float64 for one batch of histories."""
        return self.neighbour_scores(histories) + self.tie_break

    def recommend(self, histories: Sequence[Sequence[int]], *, k: int) -> torch.Tensor:
        batches = range(0, len(histories), self.batch_size)
        if not 1 <= k <= self.num_items:
            raise ValueError(f"k must be in [1, {self.num_items}] (the catalog size), got {k}")
        out = [self.scores(histories[b : b + self.batch_size]).topk(k, dim=-1).indices
               for b in tqdm(batches, desc="co-occurrence", leave=False)]
        return torch.cat(out) if out else torch.empty(0, k, dtype=torch.long)
