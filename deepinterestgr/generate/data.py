"""User sequences -> generator batches, with the paper's chronological leave-one-out split.

Per user with items i_1..i_n: test target i_n, valid target i_{n-1}, train = i_1..i_{n-2}. Training examples are
every prefix of the train part (targets i_2..i_{n-2}, TIGER-style); valid/test have one example per user whose
history is everything before the target. Valid and test targets therefore never appear in any training example.

Batches (dict of tensors):
  history      [B, H, S] long   SID tokens of the last `max_history` items, right-aligned (+ user row if enabled)
  history_mask [B, H] bool
  target       [B, S] long      SID tokens of the next item
  target_item  [B] long         its item id
  user_index   [B] long         row of the user in sequences.jsonl

With `all_positions` (SASRec-style training, for causal generators), a training example is instead a window of up to
`max_history` consecutive train items of one user, and every row predicts the item after it:
  position_targets      [B, H, S] long  SID tokens of the item following each history row (PAD rows: none)
  position_target_items [B, H] long     its item id (-1: none)
Each train target belongs to exactly one window (a user's windows end at the last train target and every
`max_history` items before it), so an epoch covers the same targets as the prefix examples with ~1/6 of the
encoder passes on Beauty.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset

from deepinterestgr.artifacts import ArtifactError, read_jsonl
from deepinterestgr.data.split import VALID_SAMPLE_SEED, validation_sample
from deepinterestgr.generate.tokenizer import SIDTokenizer
from deepinterestgr.quantize.sid import SIDTable
from deepinterestgr.training import EpochBatchSampler, ResumableDataLoader, Seeded

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
MIN_SEQUENCE_LENGTH = 3  # one train item to read, one valid target, one test target


class LeaveOneOutSplit:
    """All users' items in one flat tensor plus, per split, the (user, target position) of every example."""

    def __init__(self, sequences: list[list[int]], users: list[str]) -> None:
        self.users = users
        self.lengths = lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
        self.items = torch.tensor([i for s in sequences for i in s], dtype=torch.long)
        self.starts = torch.cumsum(lengths, 0) - lengths
        user_ids = torch.arange(len(sequences))
        self.examples: dict[str, torch.Tensor] = {
            "test": torch.stack([user_ids, lengths - 1], 1),
            "valid": torch.stack([user_ids, lengths - 2], 1),
        }
        # train targets: positions 1 .. n-3 of every user (position 0 has no history)
        n_train = (lengths - 3).clamp(min=0)
        train_users = torch.repeat_interleave(user_ids, n_train)
        first = torch.cumsum(n_train, 0) - n_train
        offsets = torch.arange(int(n_train.sum())) - torch.repeat_interleave(first, n_train)
        self.examples["train"] = torch.stack([train_users, offsets + 1], 1)

    def train_windows(self, max_history: int) -> torch.Tensor:
        """(user, position of the window's last target) [W, 2] of the every-position training windows: per user,
        windows end at its last train target (position n-3) and every `max_history` positions before, down to 1, so
        the targets of the windows (positions end-H+1 .. end) cover 1 .. n-3 exactly once."""
        last = self.lengths - 3  # the last train target's position (< 1: no train target)
        count = torch.where(last >= 1, torch.div(last + max_history - 1, max_history, rounding_mode="floor"), 0)
        users = torch.repeat_interleave(torch.arange(len(last)), count)
        first = torch.cumsum(count, 0) - count
        j = torch.arange(int(count.sum())) - torch.repeat_interleave(first, count)  # 0 = the newest window
        return torch.stack([users, last[users] - j * max_history], 1)

    def histories(self, examples: torch.Tensor, max_history: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Item-id histories [B, max_history] (right-aligned, -1 padded) and target item ids [B]."""
        users, pos = examples[:, 0], examples[:, 1]
        start = self.starts[users]
        flat_target = start + pos
        offsets = torch.arange(-max_history, 0)
        flat = flat_target.unsqueeze(1) + offsets  # [B, H]
        valid = flat >= start.unsqueeze(1)
        hist = torch.where(valid, self.items[flat.clamp(min=0)], torch.full_like(flat, -1))
        return hist, self.items[flat_target]


def _first_column_in_use(hist: torch.Tensor) -> int:
    """The first column of right-aligned item histories [B, H] (-1 = padding) that some row uses (the last one when
    none does). Batches drop the columns before it: positions count from the newest row (or, causal, from the oldest
    item), so the model's output is unchanged and the encoder runs on the batch's longest history only."""
    present = (hist >= 0).any(0)
    return int(present.long().argmax()) if bool(present.any()) else hist.shape[1] - 1


class _ExampleIndex(Dataset):
    """Indices only: the collate function builds whole batches with tensor ops (no per-example Python work)."""

    def __init__(self, n: int, order: torch.Tensor | None = None) -> None:
        self.n = n
        self.order = order

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i if self.order is None else int(self.order[i])


class SequenceDataModule(Seeded, LightningDataModule):
    """Reads `<run>/data/sequences.jsonl` and `<run>/quantize/sid_table.*`; serves leave-one-out batches."""

    def __init__(
        self,
        run_dir: str,
        max_history: int = 20,
        batch_size: int = 256,
        eval_batch_size: int = 256,
        num_workers: int = 0,
        num_user_buckets: int = 0,
        sid_table_dir: str | None = None,
        val_max_users: int | None = None,
        val_sample_seed: int = VALID_SAMPLE_SEED,
        length_bucketing: bool = True,
        strict: bool = False,
        unknown_items: str = "error",
        all_positions: bool = False,
    ) -> None:
        """
        Args:
            run_dir: run directory with `data/sequences.jsonl` (and `quantize/` unless `sid_table_dir` is given).
            max_history: history items per example (the most recent ones).
            batch_size, eval_batch_size, num_workers: loader settings (training / validation and test).
            num_user_buckets: hashed user tokens (TIGER); 0 = none.
            sid_table_dir: folder of `sid_table.*` (default `<run_dir>/quantize`).
            val_max_users: validate on a seeded random sample of this many users (None = all).
            val_sample_seed: seed of that sample (the same users for every method).
            length_bucketing: training batches of similar history length (less padding).
            strict: a user with fewer than 3 items is an error instead of a counted skip.
            unknown_items: what an item id outside the SID table is: "error" (the default: sequences and SIDs from
                different catalogs), or "drop" for catalogs that grow after training (items held out of SID and
                generator training, added later with `dig items add`): such items are removed from histories,
                training examples with such a target are dropped (counted), and valid/test examples keep them as
                targets no ranking can hit.
            all_positions: train on windows of up to `max_history` items in which every row predicts the next item
                (one encoder pass per window instead of one per prefix; needs a causal generator, e.g.
                `T5SIDGenerator(causal=True)`). `batch_size` then counts windows. Valid and test are unchanged.
        """
        super().__init__()
        if unknown_items not in ("error", "drop"):
            raise ValueError(f"unknown_items must be 'error' or 'drop', got {unknown_items!r}")
        if all_positions and (num_user_buckets or unknown_items == "drop"):
            raise ValueError("all_positions does not combine with num_user_buckets > 0 (the user row would shift "
                             "every target) or unknown_items='drop'; use the prefix examples (all_positions: false)")
        self.save_hyperparameters()
        self.run_dir = Path(run_dir)
        self.max_history = max_history
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.num_user_buckets = num_user_buckets
        self.sid_table_dir = Path(sid_table_dir) if sid_table_dir else self.run_dir / "quantize"
        self.val_max_users = val_max_users
        self.val_sample_seed = val_sample_seed
        self.length_bucketing = length_bucketing
        self.strict = strict
        self.unknown_items = unknown_items
        self.all_positions = all_positions
        #: with unknown_items="drop": interactions outside the SID table and training examples dropped for them
        self.unknown_counts = {"interactions": 0, "train_examples_dropped": 0}
        self.tokenizer: SIDTokenizer | None = None
        self.split: LeaveOneOutSplit | None = None
        self.skipped_users = 0

    # ------------------------------------------------------------------------------------------------ loading
    def setup(self, stage: str | None = None) -> None:
        if self.tokenizer is not None:
            return
        table = SIDTable.load(self.sid_table_dir)
        self.tokenizer = SIDTokenizer(table, num_user_buckets=self.num_user_buckets)
        self.split = self._read_sequences(self.run_dir / "data" / "sequences.jsonl", table.num_items)
        if self.unknown_items == "drop":
            self._drop_unknown_train_targets(table.num_items)
        if self.all_positions:
            prefixes = len(self.split.examples["train"])
            self.split.examples["train"] = self.split.train_windows(self.max_history)
            log.info("generate data: every-position training, %d prefix targets in %d windows",
                     prefixes, len(self.split.examples["train"]))
        log.info("generate data: %d users, %d train / %d valid / %d test examples, %d users skipped (< %d items)",
                 len(self.split.users), len(self.split.examples["train"]), len(self.split.examples["valid"]),
                 len(self.split.examples["test"]), self.skipped_users, MIN_SEQUENCE_LENGTH)

    def _read_sequences(self, path: Path, num_items: int) -> LeaveOneOutSplit:
        sequences, users = [], []
        for lineno, row in enumerate(read_jsonl(path, stage="data"), 1):
            if not isinstance(row, dict):
                raise ArtifactError(f"{path}:{lineno}: expected a JSON object {{\"user\": ..., \"items\": [...]}}, "
                                    f"got a {type(row).__name__}. Rerun the `data` stage.")
            items = row.get("items")
            # `type(i) is int`: JSON true/false would otherwise pass as item ids 1/0
            if not isinstance(items, list) or not all(type(i) is int for i in items):
                raise ArtifactError(
                    f"{path}:{lineno}: `items` must be a list of integer item ids. Rerun the `data` stage.")
            bad = [i for i in items if not 0 <= i < num_items]
            if self.unknown_items == "drop":
                self.unknown_counts["interactions"] += sum(i >= num_items for i in bad)
                bad = [i for i in bad if i < 0]
            if bad:
                raise ArtifactError(
                    f"{path}:{lineno}: item id {bad[0]} is outside the SID table's 0..{num_items - 1}; the sequences "
                    "and the SID table come from different catalogs. Rerun the `quantize` stage on this run's data."
                )
            if len(items) < MIN_SEQUENCE_LENGTH:
                if self.strict:
                    raise ArtifactError(
                        f"{path}:{lineno}: user {row.get('user')!r} has {len(items)} items; leave-one-out needs "
                        f"{MIN_SEQUENCE_LENGTH}. Rerun the `data` stage with min_interactions >= "
                        f"{MIN_SEQUENCE_LENGTH}, or set strict: false to skip and count such users.")
                self.skipped_users += 1
                continue
            sequences.append(items)
            users.append(str(row.get("user", lineno - 1)))
        if not sequences:
            raise ArtifactError(
                f"{path}: no user has >= {MIN_SEQUENCE_LENGTH} items ({self.skipped_users} shorter users skipped); "
                f"nothing to train on. Rerun the `data` stage with min_interactions >= {MIN_SEQUENCE_LENGTH}."
            )
        return LeaveOneOutSplit(sequences, users)

    def _drop_unknown_train_targets(self, num_items: int) -> None:
        train = self.split.examples["train"]
        known = self.split.items[self.split.starts[train[:, 0]] + train[:, 1]] < num_items
        self.split.examples["train"] = train[known]
        self.unknown_counts["train_examples_dropped"] = int((~known).sum())
        if self.unknown_counts["interactions"]:
            log.info("generate data: %d interactions with items outside the SID table (unknown_items=drop): removed "
                     "from histories; %d training examples with such a target dropped",
                     self.unknown_counts["interactions"], self.unknown_counts["train_examples_dropped"])

    # ------------------------------------------------------------------------------------------------ batches
    def make_batch(self, split: str, indices: list[int] | torch.Tensor) -> dict[str, torch.Tensor]:
        examples = self.split.examples[split][torch.as_tensor(indices, dtype=torch.long)]
        if split == "train" and self.all_positions:
            return self._window_batch(examples)
        hist, target_item = self.split.histories(examples, self.max_history)
        target_known = target_item
        if self.unknown_items == "drop":
            n = self.tokenizer.num_items
            hist = hist.masked_fill(hist >= n, -1)
            # right-align what is left: stable sort puts the -1 gaps first and keeps the items' order
            hist = hist.gather(1, (hist >= 0).long().argsort(dim=1, stable=True))
            target_known = target_item.masked_fill(target_item >= n, -1)  # no SID: a PAD row as the token target
        hist = hist[:, _first_column_in_use(hist):]
        buckets = None
        if self.num_user_buckets:
            buckets = torch.tensor([self.tokenizer.user_bucket(self.split.users[u]) for u in examples[:, 0].tolist()])
        encoded = self.tokenizer.encode_history(hist, user_buckets=buckets)
        return {
            "history": encoded.tokens,
            "history_mask": encoded.mask,
            "target": self.tokenizer.items_to_tokens(target_known),
            "target_item": target_item,
            "user_index": examples[:, 0],
        }

    def _window_batch(self, examples: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every-position batch: the window's items as history and, per row, the item that follows it."""
        hist, last_target = self.split.histories(examples, self.max_history)
        targets = torch.cat([hist[:, 1:], last_target.unsqueeze(1)], 1).masked_fill(hist < 0, -1)
        first = _first_column_in_use(hist)
        hist, targets = hist[:, first:], targets[:, first:]
        encoded = self.tokenizer.encode_history(hist)
        return {
            "history": encoded.tokens,
            "history_mask": encoded.mask,
            "position_targets": self.tokenizer.items_to_tokens(targets),
            "position_target_items": targets,
            "user_index": examples[:, 0],
        }

    def example_indices(self, split: str) -> torch.Tensor:
        """Rows of `split.examples[split]` this datamodule serves: all of them, except that `val_max_users` caps the
        valid split to a seeded random sample of users (`validation_sample`; the same users for every method)."""
        n = len(self.split.examples[split])
        sample = validation_sample(n, self.val_max_users, seed=self.val_sample_seed) if split == "valid" else None
        return torch.arange(n) if sample is None else torch.tensor(sample, dtype=torch.long)

    def num_examples(self, split: str) -> int:
        return len(self.example_indices(split))

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        rows = self.example_indices(split)
        n = len(rows)
        order, sampler = None, None
        if not shuffle:
            # evaluation order does not change metrics; similar lengths per batch make trimmed batches shorter
            order = rows[torch.sort(self.split.examples[split][rows, 1].clamp(max=self.max_history),
                                    stable=True).indices]
            rank, world = self._world()
            if world > 1:  # every user exactly once over all ranks (a padded DistributedSampler repeats users)
                sampler = UnrepeatedDistributedSampler(_ExampleIndex(n, order), num_replicas=world, rank=rank,
                                                       shuffle=False)
        return DataLoader(
            _ExampleIndex(n, order),
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=lambda idx: self.make_batch(split, idx),
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        if self._world()[1] > 1:
            # under DDP, Lightning shards with its DistributedSampler (seeded per epoch; bucketing is a CPU speed-up)
            return self._loader("train", self.batch_size, shuffle=True)
        # history length = target position; length buckets trim padding per batch
        lengths = self.split.examples["train"][:, 1].clamp(max=self.max_history) if self.length_bucketing else None
        n = self.num_examples("train")
        return ResumableDataLoader(
            _ExampleIndex(n),
            batch_sampler=EpochBatchSampler(n, batch_size=self.batch_size, seed=self.run_seed() or 0, lengths=lengths),
            num_workers=self.num_workers,
            collate_fn=lambda idx: self.make_batch("train", idx),
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
