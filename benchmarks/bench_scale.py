"""Catalog-scale costs: SID assignment, tokenizer + prefix-trie build, and constrained decoding latency per user
at 10k / 100k / 1M items (random 3x256 codes, i.e. the collision pattern of a uniform quantizer).

    python benchmarks/bench_scale.py --sizes 10000 100000 1000000

Prints a table and writes benchmarks/results/bench_scale.json. Peak memory is the process's max RSS growth
measured around each step (resource.getrusage), so run it alone.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from deepinterestgr.generate.search import constrained_beam_search  # noqa: E402
from deepinterestgr.generate.t5 import T5SIDGenerator  # noqa: E402
from deepinterestgr.generate.tokenizer import SIDTokenizer  # noqa: E402
from deepinterestgr.generate.trie import SIDTrie  # noqa: E402
from deepinterestgr.quantize.sid import assign_sids  # noqa: E402


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn):
    before = max_rss_mb()
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start, max(0.0, max_rss_mb() - before)


def bench(n: int, *, users: int, beam: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 256, (n, 3), generator=g)
    table, t_assign, m_assign = timed(lambda: assign_sids(codes, codebook_size=256))
    tok, t_tok, m_tok = timed(lambda: SIDTokenizer(table))
    trie, t_trie, m_trie = timed(lambda: SIDTrie.from_tokenizer(tok))
    torch.manual_seed(seed)
    model = T5SIDGenerator(d_model=64, num_layers=2, num_decoder_layers=2, num_heads=4, d_kv=16, d_ff=256, dropout=0.0)
    model.build(vocab_size=tok.vocab_size, sid_length=tok.sid_length)
    model.eval()
    hist_items = torch.randint(0, n, (users, 20), generator=g)
    history = tok.item_tokens[hist_items]
    mask = torch.ones(users, 20, dtype=torch.bool)
    with torch.no_grad():
        constrained_beam_search(model, trie, history[:2], mask[:2], beam_size=beam)  # warm-up
        result, t_search, _ = timed(lambda: constrained_beam_search(model, trie, history, mask, beam_size=beam))
    valid = bool((result.items >= 0).all())
    return {
        "items": n, "collision_rate": round(table.collision_rate(), 4), "num_suffix": table.num_suffix,
        "assign_s": round(t_assign, 3), "assign_peak_mb": round(m_assign, 1),
        "tokenizer_s": round(t_tok, 3), "trie_build_s": round(t_trie, 3), "trie_peak_mb": round(m_trie + m_tok, 1),
        "decode_ms_per_user": round(1000 * t_search / users, 2), "beam": beam, "all_results_valid": valid,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--users", type=int, default=64)
    parser.add_argument("--beam", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "bench_scale.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [bench(n, users=args.users, beam=args.beam, seed=0) for n in args.sizes]
    cols = ["items", "collision_rate", "assign_s", "assign_peak_mb", "trie_build_s", "trie_peak_mb",
            "decode_ms_per_user"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
