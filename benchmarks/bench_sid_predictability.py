"""How much sequence signal the first SID level carries: can the next item's level-0 code be predicted from the last
item's level-0 code?

For the run's own SID table and for 256-way k-means codes of three item embeddings — the run's text embeddings, a
co-occurrence SVD of the training sequences (window 3, no valid/test items), and both concatenated — reports the
marginal entropy of the next item's code, the valid-split cross-entropy of a smoothed code-bigram count model, and
how often the next item shares the last item's code. Writes JSON:

    python benchmarks/bench_sid_predictability.py --run runs/beauty \\
        --out benchmarks/results/sid_predictability_beauty.json
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from deepinterestgr.generate.data import SequenceDataModule  # noqa: E402


def kmeans(x: torch.Tensor, k: int, iters: int = 15, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = x[torch.randperm(len(x), generator=g)[:k]].clone()
    for _ in range(iters):
        assign = torch.cdist(x, centres).argmin(1)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).unsqueeze(1)
        centres = torch.where(counts > 0, sums / counts.clamp(min=1), centres)
    return assign


def cooccurrence_svd(split, num_items: int, dim: int = 64, window: int = 3) -> torch.Tensor:
    rows, cols = [], []
    ends = torch.cat([split.starts[1:], torch.tensor([len(split.items)])])
    for start, end in zip(split.starts.tolist(), ends.tolist()):
        train = split.items[start:end - 2].tolist()  # valid and test targets never enter
        for i, a in enumerate(train):
            for b in train[max(0, i - window):i] + train[i + 1:i + 1 + window]:
                rows.append(a)
                cols.append(b)
    a = torch.sparse_coo_tensor(torch.tensor([rows, cols]), torch.ones(len(rows)), (num_items, num_items)).coalesce()
    degree = torch.sparse.sum(a, 1).to_dense().clamp(min=1)
    i = a.indices()
    normed = torch.sparse_coo_tensor(i, a.values() / (degree[i[0]] * degree[i[1]]).sqrt(), a.shape).coalesce()
    u, s, _ = torch.svd_lowrank(normed, q=dim, niter=4)
    return torch.nn.functional.normalize(u * s.sqrt(), dim=-1)


def predictability(split, code: torch.Tensor, k: int) -> dict:
    hist, target = split.histories(split.examples["train"], 1)
    last, nxt = code[hist[:, -1]].tolist(), code[target].tolist()
    marginal = collections.Counter(nxt)
    n = len(nxt)
    after = collections.defaultdict(collections.Counter)
    for a, b in zip(last, nxt):
        after[a][b] += 1
    vhist, vtarget = split.histories(split.examples["valid"], 1)
    ce = shared = 0.0
    for a, b in zip(code[vhist[:, -1]].tolist(), code[vtarget].tolist()):
        prior = (marginal[b] + 1) / (n + k)
        counts = after[a]
        ce -= math.log((counts[b] + 20 * prior) / (sum(counts.values()) + 20))
        shared += a == b
    entropy = -sum(c / n * math.log(c / n) for c in marginal.values())
    return {"marginal_entropy": round(entropy, 3), "valid_code_bigram_ce": round(ce / len(vtarget), 3),
            "next_shares_code": round(shared / len(vtarget), 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="run directory with data/, evidence/ and quantize/")
    p.add_argument("--codes", type=int, default=256)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "sid_predictability.json"))
    args = p.parse_args()
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    run = Path(args.run)
    dm = SequenceDataModule(str(run))
    dm.setup()
    split, n = dm.split, dm.tokenizer.num_items
    text = next(iter(load_file(run / "evidence" / "text_embeddings.safetensors").values())).float()
    text = torch.nn.functional.normalize(text, dim=-1)
    collab = cooccurrence_svd(split, n)
    codes = {
        "run SID table, level 0": dm.tokenizer.table.codes[:, 0],
        "k-means of text embeddings": kmeans(text, args.codes),
        "k-means of co-occurrence SVD-64": kmeans(collab, args.codes),
        "k-means of text + co-occurrence": kmeans(torch.cat([text, collab], 1) / math.sqrt(2), args.codes),
    }
    result = {"run": str(run), "codes": args.codes,
              "results": {name: predictability(split, c.long(), args.codes) for name, c in codes.items()}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
