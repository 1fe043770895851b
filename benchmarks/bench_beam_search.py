"""Constrained beam search speed: our tensor-trie search vs transformers' generate + prefix_allowed_tokens_fn.

Same T5SIDGenerator weights, same inputs, same beam size; reports users/s of each, the ratio, and whether both
returned the same top-K items. Writes benchmarks/results/bench_beam_search.json.

    OMP_NUM_THREADS=1 python benchmarks/bench_beam_search.py --users 64 --beam 20 --items 12101 --codebook 256
    # Beauty's collision-free RQ-VAE SIDs, catalog-renormalised scores (the shipped Beauty generator settings)
    OMP_NUM_THREADS=1 python benchmarks/bench_beam_search.py --sid-table runs/beauty/quantize --renormalize
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from deepinterestgr.generate.reference import hf_constrained_beam_search, prefix_allowed_tokens  # noqa: E402
from deepinterestgr.generate.search import constrained_beam_search  # noqa: E402
from deepinterestgr.generate.t5 import T5SIDGenerator  # noqa: E402
from deepinterestgr.generate.testing import random_sid_table  # noqa: E402
from deepinterestgr.generate.tokenizer import SIDTokenizer  # noqa: E402
from deepinterestgr.generate.trie import SIDTrie  # noqa: E402
from deepinterestgr.quantize.sid import SIDTable  # noqa: E402

ARCHS = {
    "tiger": {},  # T5SIDGenerator defaults: 4+4 layers, d 128, 6 x 64 heads, d_ff 1024
    "small": dict(num_layers=2, num_decoder_layers=2, num_heads=4, d_kv=32, d_ff=256),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=64)
    p.add_argument("--beam", type=int, default=20)
    p.add_argument("--items", type=int, default=12101, help="catalog size (Beauty: 12101)")
    p.add_argument("--codebook", type=int, default=256)
    p.add_argument("--levels", type=int, default=3)
    p.add_argument("--history", type=int, default=20)
    p.add_argument("--arch", choices=sorted(ARCHS), default="tiger")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sid-table", help="a run's quantize/ folder: search its real SID trie instead of random codes")
    p.add_argument("--renormalize", action="store_true", help="score over allowed tokens (renormalize_logits=True)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each search; the median is reported")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_beam_search.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    if args.sid_table:
        table = SIDTable.load(args.sid_table)
        args.items, args.levels, args.codebook = table.num_items, table.num_levels, table.codebook_size
    else:
        table = random_sid_table(num_items=args.items, num_levels=args.levels, codebook_size=args.codebook)
    tok = SIDTokenizer(table)
    gen = T5SIDGenerator(**ARCHS[args.arch], dropout=0.0, vocab_size=tok.vocab_size, sid_length=tok.sid_length).eval()
    hist = torch.randint(0, args.items, (args.users, args.history))
    lengths = torch.randint(1, args.history + 1, (args.users,))
    hist[torch.arange(args.history) < (args.history - lengths)[:, None]] = -1
    enc = tok.encode_history(hist)

    t0 = time.perf_counter()
    trie = SIDTrie.from_tokenizer(tok)
    trie_build_s = time.perf_counter() - t0
    allowed_fn = prefix_allowed_tokens(tok)  # built outside the timing, like the trie's build

    # one warm-up call each on a few users (first calls allocate), then alternating timed runs on the same inputs;
    # the median of --repeats runs of each is reported (alternation spreads any background load over both)
    constrained_beam_search(gen, trie, enc.tokens[:2], enc.mask[:2], beam_size=args.beam)
    hf_constrained_beam_search(gen, tok, enc.tokens[:2], enc.mask[:2], beam_size=args.beam, allowed_fn=allowed_fn)
    ours_times, ref_times = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        ours = constrained_beam_search(gen, trie, enc.tokens, enc.mask, beam_size=args.beam,
                                       renormalize=args.renormalize)
        ours_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ref = hf_constrained_beam_search(gen, tok, enc.tokens, enc.mask, beam_size=args.beam, allowed_fn=allowed_fn,
                                         renormalize=args.renormalize)
        ref_times.append(time.perf_counter() - t0)
    ours_s, ref_s = statistics.median(ours_times), statistics.median(ref_times)

    result = {
        "arch": args.arch, "users": args.users, "beam": args.beam, "items": args.items, "levels": args.levels,
        "sid_table": args.sid_table or "random", "codebook": args.codebook, "num_suffix": tok.num_suffix,
        "vocab": tok.vocab_size, "threads": args.threads,
        "repeats": args.repeats, "renormalize": args.renormalize,
        "trie_build_s": round(trie_build_s, 4),
        "ours_users_per_s": round(args.users / ours_s, 2), "reference_users_per_s": round(args.users / ref_s, 2),
        "speedup": round(ref_s / ours_s, 2),
        "same_items": bool(torch.equal(ours.items, ref.items)),
        "max_score_diff": float((ours.scores - ref.scores).abs().max()),
        "torch": torch.__version__, "machine": platform.machine(), "cpu_count": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
