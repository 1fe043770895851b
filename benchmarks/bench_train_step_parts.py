"""Where a generator training step's time goes on a real catalog: prefix batches vs every-position windows, with and
without the full-catalog item loss (the Beauty recipe, `generator_t5_items.yaml` / `_causal.yaml`).

Each setting times forward + backward + AdamW on the same `--steps` batches (after 2 warm-up steps), fp32 on CPU, in
one process with `torch.set_num_threads(OMP_NUM_THREADS)`. Batches: 256 prefixes (one target each) or 44 windows
(~256 targets: every row predicts the next item); then the fit's own length-bucketed batches of 256 prefixes with
`nn.Dropout` and with `FastDropout` (`T5SIDGenerator(fast_dropout=True)`).

    OMP_NUM_THREADS=2 python benchmarks/bench_train_step_parts.py --run runs/beauty_quality/sids_collab

`--identity-tables N ...` times only the recipe's step (bucketed batches, FastDropout) at each size of the hashed
identity table (`item_buckets`; 0 = none), the rows' parameters, gradients and AdamW state that every step touches:

    OMP_NUM_THREADS=2 python benchmarks/bench_train_step_parts.py --identity-tables 65536 16384 0 \
        --out benchmarks/results/train_step_identity_table_beauty.json

Writes benchmarks/results/train_step_parts_beauty.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
import yaml  # noqa: E402

from deepinterestgr.cpu_allocator import keep_freed_memory  # noqa: E402
from deepinterestgr.generate.data import SequenceDataModule  # noqa: E402
from deepinterestgr.generate.module import GeneratorModule  # noqa: E402
from deepinterestgr.generate.t5 import T5SIDGenerator  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
#: the generator of the Beauty recipe, read from its config so that the timed model is the fitted one
ARCH = yaml.safe_load((REPO / "configs" / "model" / "generator_t5_items.yaml").read_text())[
    "model"]["init_args"]["generator"]["init_args"]


def add_run_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", type=Path, default=REPO / "runs" / "beauty_quality" / "sids_collab",
                   help="a run directory with data/sequences.jsonl and quantize/sid_table.* (Beauty's SID run)")


def require_sequences(run: Path) -> None:
    if not (run / "data" / "sequences.jsonl").exists():
        sys.exit(f"{run}: no data/sequences.jsonl; build the SIDs first "
                 "(python benchmarks/bench_beauty_quality.py --phases sids --variants t5-items-collab)")


def time_setting(run: Path, *, windows: bool, item_loss_weight: float, steps: int, fast_dropout: bool = False,
                 bucketed: bool = False, item_buckets: int = ARCH["item_buckets"]) -> dict:
    batch_size = 44 if windows else 256
    dm = SequenceDataModule(str(run), max_history=20, batch_size=batch_size, all_positions=windows)
    dm.setup()
    n = len(dm.split.examples["train"])
    g = torch.Generator().manual_seed(0)
    if bucketed:  # the fit's own batches: length-bucketed, padding trimmed per batch
        loader = iter(dm.train_dataloader())
        batches = [next(loader) for _ in range(steps + 2)]
    else:
        batches = [dm.make_batch("train", torch.randint(0, n, (batch_size,), generator=g)) for _ in range(steps + 2)]
    torch.manual_seed(0)
    arch = {**ARCH, "item_buckets": item_buckets}
    module = GeneratorModule(generator=T5SIDGenerator(**arch, causal=windows, fast_dropout=fast_dropout),
                             renormalize=True,
                             item_loss_weight=item_loss_weight)
    module.set_tokenizer(dm.tokenizer)
    module.train()
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3, fused=True)
    times = []
    for batch in batches:
        t0 = time.perf_counter()
        opt.zero_grad()
        module._losses(batch)["loss"].backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    targets = [int((b["position_target_items"] >= 0).sum()) if windows else len(b["target"]) for b in batches[2:]]
    s_per_step = sum(times[2:]) / steps
    return {"batch": f"{batch_size} {'windows' if windows else 'prefixes'}{', length-bucketed' if bucketed else ''}",
            "item_loss_weight": item_loss_weight, "fast_dropout": fast_dropout, "item_buckets": item_buckets,
            "s_per_step": round(s_per_step, 4), "targets_per_step": round(sum(targets) / steps, 1),
            "targets_per_s": round(sum(targets) / sum(times[2:]), 1)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_argument(p)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--bucketed-steps", type=int, default=40,
                   help="steps of the length-bucketed settings (their batches differ in length: more steps)")
    p.add_argument("--identity-tables", type=int, nargs="+", default=None, metavar="N",
                   help="time only the recipe's step (bucketed batches, FastDropout) at each identity-table size "
                        "(item_buckets; 0 = no identity vectors), in --passes alternating passes, with the "
                        "memory-keeping allocator of a `dig` process")
    p.add_argument("--passes", type=int, default=3, help="with --identity-tables: passes over the sizes")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "train_step_parts_beauty.json")
    args = p.parse_args(argv)
    require_sequences(args.run)
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    rows = []
    if args.identity_tables is not None:
        keep_freed_memory()  # as every `dig` process does: the fit's step, not glibc's default allocator's
        # passes in alternating order, so that drift of the machine's speed hits every size alike; medians per size
        for i in range(args.passes):
            for size in args.identity_tables[::-1] if i % 2 else args.identity_tables:
                rows.append(time_setting(args.run, windows=False, item_loss_weight=1.0, steps=args.bucketed_steps,
                                         fast_dropout=True, bucketed=True, item_buckets=size))
                print(rows[-1], flush=True)
        first = args.identity_tables[0]
        median = {size: statistics.median(r["s_per_step"] for r in rows if r["item_buckets"] == size)
                  for size in args.identity_tables}
        summary = [{"item_buckets": size, "median_s_per_step": round(m, 4),
                    f"speedup_vs_{first}": round(median[first] / m, 3)} for size, m in median.items()]
        for line in summary:
            print(line)
        write(args, rows, summary=summary)
        return
    for windows in (False, True):
        for weight in (1.0, 0.0):
            rows.append(time_setting(args.run, windows=windows, item_loss_weight=weight, steps=args.steps))
            print(rows[-1], flush=True)
    # the recipe's step (the fit's length-bucketed batches of 256 prefixes, item loss), with nn.Dropout's bernoulli_
    # masks and with FastDropout's
    for fast in (False, True):
        rows.append(time_setting(args.run, windows=False, item_loss_weight=1.0, steps=args.bucketed_steps,
                                 fast_dropout=fast, bucketed=True))
        print(rows[-1], flush=True)
    write(args, rows)


def write(args, rows: list[dict], **extra) -> None:
    record = {"run": str(args.run), "threads": torch.get_num_threads(), "steps": args.steps,
              "bucketed_steps": args.bucketed_steps, "rows": rows, **extra,
              "command": "python benchmarks/bench_train_step_parts.py " + " ".join(sys.argv[1:])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
