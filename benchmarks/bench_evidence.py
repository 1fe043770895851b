"""Evidence-stage figures on Amazon Beauty (12,101 items): text embeddings + zero-shot DCIM + rule QARM for every
item, a second run (must be 100 % cache hits), and SmolLM2 LLM descriptors on a sample. Prints and writes JSON.

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/bench_evidence.py --run /tmp/bench_beauty --llm-sample 100

The catalog is built from `<data>/Beauty/Beauty.item.derived.json` (title + first category path) unless
`<run>/data/catalog.jsonl` already exists (e.g. written by `dig data prepare`)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from deepinterestgr.artifacts import atomic_write_json, atomic_write_jsonl, read_jsonl  # noqa: E402
from deepinterestgr.data.schema import Item  # noqa: E402

log = logging.getLogger("bench_evidence")


def build_beauty_catalog(derived: Path, out: Path) -> int:
    rows = json.loads(derived.read_text(encoding="utf-8"))
    items = []
    for dense, key in enumerate(sorted(rows, key=int)):
        r = rows[key]
        cats = r.get("categories") or [[]]
        items.append(Item(dense, r["asin"], title=r.get("title") or "", categories=list(cats[0])).to_json())
    return atomic_write_jsonl(out, items)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="/tmp/bench_beauty")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--llm-sample", type=int, default=100)
    ap.add_argument("--llm-batch", type=int, default=16)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", default=None, help="JSON results (default <run>/bench_evidence.json)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from deepinterestgr.evidence.miners import LLMIntentMiner
    from deepinterestgr.evidence.stage import run_evidence

    run = Path(args.run)
    catalog = run / "data" / "catalog.jsonl"
    if not catalog.exists():
        n = build_beauty_catalog(Path(args.data) / "Beauty" / "Beauty.item.derived.json", catalog)
        log.info("built %s with %d items", catalog, n)
    items = [Item.from_json(r) for r in read_jsonl(catalog)]
    results: dict = {"items": len(items), "threads": torch.get_num_threads()}

    out = Path(args.out) if args.out else run / "bench_evidence.json"

    def save(res):
        atomic_write_json(out, res)

    rng = random.Random(args.seed)
    if args.llm_sample:
        t = time.time()
        miner = LLMIntentMiner(batch_size=args.llm_batch)
        results["llm_load_s"] = round(time.time() - t, 1)
        sample_ids = sorted(rng.sample(range(len(items)), args.llm_sample))
        sample = [items[i] for i in sample_ids]
        t = time.time()
        mined = miner.mine(sample)
        dt = time.time() - t
        failures = [m for m in mined if m.error]
        results["llm"] = {
            "model": miner.describe(), "sample": len(sample), "seconds": round(dt, 1),
            "items_per_s": round(len(sample) / dt, 3),
            "projected_full_catalog_hours": round(len(items) / (len(sample) / dt) / 3600, 2),
            "json_failure_rate": round(len(failures) / len(sample), 3),
            "empty_descriptor_rate": round(sum(1 for m in mined if not m.error and not m.descriptors) / len(sample), 3),
            "examples": [{"item_id": i, "title": items[i].title, "descriptors": [d.__dict__ for d in m.descriptors],
                          "error": m.error, "raw": m.raw if m.error else None}
                         for i, m in list(zip(sample_ids, mined))[:8]],
        }
        save(results)

    from deepinterestgr.evidence.stage import evidence_arguments

    # configs/evidence/beauty.yaml's plugins, built once: the second run measures the cache, not model loading
    plugins = evidence_arguments("configs/evidence/beauty.yaml", run_dir=str(run))
    enc = plugins["text_encoder"]
    t = time.time()
    first = run_evidence(**plugins)
    results["first_run_s"] = round(time.time() - t, 1)
    results["first_run"] = {k: first[k] for k in ("branches", "failures", "problems", "quality_mean")}
    save(results)
    t = time.time()
    second = run_evidence(**plugins)
    results["second_run_s"] = round(time.time() - t, 1)
    results["second_run_branches"] = second["branches"]
    results["second_run_all_cached"] = all(b.get("computed", 0) == 0 for b in second["branches"].values())

    # text-encoder throughput alone, on the enriched texts (warm model)
    rows = list(read_jsonl(run / "evidence" / "items.jsonl"))
    sample_texts = [r["enriched_text"] for r in rows[:2000]]
    enc.encode(sample_texts[:64])
    t = time.time()
    enc.encode(sample_texts)
    results["minilm_s_per_1000_enriched_texts"] = round((time.time() - t) / len(sample_texts) * 1000, 2)

    ids = sorted(random.Random(args.seed + 1).sample(range(len(items)), 12))
    results["zero_shot_examples"] = [{"item_id": i, "title": rows[i]["enriched_text"].split("\n")[0],
                                      "descriptors": rows[i]["descriptors"], "labels": rows[i]["labels"],
                                      "quality": rows[i]["quality"]} for i in ids[:5]]

    save(results)
    print(json.dumps(results, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
