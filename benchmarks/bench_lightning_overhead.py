"""Lightning's training-loop overhead: the same GeneratorModule, batches, optimizer and schedule in a Lightning
Trainer and in a plain PyTorch loop, as a ratio of step times (fp32, CPU).

    OMP_NUM_THREADS=1 python benchmarks/bench_lightning_overhead.py --run runs/beauty_quality/sids_text --steps 60

Both loops draw the same length-bucketed batches (one EpochBatchSampler seed) and run the same `_loss`, gradient
clipping (1.0), AdamW step and LR schedule; the Trainer has logging every 50 steps and no checkpointing, validation
or progress bar. The two loops alternate in --repeats rounds so background load hits both alike. Writes
benchmarks/results/lightning_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import lightning as L  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from deepinterestgr.generate.data import SequenceDataModule  # noqa: E402
from deepinterestgr.generate.module import GeneratorModule  # noqa: E402
from deepinterestgr.generate.t5 import T5SIDGenerator  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def build(run: str, config: Path, batch_size: int) -> tuple[GeneratorModule, SequenceDataModule]:
    init = yaml.safe_load(config.read_text())["model"]["init_args"]
    generator = T5SIDGenerator(**init.pop("generator")["init_args"])
    torch.manual_seed(0)
    dm = SequenceDataModule(run, batch_size=batch_size)
    dm.setup("fit")
    module = GeneratorModule(generator=generator, **{k: v for k, v in init.items() if k != "monitor"})
    module.set_tokenizer(dm.tokenizer)
    return module, dm


class _Timer(L.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.t0, self.steps = warmup, None, 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.steps += self.t0 is not None


def lightning_step_s(run: str, config: Path, *, batch_size: int, steps: int, warmup: int) -> float:
    module, dm = build(run, config, batch_size)
    timer = _Timer(warmup)
    trainer = L.Trainer(accelerator="cpu", devices=1, precision="32-true", max_steps=warmup + steps,
                        limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, gradient_clip_val=1.0, log_every_n_steps=50, callbacks=[timer])
    module.configure_callbacks = lambda: []  # no checkpoint / early stopping: the loop alone is measured
    trainer.fit(module, datamodule=dm)
    return (time.perf_counter() - timer.t0) / timer.steps


def plain_step_s(run: str, config: Path, *, batch_size: int, steps: int, warmup: int) -> float:
    module, dm = build(run, config, batch_size)
    module.train()
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False)  # only for estimated_stepping_batches
    module.trainer = trainer
    opt_config = module.configure_optimizers()
    module.trainer = None
    optimizer, scheduler = opt_config["optimizer"], opt_config["lr_scheduler"]["scheduler"]
    t0 = None
    for i, batch in enumerate(dm.train_dataloader()):
        if i == warmup:
            t0 = time.perf_counter()
        if i == warmup + steps:
            break
        loss = module._loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="run directory with data/ and quantize/")
    p.add_argument("--config", type=Path, default=REPO / "configs" / "model" / "generator_t5_items.yaml")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "lightning_overhead.json")
    args = p.parse_args()
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    kw = dict(batch_size=args.batch_size, steps=args.steps, warmup=args.warmup)
    rounds = []
    for _ in range(args.repeats):
        rounds.append({"plain_s_per_step": plain_step_s(args.run, args.config, **kw),
                       "lightning_s_per_step": lightning_step_s(args.run, args.config, **kw)})
    plain = min(r["plain_s_per_step"] for r in rounds)
    lightning = min(r["lightning_s_per_step"] for r in rounds)
    result = {"config": str(args.config.relative_to(REPO)), **kw, "rounds": rounds, "plain_s_per_step": round(plain, 4),
              "lightning_s_per_step": round(lightning, 4), "ratio_lightning_over_plain": round(lightning / plain, 3),
              "threads": torch.get_num_threads(), "load_avg_1m": os.getloadavg()[0]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
