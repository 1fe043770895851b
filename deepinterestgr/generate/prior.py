"""An item-to-item prior for the generator's ranking: the co-occurrence floor's scores as a next-item distribution.

The co-occurrence floor (`deepinterestgr.baselines.cooccurrence`) scores item j for a history by the recency-weighted
transition and co-occurrence counts of its last items. Smoothed and normalised over the catalog it becomes

    log p_prior(j | history) = log (s_j + smoothing) - log (sum_j' s_j' + smoothing * N)

which `Ranker(prior_weight=c)` adds to each candidate's score: beam score + w * item log-prob + c * log p_prior. A
history whose items have no recorded neighbours gets the uniform distribution, which leaves the generator's order
untouched. A ranking that uses it is a **hybrid** of the generator and a count model, and tables label it so: the
counts are memorised from the training sequences, not learned by the generator.

The prior is fitted on the training targets only (every user's items[:-2], the protocol of every other row) and
travels inside the generator checkpoint, so a served or re-tested model ranks as it was evaluated.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from deepinterestgr.baselines.cooccurrence import CoOccurrence


class CooccurrencePrior:
    """The co-occurrence floor's neighbour scores of a history's last `last_n` items as a smoothed log-distribution."""

    def __init__(self, *, last_n: int = 3, recency_decay: float = 0.3, cooccurrence_weight: float = 0.1,
                 smoothing: float = 1e-3) -> None:
        """
        Args:
            last_n, recency_decay, cooccurrence_weight: as `CoOccurrence` (the defaults are the Beauty floor's
                valid-selected weights; `benchmarks/bench_beauty_quality.py` reuses whatever the floor selected).
            smoothing: pseudo-count of every catalog item: an item no history item points to keeps
                log(smoothing / total) instead of -inf, so the generator can still rank it.
        """
        if smoothing <= 0:
            raise ValueError(f"smoothing must be > 0 (an unseen pair would get log 0 = -inf), got {smoothing}")
        self.model = CoOccurrence(last_n=last_n, recency_decay=recency_decay,
                                  cooccurrence_weight=cooccurrence_weight)
        self.smoothing = float(smoothing)

    def config(self) -> dict:
        return {"last_n": self.model.last_n, "recency_decay": self.model.recency_decay,
                "cooccurrence_weight": self.model.cooccurrence_weight, "smoothing": self.smoothing}

    @property
    def fitted(self) -> bool:
        return self.model.neighbours is not None

    @property
    def num_items(self) -> int:
        return self.model.num_items

    def fit(self, train_sequences: Sequence[Sequence[int]], *, num_items: int) -> "CooccurrencePrior":
        self.model.fit(train_sequences, num_items=num_items)
        return self

    @torch.no_grad()
    def log_probs(self, history_items: torch.Tensor, num_items: int | None = None) -> torch.Tensor:
        """log p_prior [B, num_items] (float32) for item-id histories [B, H] (oldest to newest, -1 = padding).

        `num_items` (default: the fitted catalog's) may be larger: items added after fitting (`dig items add`) have
        no counts, so they get the smoothing pseudo-count alone, and in a history they point nowhere."""
        if not self.fitted:
            raise RuntimeError("CooccurrencePrior.log_probs called before fit (or before loading a checkpoint)")
        known = self.num_items
        num_items = known if num_items is None else int(num_items)
        if num_items < known:
            raise ValueError(f"the prior was fitted on {known} items; a catalog of {num_items} cannot hold them")
        histories = [[i for i in row if 0 <= i < known] for row in history_items.tolist()]
        counts = self.model.neighbour_scores(histories)
        total = counts.sum(1, keepdim=True) + self.smoothing * num_items
        logp = ((counts + self.smoothing) / total).log().float()
        if num_items > known:
            logp = torch.cat([logp, (self.smoothing / total).log().float().expand(-1, num_items - known)], dim=1)
        return logp.to(history_items.device)

    def candidate_log_probs(self, history_items: torch.Tensor, items: torch.Tensor, *,
                            batch_size: int = 2048) -> torch.Tensor:
        """log p_prior [U, K] of candidate `items` [U, K] (-1 = padding, which gets -inf), in batches of users."""
        out = torch.full(items.shape, float("-inf"))
        for b in range(0, len(items), batch_size):
            part = items[b:b + batch_size]
            logp = self.log_probs(history_items[b:b + batch_size]).gather(1, part.clamp(min=0))
            out[b:b + batch_size] = logp.masked_fill(part < 0, float("-inf"))
        return out

    # ------------------------------------------------------------------------------------------------ checkpoint
    def state(self) -> dict:
        """The fitted counts and the settings, as plain tensors (a checkpoint entry; int32 ids halve its size)."""
        if not self.fitted:
            raise RuntimeError("an unfitted CooccurrencePrior has no state to save")
        neighbours = self.model.neighbours.coalesce()
        return {"config": self.config(), "num_items": self.num_items,
                "indices": neighbours.indices().to(torch.int32), "values": neighbours.values().float()}

    @classmethod
    def from_state(cls, state: dict) -> "CooccurrencePrior":
        prior = cls(**state["config"])
        n = int(state["num_items"])
        prior.model.num_items = n
        prior.model.neighbours = torch.sparse_coo_tensor(
            state["indices"].long(), state["values"].double(), (n, n), check_invariants=True).coalesce()
        return prior


def train_sequences(items: torch.Tensor, starts: torch.Tensor, lengths: torch.Tensor, *,
                    num_items: int) -> list[list[int]]:
    """Every user's items[:-2] (its train targets and their histories) from a flat leave-one-out layout, without ids
    outside the SID table (items a `SequenceDataModule(unknown_items=...)` kept in histories)."""
    flat = items.tolist()
    return [[i for i in flat[s:s + max(n - 2, 0)] if i < num_items] for s, n in zip(starts.tolist(), lengths.tolist())]
