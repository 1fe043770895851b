"""Training throughput (samples/s) of GeneratorModule under a Lightning Trainer, fp32 on CPU.

Times `--steps` optimizer steps after `--warmup` steps, for each architecture, with and without length-bucketed
batches. Uses `--run` (a run directory with data/sequences.jsonl + quantize/sid_table.*) or a synthetic
Beauty-sized one. Writes benchmarks/results/bench_generator_train.json.

    OMP_NUM_THREADS=1 python benchmarks/bench_generator_train.py --run /tmp/gen_beauty/run --steps 30
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import lightning as L  # noqa: E402
import torch  # noqa: E402

from deepinterestgr.generate.data import SequenceDataModule  # noqa: E402
from deepinterestgr.generate.module import GeneratorModule  # noqa: E402
from deepinterestgr.generate.t5 import T5SIDGenerator  # noqa: E402
from deepinterestgr.generate.testing import write_tiny_run  # noqa: E402

ARCHS = {
    "tiger": {},
    "small": dict(num_layers=2, num_decoder_layers=2, num_heads=4, d_kv=32, d_ff=256),
}


class StepTimer(L.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.t0, self.samples, self.steps = warmup, None, 0, 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if self.t0 is not None:
            self.samples += len(batch["target"])
            self.steps += 1


def measure(run: str, arch: str, bucketing: bool, *, batch_size: int, steps: int, warmup: int) -> dict:
    torch.manual_seed(0)
    dm = SequenceDataModule(run, batch_size=batch_size, length_bucketing=bucketing)
    model = GeneratorModule(generator=T5SIDGenerator(**ARCHS[arch]), early_stopping_patience=0)
    timer = StepTimer(warmup)
    trainer = L.Trainer(accelerator="cpu", devices=1, precision="32-true", max_steps=warmup + steps,
                        limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[timer])
    trainer.fit(model, datamodule=dm)
    elapsed = time.perf_counter() - timer.t0
    return {"arch": arch, "length_bucketing": bucketing, "batch_size": batch_size, "steps": timer.steps,
            "steps_per_s": round(timer.steps / elapsed, 3), "samples_per_s": round(timer.samples / elapsed, 1),
            "params": sum(p.numel() for p in model.generator.parameters())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default=None, help="run directory (default: a synthetic Beauty-sized one)")
    p.add_argument("--arch", nargs="+", default=["small", "tiger"], choices=sorted(ARCHS))
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_generator_train.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    run = args.run
    if run is None:
        run = str(write_tiny_run(Path(tempfile.mkdtemp()) / "run", num_items=12101, num_users=22363, codebook_size=256,
                                 min_len=5, max_len=20))
    rows = [measure(run, a, b, batch_size=args.batch_size, steps=args.steps, warmup=args.warmup)
            for a in args.arch for b in (True, False)]
    result = {"run": run, "threads": args.threads, "torch": torch.__version__, "load_avg_1m": os.getloadavg()[0],
              "results": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
