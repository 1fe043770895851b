"""Does torchdata's `StatefulDataLoader` keep our exact-resume guarantee? Measured against the loader it replaced.

    python benchmarks/bench_stateful_loader.py

`ResumableDataLoader` (deepinterestgr/training.py) is now a `StatefulDataLoader` with a seed guard; the loader it
replaced (a DataLoader saving the count of batches its sampler had *drawn*) is kept here as `DrawnCountLoader` so
the measurement that decided the switch can be rerun.

Three checks per loader, each over our `EpochBatchSampler` (batch order a function of (seed, epoch) only):
  loader     interrupted after n batches of an epoch, state saved, a fresh loader restored: the batches it yields
             complete the uninterrupted epoch exactly (num_workers 0 and 2: worker prefetching is where a count of
             batches *drawn* rather than *consumed* goes wrong)
  lightning  a tiny LightningModule fitted for 3 epochs vs stopped mid-epoch (after a checkpoint) and resumed from
             that checkpoint with `ckpt_path`: the sequence of example ids trained on, and the final weights, equal
  speed      seconds per epoch of plain iteration (collation included), the loaders' own overhead
Writes benchmarks/results/stateful_loader.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import lightning.pytorch as pl  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch.callbacks import Callback  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from deepinterestgr.training import EpochBatchSampler, ResumableDataLoader, StepSeed  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
N, BATCH, SEED = 203, 8, 5


class DrawnCountLoader(DataLoader):
    """The loader before torchdata: its state is the number of batches the sampler handed out."""

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.batch_sampler.epoch, "served": self.batch_sampler.served}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.batch_sampler.set_epoch(int(state["epoch"]))
        self.batch_sampler.skip_next(int(state["served"]), epoch=int(state["epoch"]))


def drawn_count(dataset, *, batch_sampler, num_workers=0):
    return DrawnCountLoader(dataset, batch_sampler=batch_sampler, num_workers=num_workers)


def ours(dataset, *, batch_sampler, num_workers=0):
    return ResumableDataLoader(dataset, batch_sampler=batch_sampler, num_workers=num_workers)


LOADERS = {"DrawnCountLoader (before)": drawn_count, "ResumableDataLoader (StatefulDataLoader)": ours}


def _sampler() -> EpochBatchSampler:
    return EpochBatchSampler(N, batch_size=BATCH, seed=SEED, lengths=torch.arange(N) % 17, pool_batches=4)


def loader_check(make, num_workers: int, stop_after: int = 7, epoch: int = 1) -> dict:
    data = list(range(N))
    full = make(data, batch_sampler=_sampler(), num_workers=num_workers)
    full.batch_sampler.set_epoch(epoch)
    expected = [b.tolist() for b in full]
    first = make(data, batch_sampler=_sampler(), num_workers=num_workers)
    first.batch_sampler.set_epoch(epoch)
    it = iter(first)
    seen = [next(it).tolist() for _ in range(stop_after)]
    state = first.state_dict()
    del it
    resumed = make(data, batch_sampler=_sampler(), num_workers=num_workers)
    resumed.load_state_dict(state)
    resumed.batch_sampler.set_epoch(epoch)  # as Lightning does before iterating the resumed epoch
    rest = [b.tolist() for b in resumed]
    return {"num_workers": num_workers, "exact": seen + rest == expected, "batches_after_resume": len(rest),
            "batches_expected_after_resume": len(expected) - stop_after}


class Tiny(pl.LightningModule):
    def __init__(self, make) -> None:
        super().__init__()
        self.make = make
        self.layer = torch.nn.Linear(1, 1)
        self.seen: list[int] = []

    def train_dataloader(self):
        return self.make(torch.arange(N, dtype=torch.float32).unsqueeze(1), batch_sampler=_sampler())

    def training_step(self, batch, batch_idx):
        self.seen += batch[:, 0].long().tolist()
        noise = torch.rand(()) * 0.01  # a draw inside the step: StepSeed makes it a function of the step
        return ((self.layer(batch / N) - 1 - noise) ** 2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            trainer.save_checkpoint(Path(trainer.default_root_dir) / "mid.ckpt")
            trainer.should_stop = True


def _trainer(root: str, *callbacks) -> pl.Trainer:
    return pl.Trainer(max_epochs=3, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, callbacks=[StepSeed(), *callbacks], default_root_dir=root,
                      enable_checkpointing=False)


def lightning_check(make, stop_step: int = 37) -> dict:
    with tempfile.TemporaryDirectory() as root:
        pl.seed_everything(SEED, verbose=False)
        full = Tiny(make)
        _trainer(root).fit(full)
        pl.seed_everything(SEED, verbose=False)
        first = Tiny(make)
        _trainer(root, StopAt(stop_step)).fit(first)
        pl.seed_everything(SEED, verbose=False)
        resumed = Tiny(make)
        _trainer(root).fit(resumed, ckpt_path=str(Path(root) / "mid.ckpt"))
    same_ids = first.seen + resumed.seen == full.seen
    same_weights = all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), resumed.state_dict().values()))
    return {"stop_step": stop_step, "steps_per_epoch": -(-N // BATCH), "same_examples_in_order": same_ids,
            "same_final_weights": same_weights,
            "examples_trained": [len(full.seen), len(first.seen) + len(resumed.seen)]}


def speed(make, epochs: int = 20) -> float:
    loader = make(list(range(N * 50)), batch_sampler=EpochBatchSampler(N * 50, batch_size=64, seed=SEED))
    t0 = time.perf_counter()
    for epoch in range(epochs):
        loader.batch_sampler.set_epoch(epoch)
        for _ in loader:
            pass
    return (time.perf_counter() - t0) / epochs


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=RESULTS / "stateful_loader.json")
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    import torchdata
    out = {"torchdata": torchdata.__version__, "lightning": pl.__version__, "loaders": {}}
    for name, make in LOADERS.items():
        rec = {"loader": [loader_check(make, w) for w in (0, 2)], "lightning": lightning_check(make),
               "s_per_epoch": round(speed(make), 4)}
        out["loaders"][name] = rec
        print(f"{name}: loader exact resume (workers 0 / 2): "
              + " / ".join(str(r["exact"]) for r in rec["loader"])
              + f"; Lightning resume: same examples {rec['lightning']['same_examples_in_order']}, "
              f"same weights {rec['lightning']['same_final_weights']}; {rec['s_per_epoch'] * 1000:.1f} ms per epoch "
              f"of {N * 50} examples")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
