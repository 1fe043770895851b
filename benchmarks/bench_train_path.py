"""What the faster CPU training path buys per generator training step on Beauty, and where it comes from.

The Beauty recipe's step (`generator_t5_items.yaml`: forward + backward + AdamW on the fit's own length-bucketed
batches of 256 prefixes, fp32) on the path before this change and with each change added in turn:
  before           glibc's default allocator, the catalog's item vectors gathered [items, S, d] then summed, nn.Dropout
  + keep memory    glibc keeps freed memory in the process (`deepinterestgr.cpu_allocator`, on in every `dig` process)
  + embedding_bag  item vectors summed by `embedding_bag` (`t5._bag_sum`, the shipped code)
  + FastDropout    `T5SIDGenerator(fast_dropout=True)`: the same dropout, masks from 16-bit uniforms
The settings alternate in blocks of `--block` steps inside one process (so machine drift hits them alike) and each
reports its median block. `fastpath_speedup` (before / all three) is the step ratio that
`bench_beauty_quality.py` uses to place its "-equal-steps" row: the step the old path reaches in the same cap.

    OMP_NUM_THREADS=2 python benchmarks/bench_train_path.py --run runs/beauty_quality/sids_collab

Writes benchmarks/results/train_path_beauty.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from deepinterestgr.cpu_allocator import keep_freed_memory, restore_defaults  # noqa: E402
from deepinterestgr.generate.data import SequenceDataModule  # noqa: E402
from deepinterestgr.generate.module import GeneratorModule  # noqa: E402
from deepinterestgr.generate.t5 import HistoryItemEmbedding, T5SIDGenerator  # noqa: E402
from deepinterestgr.generate.tokenizer import PAD  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train_step_parts import ARCH, REPO, add_run_argument, require_sequences  # noqa: E402


def gathered_identity_vectors(self, tokens: torch.Tensor) -> torch.Tensor:
    """`HistoryItemEmbedding.identity_vectors` before embedding_bag (no unseen items on this path)."""
    return self.item_hash(self.hash_rows(tokens)).sum(-2) * (tokens != PAD).any(-1, keepdim=True)


def gathered_item_vectors(self, tokens: torch.Tensor) -> torch.Tensor:
    """`HistoryItemEmbedding.item_vectors` before embedding_bag: [..., S, d] gathered, masked, summed."""
    emb = (self.token_embedding(tokens) * (tokens != PAD).unsqueeze(-1)).sum(-2)
    return emb + gathered_identity_vectors(self, tokens)


@contextmanager
def item_vectors_by_gather(enabled: bool):
    shipped = HistoryItemEmbedding.item_vectors, HistoryItemEmbedding.identity_vectors
    if enabled:
        HistoryItemEmbedding.item_vectors = gathered_item_vectors
        HistoryItemEmbedding.identity_vectors = gathered_identity_vectors
    try:
        yield
    finally:
        HistoryItemEmbedding.item_vectors, HistoryItemEmbedding.identity_vectors = shipped


SETTINGS = {  # name -> (keep freed memory, embedding_bag, FastDropout)
    "before": (False, False, False),
    "+ keep memory": (True, False, False),
    "+ embedding_bag": (True, True, False),
    "+ FastDropout": (True, True, True),
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_argument(p)
    p.add_argument("--block", type=int, default=10, help="steps per timed block")
    p.add_argument("--rounds", type=int, default=6, help="blocks per setting (interleaved)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "train_path_beauty.json")
    args = p.parse_args(argv)
    require_sequences(args.run)
    threads = int(os.environ["OMP_NUM_THREADS"])
    torch.set_num_threads(threads)
    dm = SequenceDataModule(str(args.run), max_history=20, batch_size=256)
    dm.setup()
    loader = iter(dm.train_dataloader())
    batches = [next(loader) for _ in range(args.block)]

    modules = {}
    for fast in (False, True):
        torch.manual_seed(0)
        module = GeneratorModule(generator=T5SIDGenerator(**ARCH, fast_dropout=fast), renormalize=True,
                                 item_loss_weight=1.0)
        module.set_tokenizer(dm.tokenizer)
        module.train()
        modules[fast] = (module, torch.optim.AdamW(module.parameters(), lr=1e-3, fused=True))

    def run_block(setting: str) -> float:
        keep, bag, fast = SETTINGS[setting]
        if keep:
            keep_freed_memory()
        else:
            restore_defaults()
        module, opt = modules[fast]
        with item_vectors_by_gather(not bag):
            t0 = time.perf_counter()
            for batch in batches:
                opt.zero_grad()
                module._losses(batch)["loss"].backward()
                opt.step()
            return (time.perf_counter() - t0) / len(batches)

    for setting in SETTINGS:  # warm-up: first touches, lazy inits
        run_block(setting)
    blocks = {s: [] for s in SETTINGS}
    for _ in range(args.rounds):
        for setting in SETTINGS:
            blocks[setting].append(run_block(setting))
    restore_defaults()

    before = statistics.median(blocks["before"])
    rows = [{"setting": s, "keep_freed_memory": SETTINGS[s][0], "embedding_bag": SETTINGS[s][1],
             "fast_dropout": SETTINGS[s][2], "s_per_step": round(statistics.median(b), 4),
             "blocks_s_per_step": [round(x, 4) for x in b],
             "speedup_vs_before": round(before / statistics.median(b), 3)} for s, b in blocks.items()]
    for r in rows:
        print(f"{r['setting']:<16} {r['s_per_step']:.4f} s/step  {r['speedup_vs_before']:.2f}x")
    out = {"run": str(args.run), "threads": threads, "batch": "256 prefixes, length-bucketed",
           "block_steps": args.block, "rounds": args.rounds, "rows": rows,
           "fastpath_speedup": rows[-1]["speedup_vs_before"],
           "load_avg_1m": round(os.getloadavg()[0], 2),
           "command": "OMP_NUM_THREADS=%d python benchmarks/bench_train_path.py %s" % (threads, " ".join(
               sys.argv[1:] if argv is None else argv))}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
