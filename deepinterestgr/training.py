"""Exact resume for the trainable stages: an interrupted fit continued from `last.ckpt` ends with the same weights
as an uninterrupted fit of the same config and seed.

Lightning restores weights, optimiser, scheduler, loop counters and callback state, but not the two sources of
randomness a fit consumes after that point:
- the order of training batches: `EpochBatchSampler` derives it from (seed, epoch) alone and
  `ResumableDataLoader` (torchdata's `StatefulDataLoader`) skips the batches of the interrupted epoch that were
  already trained on;
- the RNG draws inside a step (dropout, sampled candidates): `StepSeed` reseeds torch/python/numpy from
  (seed, global step) before every training batch, so no draw depends on what ran before the interruption.
Both draw from the run's seed, the resolved `seed_everything`, which LightningCLI hands to every `Seeded` module and
datamodule (`DigLightningCLI.instantiate_classes`). `resumable_checkpoint` decides whether a stage's `last.ckpt`
belongs to the fit about to run: same stage record (`artifacts.stage_record`) as the manifest the fit will write.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.data import Sampler
from torchdata.stateful_dataloader import StatefulDataLoader


def lightning_seed() -> int | None:
    """The seed of the last `seed_everything(n)` call in this process, or None.

    Only for modules and datamodules built outside LightningCLI (a script or test that calls `seed_everything` and
    builds its own Trainer): Lightning keeps that seed nowhere but in the PL_GLOBAL_SEED environment variable. Under
    the CLI the resolved seed is handed over explicitly (`Seeded.seed`), so a seed an earlier in-process run left in
    the environment never reaches a later one."""
    value = os.environ.get("PL_GLOBAL_SEED")
    return int(value) if value is not None else None


class Seeded:
    """A Lightning module or datamodule whose random draws follow the run's seed. `seed` is set by LightningCLI to the
    resolved `seed_everything`; unset, `run_seed` falls back to `lightning_seed()`."""

    seed: int | None = None

    def run_seed(self) -> int | None:
        return self.seed if self.seed is not None else lightning_seed()


def _mix(*values: int) -> int:
    # a 63-bit seed from several integers (SplitMix64 finaliser): nearby steps get unrelated streams
    x = 0x9E3779B97F4A7C15
    for v in values:
        x ^= (v + 0x9E3779B97F4A7C15 + (x << 6) + (x >> 2)) & 0xFFFFFFFFFFFFFFFF
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x = (x ^ (x >> 27)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


class EpochBatchSampler(Sampler[list[int]]):
    """Shuffled batches whose order is a function of (seed, epoch) only.

    With `lengths`, batches are length-bucketed: examples are shuffled, cut into pools of `pool_batches` batches,
    each pool sorted by length and split into batches, then all batches are shuffled (random at the batch level,
    homogeneous within a batch, so padding trimmed per batch costs less compute). Without, a plain shuffle.
    Lightning calls `set_epoch` before every epoch; `skip_next` drops the first batches of one epoch (resume).
    """

    def __init__(self, num_examples: int, *, batch_size: int, seed: int = 0, lengths: torch.Tensor | None = None,
                 pool_batches: int = 50) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if lengths is not None and len(lengths) != num_examples:
            raise ValueError(f"lengths has {len(lengths)} rows for {num_examples} examples")
        self.num_examples = num_examples
        self.batch_size = batch_size
        self.seed = seed
        self.lengths = lengths
        self.pool = batch_size * pool_batches
        self.epoch = 0
        self.served = 0  # batches handed out in the current epoch
        self._skip: tuple[int, int] | None = None  # (epoch, batches) to drop when that epoch is iterated

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip_next(self, batches: int, *, epoch: int) -> None:
        """Drop the first `batches` batches when `epoch` is iterated next (a resumed, interrupted epoch)."""
        self._skip = (int(epoch), max(0, int(batches)))

    def __len__(self) -> int:
        return (self.num_examples + self.batch_size - 1) // self.batch_size

    def batches(self, epoch: int) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(_mix(self.seed, epoch))
        perm = torch.randperm(self.num_examples, generator=g)
        if self.lengths is None:
            return list(perm.split(self.batch_size))
        batches = []
        for start in range(0, len(perm), self.pool):
            chunk = perm[start:start + self.pool]
            chunk = chunk[torch.sort(self.lengths[chunk], stable=True).indices]
            batches.extend(chunk.split(self.batch_size))
        return [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]

    def __iter__(self) -> Iterator[list[int]]:
        skip = self._skip[1] if self._skip is not None and self._skip[0] == self.epoch else 0
        self._skip = None
        self.served = skip
        for batch in self.batches(self.epoch)[skip:]:
            self.served += 1
            yield batch.tolist()


class ResumableDataLoader(StatefulDataLoader):
    """torchdata's `StatefulDataLoader` over an `EpochBatchSampler`, whose position in the epoch Lightning saves in
    its checkpoints and restores on resume (its "stateful dataloader" protocol), so a resumed epoch goes on after the
    batches already trained on. torchdata counts batches consumed, not drawn, so the position is exact with worker
    processes too (`benchmarks/bench_stateful_loader.py`: our earlier count of drawn batches lost 4 of 19 with 2
    workers). This subclass adds one guard: a state drawn with another seed is refused.
    """

    def __init__(self, dataset, *, batch_sampler: EpochBatchSampler, **kwargs) -> None:
        super().__init__(dataset, batch_sampler=batch_sampler, **kwargs)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "seed": self.batch_sampler.seed}

    def load_state_dict(self, state: dict) -> None:
        sampler: EpochBatchSampler = self.batch_sampler
        if state.get("seed", sampler.seed) != sampler.seed:
            raise ValueError(f"the checkpoint's data order was drawn with seed {state['seed']}, this run uses "
                             f"{sampler.seed}; resume with the same seed_everything or start a new fit")
        if "served" in state:  # a checkpoint of the loader before torchdata: (epoch, batches served) of one epoch
            sampler.set_epoch(int(state["epoch"]))
            sampler.skip_next(int(state["served"]), epoch=int(state["epoch"]))
            return
        super().load_state_dict({k: v for k, v in state.items() if k != "seed"})


class StepSeed(Callback):
    """Reseed torch / python / numpy RNGs from (seed, global step) before every training batch.

    The seed is the module's run seed (`Seeded.run_seed`) when there is one, else drawn once per fit; it is saved in
    the checkpoint, so a resumed fit draws exactly what the uninterrupted fit drew at every later step.
    """

    def __init__(self) -> None:
        self.seed: int | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.seed is None:
            seed = pl_module.run_seed() if isinstance(pl_module, Seeded) else lightning_seed()
            self.seed = seed if seed is not None else int(torch.randint(0, 2**31 - 1, ()).item())

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        s = _mix(self.seed or 0, trainer.global_step, trainer.global_rank)
        torch.manual_seed(s)
        random.seed(s)
        np.random.seed(s % 2**32)

    def state_dict(self) -> dict[str, int | None]:
        return {"seed": self.seed}

    def load_state_dict(self, state_dict: dict[str, int | None]) -> None:
        self.seed = state_dict.get("seed", self.seed)


FIT_RECORD = "fit_record.json"


class EMA(EMAWeightAveraging):
    """Lightning's exponential moving average of the weights (`EMAWeightAveraging`): validation ranks with the
    averaged weights, and every checkpoint's `state_dict` holds them (the raw weights travel beside them for resume),
    so the best checkpoint, its test, a policy started from it and `dig serve` all use the average.

    One change: Lightning also runs the callback's `on_load_checkpoint` when `trainer.test(ckpt_path=...)` loads a
    checkpoint in the process that fitted it, and there it would load the raw weights over the averaged ones, so the
    test would rank with weights that validation never selected. Outside fitting the checkpoint's `state_dict` (the
    average) stands.

    `configs/trainer/ema.yaml` adds it to a fit: `-c configs/trainer/ema.yaml`.
    """

    def __init__(self, decay: float = 0.999, update_starting_at_step: int | None = None) -> None:
        """
        Args:
            decay: weight of the running average per optimiser step (0.999: a horizon of ~1,000 steps).
            update_starting_at_step: the first step averaged (None: from the first step).
        """
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        super().__init__(decay=decay, update_starting_at_step=update_starting_at_step)

    def setup(self, trainer, pl_module, stage: str) -> None:
        buffers = [name for name, b in pl_module.named_buffers() if not torch.is_floating_point(b)]
        if stage == "fit" and buffers:
            # AveragedModel would average them as floats and write back truncated values
            raise ValueError(f"EMA cannot average the integer buffers {buffers[:5]} of {type(pl_module).__name__} "
                             "(they would come back rounded): fit this module without configs/trainer/ema.yaml")
        super().setup(trainer, pl_module, stage)

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)


class ValidationSnapshots(Callback):
    """The weights at every validation, as `<dirpath>/step<global step>.ckpt` (weights-only checkpoints that
    `GeneratorModule.load_from_checkpoint` reads), beside the stages' own best/last checkpoints.

    For equal-step comparisons: a fit that trains faster under a time cap can be evaluated at the step a slower
    fit would have stopped at, from the same run. Not a `ModelCheckpoint` on purpose: a module's own checkpoint
    callbacks (`configure_callbacks`) replace every trainer `ModelCheckpoint`. `configs/trainer/snapshots.yaml` adds
    it to a fit; each snapshot costs the size of the weights (~38 MB for the Beauty generator).
    """

    def __init__(self, dirpath: str | None = None) -> None:
        """
        Args:
            dirpath: where the snapshots go (None: `<trainer.default_root_dir>/snapshots`).
        """
        self.dirpath = dirpath

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        out = Path(self.dirpath or Path(trainer.default_root_dir) / "snapshots")
        trainer.save_checkpoint(out / f"step{trainer.global_step}.ckpt", weights_only=True)


def snapshot_steps(dirpath: str | os.PathLike) -> dict[int, Path]:
    """{global step: path} of the `ValidationSnapshots` in a folder."""
    return {int(p.stem.removeprefix("step")): p for p in Path(dirpath).glob("step*.ckpt")
            if p.stem.removeprefix("step").isdigit()}


def resumable_checkpoint(stage_dir: str | os.PathLike, config, inputs: dict[str, str | None], *,
                         fresh: bool = False) -> Path | None:
    """`<stage_dir>/checkpoints/last.ckpt` when a fit of this very stage record wrote it, else None.

    The record (`artifacts.stage_record`: resolved config, input manifest hashes, their `config_hash`) is the one the
    stage's manifest will hold when the fit finishes; it is kept in `<stage_dir>/fit_record.json` meanwhile. Resuming
    a checkpoint of another record would silently keep the old model (a finished fit resumes at its last epoch and
    trains no further), so checkpoints of another record -- or any, with `fresh` -- are moved aside to
    `checkpoints.previous/` (never deleted), and the record of the fit about to start is written.
    """
    from deepinterestgr.artifacts import atomic_write_json, stage_record

    stage_dir = Path(stage_dir)
    record = stage_record(config, inputs)
    checkpoints = stage_dir / "checkpoints"
    last = checkpoints / "last.ckpt"
    record_path = stage_dir / FIT_RECORD
    try:
        recorded = json.loads(record_path.read_text(encoding="utf-8")).get("config_hash")
    except (OSError, json.JSONDecodeError, AttributeError):
        recorded = None
    if last.exists() and recorded == record["config_hash"] and not fresh:
        print(f"[{stage_dir.name}] resuming the interrupted fit from {last}", flush=True)
        return last
    if checkpoints.exists():
        previous = stage_dir / "checkpoints.previous"
        if previous.exists():
            shutil.rmtree(previous)
        checkpoints.rename(previous)
        why = "a fresh fit was asked for" if fresh else "its config or inputs changed since"
        print(f"[{stage_dir.name}] {why}: moved the old checkpoints to {previous}", flush=True)
    stage_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(record_path, record)
    return None
