"""Semantic ID table: L semantic codes per item plus a suffix code only for items whose L codes collide.

Saved as `sid_table.safetensors` (codes, suffix) + `sid_table.json` (sizes, the hash of what produced it). Loading
gives back exactly the same table (round-trip tested: other repos' SIDs changed after save/load).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from deepinterestgr.artifacts import ArtifactError, atomic_path, atomic_write_json

NO_SUFFIX = -1


@dataclass
class SIDTable:
    codes: torch.Tensor  # [N, L] long, semantic codes in [0, codebook_size)
    suffix: torch.Tensor  # [N] long, NO_SUFFIX for items whose L codes are unique, else 0..k-1 within the group
    codebook_size: int
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.codes = self.codes.long().cpu().contiguous()
        self.suffix = self.suffix.long().cpu().contiguous()
        if self.codes.ndim != 2 or self.suffix.shape != (self.codes.shape[0],):
            raise ValueError("SIDTable: codes must be [N, L] and suffix [N]; "
                             f"got {tuple(self.codes.shape)}, {tuple(self.suffix.shape)}")

    @property
    def num_items(self) -> int:
        return self.codes.shape[0]

    @property
    def num_levels(self) -> int:
        return self.codes.shape[1]

    @property
    def num_suffix(self) -> int:
        """Size of the suffix vocabulary (0 when no item collides)."""
        return int(self.suffix.max().item()) + 1 if self.num_items and self.suffix.max() >= 0 else 0

    def full(self) -> torch.Tensor:
        """[N, L+1]: semantic codes and the suffix column (NO_SUFFIX where absent)."""
        return torch.cat([self.codes, self.suffix[:, None]], dim=1)

    def collision_rate(self) -> float:
        """Fraction of items that share their L semantic codes with another item."""
        return float((self.suffix != NO_SUFFIX).float().mean()) if self.num_items else 0.0

    def check_unique(self) -> None:
        full = self.full()
        _, inverse, counts = torch.unique(full, dim=0, return_inverse=True, return_counts=True)
        if counts.shape[0] != self.num_items:
            shared = (counts[inverse] > 1).nonzero().squeeze(1)
            first = shared[inverse[shared] == inverse[shared[0]]][:2].tolist()
            raise ArtifactError(
                f"SID table has duplicate SIDs: {len(shared)} items share all codes including the suffix (e.g. items "
                f"{first[0]} and {first[1]}). Build tables with `assign_sids`, which gives colliding items distinct "
                "suffixes, and rerun the `quantize` stage."
            )

    def to_strings(self) -> list[str]:
        """`<a_12><b_200><c_7>` (+ `<d_1>` for a suffix): the notation of the paper and LC-Rec."""
        letters = "abcdefghijklmnopqrstuvwxyz"
        out = []
        for row, suf in zip(self.codes.tolist(), self.suffix.tolist()):
            s = "".join(f"<{letters[i]}_{c}>" for i, c in enumerate(row))
            if suf != NO_SUFFIX:
                s += f"<{letters[len(row)]}_{suf}>"
            out.append(s)
        return out

    # ------------------------------------------------------------------------------------------- persistence
    def save(self, directory: str | Path) -> list[str]:
        directory = Path(directory)
        with atomic_path(directory / "sid_table.safetensors") as tmp:
            save_file({"codes": self.codes, "suffix": self.suffix}, str(tmp))
        meta = {"codebook_size": self.codebook_size, "num_items": self.num_items, "num_levels": self.num_levels,
                "num_suffix": self.num_suffix, "collision_rate": self.collision_rate(), "meta": self.meta}
        atomic_write_json(directory / "sid_table.json", meta)
        return ["sid_table.safetensors", "sid_table.json"]

    @classmethod
    def load(cls, directory: str | Path) -> "SIDTable":
        directory = Path(directory)
        tensors_path, meta_path = directory / "sid_table.safetensors", directory / "sid_table.json"
        for p in (tensors_path, meta_path):
            if not p.exists():
                raise ArtifactError(f"{p}: SID table not found. Run the `quantize` stage (`dig quantize ...`).")
        try:
            tensors = load_file(str(tensors_path))
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except Exception as e:  # safetensors raises its own error types for truncated files
            raise ArtifactError(f"{tensors_path}: unreadable SID table ({e}). Rerun the `quantize` stage.") from e
        table = cls(tensors["codes"], tensors["suffix"], int(meta["codebook_size"]), meta.get("meta", {}))
        codes, suffix = table.codes, table.suffix
        if codes.numel() and (codes.min() < 0 or codes.max() >= table.codebook_size) or (suffix < NO_SUFFIX).any():
            raise ArtifactError(
                f"{tensors_path}: codes must lie in [0, {table.codebook_size}) (codebook_size in {meta_path.name}) and "
                f"suffixes in [{NO_SUFFIX}, ...); got codes in [{int(codes.min())}, {int(codes.max())}]. "
                "Rerun the `quantize` stage."
            )
        try:
            table.check_unique()
        except ArtifactError as e:
            raise ArtifactError(f"{tensors_path}: {e}") from e
        return table


def assign_sids(codes: torch.Tensor, *, codebook_size: int, meta: dict | None = None) -> SIDTable:
    """First L codes from the quantizer; items sharing all L codes get suffixes 0..k-1 in item-id order.

    Deterministic: the suffix order is the item order, so the same codes always give the same table.
    """
    codes = codes.long().cpu()
    n = codes.shape[0]
    suffix = torch.full((n,), NO_SUFFIX, dtype=torch.long)
    if n:
        _, inverse, counts = torch.unique(codes, dim=0, return_inverse=True, return_counts=True)
        colliding = counts[inverse] > 1
        # rank of each item inside its group, by item id: stable sort by group keeps item order within a group
        order = torch.sort(inverse, stable=True).indices
        group_sorted = inverse[order]
        starts = torch.ones_like(group_sorted, dtype=torch.bool)
        starts[1:] = group_sorted[1:] != group_sorted[:-1]
        idx = torch.arange(n)
        first_pos = torch.cummax(torch.where(starts, idx, torch.zeros_like(idx)), dim=0).values
        rank_sorted = idx - first_pos
        rank = torch.empty_like(rank_sorted)
        rank[order] = rank_sorted
        suffix = torch.where(colliding, rank, suffix)
    return SIDTable(codes, suffix, codebook_size, dict(meta or {}))
