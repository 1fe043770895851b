"""Cold start on Beauty: items held out of SID and generator training, added afterwards with `dig items add`.

    python benchmarks/bench_cold_start.py --source runs/beauty_quality/sids_collab

Protocol: 5% of the catalog (seeded random) is cold. Cold items get ids after every warm item; the quantizer is
trained on the warm items' MiniLM embeddings only and the generator on `items[:-2]` of every user with cold items
removed from its histories and no cold targets (`SequenceDataModule(unknown_items="drop")`). The split is the
usual leave-one-out of the full sequences, so a test target is cold for about 5% of the users. After the fit,
`dig items add` gives the cold items SIDs with the trained quantizer (no retraining), and every test user is ranked
again with the new SID table. Rows (test, all users, split by whether the target is cold or warm):

  generator before add     the model as trained: it cannot emit a cold item (TIGER as trained: 0 on cold targets)
  generator after add      the same weights, new SID table; the cold items' identity vectors are the untrained
                           hashed rows (`hashed`) or none (`codes only`, what `dig serve` uses)
  content similarity       MiniLM cosine between the mean of the user's last 5 history items and every item

Selection: the re-ranking weight of each generator row on a seeded sample of 3,000 valid users; test quoted.

  generator, cold slots     the codes-only model with its lowest top-10 slots given to the best cold items by its
                           own item-level scores (`generate.evaluation.with_cold_slots`); slots selected on valid

Phases: prepare (run dir + new_items.jsonl), sids (dig evidence + dig quantize), fit, add, evaluate, cold_slots.
Writes benchmarks/results/cold_start.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
QUANTIZE_CONFIGS = ["configs/trainer/cpu.yaml", "configs/trainer/quantize_cpu.yaml",
                    "configs/model/quantizer_rqvae.yaml", "configs/data/embeddings.yaml"]
GENERATOR_CONFIGS = ["configs/trainer/generate_cpu.yaml", "configs/model/generator_t5_items.yaml",
                     "configs/data/sequences.yaml"]
WEIGHTS = (0.0, 4.0, 16.0)


def sh(*args: str) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "deepinterestgr.cli.main", *args], cwd=REPO, env=env, check=True)
    return time.perf_counter() - t0


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


# ------------------------------------------------------------------------------------------------ phases
def prepare(args) -> dict:
    """Warm items keep their order as ids 0..W-1, cold ones become W..N-1; the run's catalog lists warm items only."""
    catalog = read_jsonl(args.source / "data" / "catalog.jsonl")
    n = len(catalog)
    cold = sorted(random.Random(args.seed).sample(range(n), round(args.cold_share * n)))
    cold_set = set(cold)
    order = [i for i in range(n) if i not in cold_set] + cold
    new_id = {old: new for new, old in enumerate(order)}
    warm_count = n - len(cold)
    rows = []
    for new, old in enumerate(order):
        rows.append({**catalog[old], "item_id": new})
    write_jsonl(args.run / "data" / "catalog.jsonl", rows[:warm_count])
    write_jsonl(args.run / "new_items.jsonl",
                [{k: v for k, v in r.items() if k != "item_id"} for r in rows[warm_count:]])
    sequences = [{**s, "items": [new_id[i] for i in s["items"]]}
                 for s in read_jsonl(args.source / "data" / "sequences.jsonl")]
    write_jsonl(args.run / "data" / "sequences.jsonl", sequences)
    info = {"items": n, "warm": warm_count, "cold": len(cold), "seed": args.seed, "source": str(args.source),
            "cold_test_targets": sum(s["items"][-1] >= warm_count for s in sequences),
            "cold_interactions": sum(i >= warm_count for s in sequences for i in s["items"]),
            "new_id_of_source_id": {catalog[old]["source_id"]: new for old, new in new_id.items() if new >= warm_count}}
    (args.run / "cold.json").write_text(json.dumps(info, indent=1) + "\n")
    print(f"prepare: {n} items, {len(cold)} cold; {info['cold_test_targets']} users with a cold test target")
    return info


def sids(args) -> None:
    sh("evidence", "--run_dir", str(args.run), "--text_encoder", "PackagedMiniLMEncoder",
       "--batch_size", "256", "--cache_dir", str(args.cache_dir))
    sh("quantize", "--run_dir", str(args.run), "--configs", json.dumps(QUANTIZE_CONFIGS))


def fit(args) -> dict:
    marker = args.run / "generate" / "fit_done.json"
    if marker.exists():
        return json.loads(marker.read_text())
    fragments = [a for c in GENERATOR_CONFIGS for a in ("-c", c)]
    fit_s = sh("fit", *fragments, "--data.run_dir", str(args.run), "--data.unknown_items", "drop",
               "--trainer.default_root_dir", str(args.run / "generate"), "--trainer.enable_progress_bar", "false",
               "--trainer.max_time", args.max_time, "--data.val_max_users", "3000", "--seed_everything", str(args.seed))
    record = {"fit_s": round(fit_s), "max_time": args.max_time, "seed": args.seed, "configs": GENERATOR_CONFIGS}
    marker.write_text(json.dumps(record, indent=2) + "\n")
    return record


def add(args) -> None:
    if not (args.run / "items" / "current.json").exists():
        sh("items", "add", "--run_dir", str(args.run), "--items", str(args.run / "new_items.jsonl"))


def _candidates(module, run: Path, table_dir: Path | None, split: str, beam: int, val_users: int | None):
    from deepinterestgr.generate.data import SequenceDataModule
    from deepinterestgr.generate.evaluation import collect_candidates

    dm = SequenceDataModule(str(run), max_history=20, eval_batch_size=256, unknown_items="drop",
                            sid_table_dir=str(table_dir) if table_dir else None, val_max_users=val_users)
    dm.setup("test")
    module.set_tokenizer(dm.tokenizer)
    return collect_candidates(module, dm, split, beam_size=beam)


def _split_metrics(rank: torch.Tensor, cold: torch.Tensor) -> dict:
    from deepinterestgr.generate.evaluation import metrics_from_ranks

    return {"all": metrics_from_ranks(rank), "cold_targets": metrics_from_ranks(rank[cold]),
            "warm_targets": metrics_from_ranks(rank[~cold]),
            "users": {"cold": int(cold.sum()), "warm": int((~cold).sum())}}


def evaluate(args) -> dict:
    from deepinterestgr.generate.evaluation import ranks, reranked_items
    from deepinterestgr.generate.module import GeneratorModule
    from deepinterestgr.serve.versions import pointer_path

    info = json.loads((args.run / "cold.json").read_text())
    warm = info["warm"]
    version_dir = pointer_path(args.run).parent / json.loads(pointer_path(args.run).read_text())["dir"]
    module = GeneratorModule.load_from_checkpoint(args.run / "generate" / "checkpoints" / "best.ckpt",
                                                  map_location="cpu")
    rows = {}
    for name, table_dir, unseen in (("generator before add", None, False),
                                    ("generator after add, hashed identity for cold items", version_dir, False),
                                    ("generator after add, codes only for cold items", version_dir, True)):
        t0 = time.perf_counter()
        if table_dir is not None:
            from deepinterestgr.generate.tokenizer import SIDTokenizer
            from deepinterestgr.quantize.sid import SIDTable

            tok = SIDTokenizer(SIDTable.load(table_dir))
            module.set_tokenizer(tok)
            module.generator.set_unseen_items(tok.item_tokens[warm:] if unseen else None)
        valid = _candidates(module, args.run, table_dir, "valid", args.beam, 3000)
        weight = max(WEIGHTS, key=lambda w: float((ranks(valid, w, exclude_history=True) < 10).float().mean()))
        test = _candidates(module, args.run, table_dir, "test", args.beam, None)
        rank = ranks(test, weight, exclude_history=True)
        top10 = reranked_items(test, weight, exclude_history=True)[:, :10]
        rows[name] = {**_split_metrics(rank, test.targets >= warm), "rerank_weight": weight,
                      "cold_share_of_top10": float(((top10 >= warm) & (top10 >= 0)).float().mean()),
                      "seconds": round(time.perf_counter() - t0, 1)}
        print(name, json.dumps({k: v for k, v in rows[name].items() if k != "users"}))
    rows["content similarity (MiniLM, mean of last 5 history items)"] = content_baseline(args, info, version_dir)
    out = {"protocol": __doc__.split("\n\n")[2], "cold_items": info["cold"], "warm_items": warm, "seed": args.seed,
           "beam": args.beam, "fit": json.loads((args.run / "generate" / "fit_done.json").read_text()), "rows": rows,
           "command": "python benchmarks/bench_cold_start.py --source " + str(args.source)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cold_start.json").write_text(json.dumps(out, indent=2) + "\n")
    return out


def cold_slots(args) -> dict:
    """The codes-only model after add, with its lowest top-10 slots given to the best cold items by its own
    item-level scores (`with_cold_slots`); the number of slots and the re-ranking weight selected on valid."""
    from deepinterestgr.generate.evaluation import hit_ranks, reranked_items, with_cold_slots
    from deepinterestgr.generate.module import GeneratorModule
    from deepinterestgr.generate.tokenizer import SIDTokenizer
    from deepinterestgr.quantize.sid import SIDTable
    from deepinterestgr.serve.versions import pointer_path

    info = json.loads((args.run / "cold.json").read_text())
    warm = info["warm"]
    version_dir = pointer_path(args.run).parent / json.loads(pointer_path(args.run).read_text())["dir"]
    module = GeneratorModule.load_from_checkpoint(args.run / "generate" / "checkpoints" / "best.ckpt",
                                                  map_location="cpu")
    tok = SIDTokenizer(SIDTable.load(version_dir))
    module.set_tokenizer(tok)
    module.generator.set_unseen_items(tok.item_tokens[warm:])
    cold_items = torch.arange(warm, tok.num_items)

    def collect(split: str, users: int | None):
        from deepinterestgr.generate.data import SequenceDataModule
        from deepinterestgr.generate.evaluation import collect_candidates

        dm = SequenceDataModule(str(args.run), max_history=20, eval_batch_size=256, unknown_items="drop",
                                sid_table_dir=str(version_dir), val_max_users=users)
        dm.setup("test")
        return collect_candidates(module, dm, split, beam_size=args.beam, cold_items=cold_items)

    def slot_ranks(c, weight: float, slots: int) -> torch.Tensor:
        items = reranked_items(c, weight, exclude_history=True)
        return hit_ranks(with_cold_slots(items, c.cold_top, slots, history_items=c.history_items), c.targets)

    valid, test = collect("valid", 3000), collect("test", None)
    grid = [(w, r) for w in WEIGHTS for r in range(0, 4)]
    score = {key: float(ndcg_of(slot_ranks(valid, *key))) for key in grid}
    weight, slots = max(grid, key=score.get)
    rows = {}
    for r in range(0, 4):
        rank = slot_ranks(test, weight, r)
        rows[f"generator after add, codes only, {r} cold slot(s)"] = {
            **_split_metrics(rank, test.targets >= warm), "rerank_weight": weight, "cold_slots": r,
            "valid_ndcg@10": score[(weight, r)], "selected": r == slots}
        print(r, json.dumps(rows[f"generator after add, codes only, {r} cold slot(s)"]["cold_targets"]),
              json.dumps(rows[f"generator after add, codes only, {r} cold slot(s)"]["warm_targets"]))
    path = RESULTS / "cold_start.json"
    out = json.loads(path.read_text())
    out["cold_slots"] = {"selected_on": "valid ndcg@10, 3,000 sampled users", "selected_slots": slots,
                         "selected_weight": weight, "rows": rows}
    path.write_text(json.dumps(out, indent=2) + "\n")
    return out


def ndcg_of(rank: torch.Tensor) -> float:
    from deepinterestgr.generate.evaluation import ndcg_per_user

    return float(ndcg_per_user(rank, 10).mean())


def content_baseline(args, info: dict, version_dir: Path) -> dict:
    from safetensors.torch import load_file

    warm = info["warm"]
    emb = torch.cat([load_file(str(args.run / "evidence" / "text_embeddings.safetensors"))["embeddings"],
                     load_file(str(version_dir / "evidence" / "text_embeddings.safetensors"))["embeddings"]])
    emb = torch.nn.functional.normalize(emb.float(), dim=1)
    sequences = read_jsonl(args.run / "data" / "sequences.jsonl")
    rank = torch.empty(len(sequences), dtype=torch.long)
    targets = torch.tensor([s["items"][-1] for s in sequences])
    for start in range(0, len(sequences), 512):
        chunk = sequences[start:start + 512]
        users = torch.stack([emb[s["items"][:-1][-5:]].mean(0) for s in chunk])
        scores = users @ emb.T
        for row, s in enumerate(chunk):
            scores[row, s["items"][:-1]] = float("-inf")  # the no-repeat rule, as for the generator rows
        target_scores = scores.gather(1, targets[start:start + 512, None])
        rank[start:start + 512] = (scores > target_scores).sum(1)
    return _split_metrics(rank, targets >= warm)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", type=Path, default=REPO / "runs" / "beauty_quality" / "sids_collab",
                   help="a prepared Beauty run directory (its data/catalog.jsonl and data/sequences.jsonl)")
    p.add_argument("--run", type=Path, default=REPO / "runs" / "cold_start")
    p.add_argument("--cache-dir", type=Path,
                   default=REPO / "runs" / "beauty_quality" / "sids_text" / "evidence" / "cache")
    p.add_argument("--cold-share", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--max-time", default="00:00:25:00")
    p.add_argument("--beam", type=int, default=50)
    p.add_argument("--phases", nargs="+", default=["prepare", "sids", "fit", "add", "evaluate", "cold_slots"],
                   choices=["prepare", "sids", "fit", "add", "evaluate", "cold_slots"])
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    for phase in args.phases:
        t0 = time.perf_counter()
        globals()[phase](args)
        print(f"== {phase}: {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
