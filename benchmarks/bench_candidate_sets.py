"""What one beam search for every candidate setting saves in an offline evaluation, on a real Beauty generator.

bench_beauty_quality selects the generator's dense candidates (the item-level top-50 the beam missed) and the hybrid's
prior candidates (the co-occurrence prior's top-20) on valid, so each variant needs the candidates of four settings:
beam only, + dense, + prior, + dense + prior. Searched one setting at a time, that is four beam searches per split;
`collect_candidate_sets` joins all four to one search. Then the selection sweep ranks the targets ~470 times per
split: `ranks` counts each target's rank instead of sorting the re-ranked list (`hit_ranks(reranked_items(...))`).

Both paths run here on the first --users valid users of a fitted run, timed in one process on
`torch.set_num_threads(OMP_NUM_THREADS)` threads, and their outputs are checked equal.

    OMP_NUM_THREADS=2 python benchmarks/bench_candidate_sets.py \
        --run runs/beauty_quality/generators/t5-items-collab-2threads-refit --users 2048

Writes benchmarks/results/candidate_sets_beauty.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SETTINGS = [(0, 0), (50, 0), (0, 20), (50, 20)]  # (dense candidates, prior candidates): bench_beauty_quality's


class FirstBatches:
    """A set-up SequenceDataModule whose valid loader stops after `batches` batches."""

    def __init__(self, dm, batches: int) -> None:
        self.dm, self.batches = dm, batches
        self.tokenizer, self.max_history = dm.tokenizer, dm.max_history

    def val_dataloader(self):
        loader = iter(self.dm.val_dataloader())
        return [batch for _, batch in zip(range(self.batches), loader)]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="a fitted generator run (generate/checkpoints/best.ckpt)")
    p.add_argument("--sequences-run", type=Path, default=REPO / "runs" / "beauty_quality" / "sids_collab",
                   help="the SID run whose data/sequences.jsonl the co-occurrence prior is fitted on")
    p.add_argument("--users", type=int, default=2048, help="valid users searched (rounded up to whole batches of 256)")
    p.add_argument("--beam", type=int, default=50)
    p.add_argument("--sweep-points", type=int, default=40, help="re-ranking weights timed in the rank sweep")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "candidate_sets_beauty.json")
    args = p.parse_args(argv)
    checkpoint = args.run / "generate" / "checkpoints" / "best.ckpt"
    if not checkpoint.exists():
        sys.exit(f"{checkpoint} not found: fit a generator first (bench_beauty_quality.py --phases fit)")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

    from deepinterestgr.data.io import load_catalog, load_sequences
    from deepinterestgr.generate.data import SequenceDataModule
    from deepinterestgr.generate.evaluation import (
        collect_candidate_sets,
        collect_candidates,
        ranks,
        reranked_items,
    )
    from deepinterestgr.generate.metrics import hit_ranks
    from deepinterestgr.generate.module import GeneratorModule
    from deepinterestgr.generate.prior import CooccurrencePrior

    module = GeneratorModule.load_from_checkpoint(checkpoint, map_location="cpu")
    sequences = [list(s.items[:-2]) for s in load_sequences(str(args.sequences_run))]  # the protocol's training data
    module.ranker.prior = CooccurrencePrior().fit(sequences, num_items=len(load_catalog(str(args.sequences_run))))
    dm = SequenceDataModule(str(args.run), max_history=20, eval_batch_size=256)
    dm.setup("test")
    data = FirstBatches(dm, -(-args.users // 256))

    start = time.perf_counter()
    alone = {s: collect_candidates(module, data, "valid", beam_size=args.beam, dense_candidates=s[0],
                                   prior_candidates=s[1], progress=False) for s in SETTINGS}
    alone_s = time.perf_counter() - start
    start = time.perf_counter()
    joint = collect_candidate_sets(module, data, "valid", beam_size=args.beam, joins=SETTINGS, progress=False)
    joint_s = time.perf_counter() - start
    for s in SETTINGS:
        for field in alone[s]._fields:
            a, b = getattr(alone[s], field), getattr(joint[s], field)
            if (a is None) != (b is None) or (a is not None and not torch.equal(a, b)):
                sys.exit(f"setting {s}: {field} differs between the two paths")

    c = joint[50, 20]
    weights = [0.25 * i for i in range(args.sweep_points)]
    start = time.perf_counter()
    sorted_ranks = [hit_ranks(reranked_items(c, w, exclude_history=True), c.targets) for w in weights]
    sorted_s = time.perf_counter() - start
    start = time.perf_counter()
    counted = [ranks(c, w, exclude_history=True) for w in weights]
    counted_s = time.perf_counter() - start
    if not all(torch.equal(a, b) for a, b in zip(sorted_ranks, counted)):
        sys.exit("counted ranks differ from the sorted list's")

    users = len(c.targets)
    result = {"run": str(args.run), "users": users, "beam": args.beam, "settings": SETTINGS,
              "threads": torch.get_num_threads(), "candidates_equal": True,
              "search_each_setting_s": round(alone_s, 2), "one_search_s": round(joint_s, 2),
              "search_speedup": round(alone_s / joint_s, 2),
              "rank_points": len(weights), "candidates_per_user": c.items.shape[1],
              "sorted_ranks_s": round(sorted_s, 3), "counted_ranks_s": round(counted_s, 3),
              "rank_speedup": round(sorted_s / counted_s, 1), "ranks_equal": True}
    print(f"{users} valid users, beam {args.beam}, settings {SETTINGS}, {result['threads']} threads")
    print(f"  candidates: one search per setting {alone_s:.1f} s, one search for all {joint_s:.1f} s "
          f"({result['search_speedup']}x), outputs equal")
    print(f"  ranks of {len(weights)} sweep points on {c.items.shape[1]} candidates: sorted {sorted_s:.2f} s, "
          f"counted {counted_s:.2f} s ({result['rank_speedup']}x), equal")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
