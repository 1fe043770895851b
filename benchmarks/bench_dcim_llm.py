"""DCIM with a real LLM, offline: schema-constrained mining speed, validity and descriptor quality on Beauty, and
the cost of the two constrained-decoding libraries' token masks. Prints figures and writes
benchmarks/results/dcim_llm.json.

    OMP_NUM_THREADS=2 python benchmarks/bench_dcim_llm.py --data-root ../shared/data --sample 96

Per model ({"model", "items", "items_per_s", "invalid_json_rate", "grounding", "random_grounding",
"distinct_per_item", "top20_share", ...}):
  grounding         mean cosine (MiniLM) between an item's descriptors and its own text
  random_grounding  the same descriptors against a random other item's text (the chance level)
  distinct_per_item distinct descriptors per item; top20_share: share of all descriptors that are one of the 20
                    most frequent (high = the model repeats a few stock phrases)
  zero_shot_agreement  mean cosine of the LLM's first descriptor to the zero-shot miner's first (Beauty vocabulary)
A free-generation row (constrained=False, one repair turn) is measured on a smaller sample for the invalid rate.
`mask_cost` walks one answer token by token through each library's matcher (no model): milliseconds per token.

    python benchmarks/bench_dcim_llm.py --ablation

copies the issue's ablation, measured by the benchmarks that fit the generators and the GRPO policies, into the
JSON's `ablation`: text only vs zero-shot DCIM vs LLM DCIM SIDs on the best Beauty generator (with a control: the
same text-only SIDs from an RQ-VAE refitted under another seed), and QARM's bonus under the LLM vs the rule judge.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from deepinterestgr.data.schema import Item  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("bench_dcim_llm")
MODELS = {"smollm2-135m": "packaged:smollm2-135m-instruct", "gemma-3-270m": "packaged:gemma-3-270m"}


def beauty_items(data_root: Path, n: int, seed: int) -> list[Item]:
    rows = json.loads((data_root / "Beauty" / "Beauty.item.derived.json").read_text(encoding="utf-8"))
    keys = sorted(rows, key=int)
    picked = sorted(random.Random(seed).sample(keys, n), key=int)
    return [Item(int(k), rows[k]["asin"], title=rows[k].get("title") or "",
                 categories=list((rows[k].get("categories") or [[]])[0])) for k in picked]


def descriptor_quality(items, mined, encoder, seed: int) -> dict:
    from deepinterestgr.evidence.miners import ZeroShotIntentMiner
    from deepinterestgr.evidence.text import item_text

    ok = [(it, m) for it, m in zip(items, mined) if not m.error and m.descriptors]
    texts = encoder.encode([item_text(it) for it, _ in ok])
    desc = [encoder.encode([d.descriptor for d in m.descriptors]) for _, m in ok]
    own = torch.stack([(d @ t).mean() for d, t in zip(desc, texts)])
    perm = torch.randperm(len(ok), generator=torch.Generator().manual_seed(seed))
    perm = torch.where(perm == torch.arange(len(ok)), (perm + 1) % len(ok), perm)  # never the item itself
    other = torch.stack([(d @ texts[j]).mean() for d, j in zip(desc, perm.tolist())])
    flat = [d.descriptor.lower() for _, m in ok for d in m.descriptors]
    counts: dict[str, int] = {}
    for d in flat:
        counts[d] = counts.get(d, 0) + 1
    top20 = sum(sorted(counts.values(), reverse=True)[:20])
    zero = ZeroShotIntentMiner(domain="beauty", top_k=3, text_encoder=encoder).mine([it for it, _ in ok])
    first_llm = encoder.encode([m.descriptors[0].descriptor for _, m in ok])
    first_zero = encoder.encode([z.descriptors[0].descriptor if z.descriptors else "" for z in zero])
    return {"grounding": round(float(own.mean()), 4), "random_grounding": round(float(other.mean()), 4),
            "distinct_per_item": round(sum(len({d.descriptor.lower() for d in m.descriptors}) for _, m in ok)
                                       / max(1, len(ok)), 3),
            "top20_share": round(top20 / max(1, len(flat)), 4), "distinct_descriptors": len(counts),
            "zero_shot_agreement": round(float((first_llm * first_zero).sum(1).mean()), 4)}


def mine_row(name: str, model: str, items, args, encoder, *, constrained: bool) -> dict:
    from deepinterestgr.evidence.miners import LLMIntentMiner

    t = time.time()
    miner = LLMIntentMiner(model=model, batch_size=args.batch, max_descriptors=args.max_descriptors,
                           max_descriptor_chars=args.max_descriptor_chars, constrained=constrained, int8=args.int8,
                           sort_by_length=not args.no_sort)
    load_s = time.time() - t
    miner.mine(items[:2])  # warm-up (first calls are slow)
    t = time.time()
    mined = miner.mine(items)
    dt = time.time() - t
    invalid = sum(1 for m in mined if m.error)
    row = {"model": name, "constrained": constrained, "items": len(items), "seconds": round(dt, 1),
           "items_per_s": round(len(items) / dt, 3), "invalid_json_rate": round(invalid / len(items), 4),
           "load_s": round(load_s, 1), "batch_size": args.batch, "max_descriptors": args.max_descriptors,
           "max_descriptor_chars": args.max_descriptor_chars, "int8": args.int8,
           "sort_by_length": not args.no_sort, "threads": torch.get_num_threads(),
           "load_average_1min": round(os.getloadavg()[0], 2)}  # other work on the cores slows every figure
    if invalid < len(items):
        row.update(descriptor_quality(items, mined, encoder, args.seed))
    row["examples"] = [{"title": it.title[:90], "descriptors": [[d.descriptor, d.confidence] for d in m.descriptors],
                        "error": (m.error or "")[:120] or None} for it, m in list(zip(items, mined))[:10]]
    log.info("%s constrained=%s: %.3f items/s, invalid %.1f%%", name, constrained, row["items_per_s"],
             100 * row["invalid_json_rate"])
    return row


def synthetic_recovery(name: str, model: str, n: int, args, encoder) -> dict:
    """Recovery of the synthetic catalog's true main intent: each item's first descriptor is mapped to its nearest
    true intent (MiniLM cosine) and scored by NMI and accuracy against the truth; the zero-shot miner over the oracle
    vocabulary (its first 16 lines are the truth) is the upper reference, a random intent the chance level."""
    from torchmetrics.functional.clustering import normalized_mutual_info_score

    from deepinterestgr.data.synthetic import INTENTS, generate_synthetic
    from deepinterestgr.evidence.miners import LLMIntentMiner, ZeroShotIntentMiner

    raw, truth = generate_synthetic(render_images=False)
    pick = sorted(random.Random(args.seed).sample(range(len(raw.items)), n))
    items = [raw.items[i] for i in pick]
    main = torch.tensor([truth["items"][i]["intents"][0] for i in pick])
    intents = encoder.encode(list(INTENTS))

    def scores(mined) -> dict:
        first = [m.descriptors[0].descriptor if m.descriptors else "" for m in mined]
        predicted = (encoder.encode(first) @ intents.T).argmax(1)
        return {"nmi": round(float(normalized_mutual_info_score(predicted, main)), 4),
                "accuracy": round(float((predicted == main).float().mean()), 4)}

    miner = LLMIntentMiner(model=model, batch_size=args.batch, max_descriptors=args.max_descriptors,
                           max_descriptor_chars=args.max_descriptor_chars, int8=args.int8)
    t = time.time()
    llm = miner.mine(items)
    out = {"model": name, "items": n, "items_per_s": round(n / (time.time() - t), 3), "int8": args.int8,
           "max_descriptor_chars": args.max_descriptor_chars,
           "invalid_json_rate": round(sum(1 for m in llm if m.error) / n, 4), **scores(llm),
           "zero_shot_oracle": scores(ZeroShotIntentMiner(domain="synthetic", top_k=3,
                                                          text_encoder=encoder).mine(items)),
           "random": {"nmi": round(float(normalized_mutual_info_score(
               torch.randint(0, len(INTENTS), (n,), generator=torch.Generator().manual_seed(args.seed)), main)), 4),
               "accuracy": round(1 / len(INTENTS), 4)},
           "examples": [{"title": it.title, "truth": INTENTS[int(t)],
                         "descriptors": [d.descriptor for d in m.descriptors]}
                        for it, t, m in list(zip(items, main, llm))[:6]]}
    log.info("%s synthetic recovery: NMI %.3f (zero-shot oracle %.3f, random %.3f)", name, out["nmi"],
             out["zero_shot_oracle"]["nmi"], out["random"]["nmi"])
    return out


def mask_cost(tokenizer, schema: dict, answer: str, steps: int = 3) -> dict:
    """Milliseconds per token to compute the next-token mask, walking `answer` through each library."""
    from deepinterestgr.evidence.constrained import SchemaConstraint

    ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    out = {"answer_tokens": len(ids), "vocab": len(tokenizer)}
    import xgrammar as xgr

    constraint = SchemaConstraint(tokenizer, len(tokenizer), [tokenizer.eos_token_id])
    compiled = constraint.compiled(schema)
    bitmask = xgr.allocate_token_bitmask(1, len(tokenizer))
    t = time.perf_counter()
    for _ in range(steps):
        matcher = xgr.GrammarMatcher(compiled)
        for tok in ids:
            matcher.fill_next_token_bitmask(bitmask, 0)
            assert matcher.accept_token(tok), "the answer must be admissible"
    out["xgrammar_ms_per_token"] = round((time.perf_counter() - t) / steps / len(ids) * 1000, 3)
    try:
        import transformers.tokenization_utils_base as base
        from lmformatenforcer import JsonSchemaParser, TokenEnforcer

        if "transformers.tokenization_utils" not in sys.modules:  # gone in transformers 5: its integration needs it
            sys.modules["transformers.tokenization_utils"] = base
            out["lm_format_enforcer_note"] = ("its transformers integration does not import under transformers 5 "
                                              "(transformers.tokenization_utils is gone); measured through a shim")
        from lmformatenforcer.integrations.transformers import build_token_enforcer_tokenizer_data

        t = time.perf_counter()
        data = build_token_enforcer_tokenizer_data(tokenizer)
        out["lm_format_enforcer_setup_s"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        for _ in range(steps):
            enforcer = TokenEnforcer(data, JsonSchemaParser(schema))
            for k in range(len(ids)):
                allowed = enforcer.get_allowed_tokens(ids[:k])
                if not allowed.is_token_allowed(ids[k]):
                    out["lm_format_enforcer_rejected"] = (f"rejected the answer's token {k} "
                                                          f"({tokenizer.decode(ids[k])!r})")
                    break
        out["lm_format_enforcer_ms_per_token"] = round((time.perf_counter() - t) / steps / len(ids) * 1000, 3)
    except ImportError:
        out["lm_format_enforcer_note"] = "not installed (pip install lm-format-enforcer to compare)"
    return out


def catalog_run_summary(run: Path) -> dict:
    """What a whole-catalog evidence run mined (`<run>/evidence/items.jsonl` + `manifest.json`): failures, descriptors
    per item, distinct descriptors, the 20 most frequent ones' share, the share cut at the 40-character cap, and the
    stage's wall time (mining, judging and text embedding together)."""
    import collections

    rows = [json.loads(line) for line in (run / "evidence" / "items.jsonl").read_text(encoding="utf-8").splitlines()]
    manifest = json.loads((run / "evidence" / "manifest.json").read_text(encoding="utf-8"))
    counts = collections.Counter(d["descriptor"] for r in rows for d in r["descriptors"])
    total = sum(counts.values())
    return {"run": str(run), "items": len(rows), "mine_failed": sum(1 for r in rows if "mine" in r["errors"]),
            "no_descriptors": sum(1 for r in rows if not r["descriptors"]), "descriptors": total,
            "descriptors_per_item": round(total / max(1, len(rows)), 3), "distinct_descriptors": len(counts),
            "top20_share": round(sum(c for _, c in counts.most_common(20)) / max(1, total), 4),
            "at_40_char_cap": round(sum(c for d, c in counts.items() if len(d) >= 40) / max(1, total), 4),
            "most_common": counts.most_common(10), "stage_seconds": manifest.get("summary", {}).get("seconds"),
            "miner": manifest.get("plugins", {}).get("intent_miner")}


def catalog_judge_summary(run: Path, against: Path | None = None) -> dict:
    """What a whole-catalog judge run labelled (`<run>/evidence/quality.safetensors` + `manifest.json`): judge failures
    (unknown q_i), the mean q_i and the share accepted, and, given `against` (another judge's run of the same
    catalog), the share of items both judges put on the same side of 0.5 and the correlation of their q_i."""
    from safetensors.torch import load_file

    def load(r: Path):
        manifest = json.loads((r / "evidence" / "manifest.json").read_text(encoding="utf-8"))
        return load_file(str(r / "evidence" / "quality.safetensors")), manifest

    tensors, manifest = load(run)
    q, known = tensors["quality"].float(), tensors["known"].bool()
    out = {"run": str(run), "items": int(q.numel()), "unknown": int((~known).sum()),
           "judge_failed": manifest.get("summary", {}).get("failures", {}).get("judge"),
           "quality_mean": round(float(q.mean()), 4), "accepted_share": round(float((q > 0.5).float().mean()), 4),
           "stage_seconds": manifest.get("summary", {}).get("seconds"),
           "judge": manifest.get("plugins", {}).get("quality_judge")}
    if against is not None:
        other, other_manifest = load(against)
        if other_manifest.get("catalog_sha256") != manifest.get("catalog_sha256"):
            raise SystemExit(f"--against {against}: another catalog than {run}")
        o = other["quality"].float()
        out["against"] = {"run": str(against), "judge": other_manifest.get("plugins", {}).get("quality_judge"),
                          "quality_mean": round(float(o.mean()), 4),
                          "accepted_share": round(float((o > 0.5).float().mean()), 4),
                          "same_side_of_half": round(float(((q > 0.5) == (o > 0.5)).float().mean()), 4),
                          "correlation": round(float(torch.corrcoef(torch.stack([q, o]))[0, 1]), 4)}
    return out


# the ablation on the best Beauty generator recipe (seed 42, equal 55-min caps): which SIDs it reads
DCIM_ABLATION = (("text only (fused with collaborative, as every row), no DCIM", "t5-items-collab-2threads"),
                 ("zero-shot DCIM", "t5-items-collab-dcim-2threads"),
                 ("LLM DCIM (int8 SmolLM2, constrained)", "t5-items-collab-llm-dcim-2threads"),
                 ("control: text only, RQ-VAE refitted under seed 2", "t5-items-collab-qseed2-2threads"))
# GRPO from the LLM-DCIM generator with q_i from each judge: benchmarks/rl_rewards.sh writes these
QARM_ABLATION = (("LLM judge (int8 SmolLM2, constrained)", "rl_beauty-llm-dcim-llmjudge_grpo.json"),
                 ("rule judge", "rl_beauty-llm-dcim-rulejudge_grpo.json"))
METRICS = ("recall@5", "ndcg@5", "recall@10", "ndcg@10")


def shown(path: Path) -> str:
    """A path as the JSON records it: relative to the repository when inside it (no machine's absolute paths)."""
    return str(path.relative_to(REPO)) if path.is_absolute() and path.is_relative_to(REPO) else str(path)


def ablation_summary(quality: Path, rl_dir: Path) -> dict:
    """The DCIM and QARM ablation rows, read from the benchmarks that measured them (nothing is re-measured):
    per SID source the generator row selected on valid (valid and test), its hybrid's test row, its paired bootstrap
    against text only and its mean ± std over seeds where every seed was evaluated; per judge, GRPO with and without
    the QARM bonus and their paired difference. A variant or RL file not measured yet is listed under `missing`."""
    q = json.loads(quality.read_text(encoding="utf-8"))
    boots = (q.get("bootstrap") or {}).get("ablations") or {}
    missing, sources = [], []

    def pick(name: str, method: str, split: str, label: str = "") -> dict | None:
        """A variant's row as the table reports it (not its no-dense or no-rerank ablation rows)."""
        return next((r for r in q["rows"] if r["method"] == method and r["split"] == split
                     and r["variant"].startswith(f"{name} ({label}")
                     and "no dense" not in r["variant"] and "no rerank" not in r["variant"]), None)

    for evidence, name in DCIM_ABLATION:
        valid, test = pick(name, "generator", "valid"), pick(name, "generator", "test")
        if valid is None or test is None:
            missing.append(f"{name}: no generator rows in {shown(quality)}")
            continue
        hybrid = pick(name, "hybrid: generator + co-occurrence prior", "test")
        seeds = pick(name, "generator, mean over seeds", "test", "selected on valid per seed")
        b = boots.get(name)
        sources.append({"evidence": evidence, "variant": test["variant"], "seeds": test["seeds"],
                        "fit_s": test["fit_s"], "valid": {m: valid[m] for m in METRICS},
                        "test": {m: test[m] for m in METRICS},
                        "hybrid_test_ndcg@10": hybrid["ndcg@10"] if hybrid else None,
                        "vs_text_only": {"mean_diff": round(b["mean_diff"], 4),
                                         "ci95": [round(c, 4) for c in b["ci95"]], "users": b["users"]} if b else None,
                        "mean_over_seeds": {"seeds": seeds["seeds"], "test": {m: seeds[m] for m in METRICS},
                                            "std": seeds["std"]} if seeds else None})
    judges = []
    for judge, file in QARM_ABLATION:
        path = rl_dir / file
        if not path.exists():
            missing.append(f"{judge}: {shown(path)} not written (benchmarks/rl_rewards.sh)")
            continue
        rl = json.loads(path.read_text(encoding="utf-8"))
        settings = {s["setting"]: s for s in rl["settings"]}
        for effect in rl.get("qarm_effect", []):
            with_q, without = settings[effect["qarm"]], settings[effect["without"]]
            judges.append({"judge": judge, "quality_file": shown(Path(rl["quality_file"])),
                           "start": round(rl["start"]["ndcg@10"], 4),
                           "setting": effect["qarm"], "without": effect["without"], "seeds": effect["seeds"],
                           "ndcg@10_with_qarm": round(with_q["policy"]["ndcg@10"], 4),
                           "ndcg@10_without": round(without["policy"]["ndcg@10"], 4),
                           "qarm_minus_without": round(effect["delta_ndcg@10"], 5),
                           "ci95": [round(c, 5) for c in effect["ci95"]], "users": effect["users"]})
    return {"generator": "the best Beauty recipe (benchmarks/bench_beauty_quality.py), one 55-min fit on 2 threads "
                         "per source, selected on valid, test quoted, paired bootstrap over test users",
            "sources": {"file": shown(quality), "rows": sources}, "qarm": judges, "missing": missing}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    p.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--models", nargs="+", default=["smollm2-135m"], choices=list(MODELS))
    p.add_argument("--sample", type=int, default=96, help="Beauty items mined with the constrained miner")
    p.add_argument("--free-sample", type=int, default=16, help="items for the free-generation row (0 to skip)")
    p.add_argument("--synthetic", type=int, default=96, help="synthetic items for intent recovery (0 to skip)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--max-descriptors", type=int, default=3)
    p.add_argument("--max-descriptor-chars", type=int, default=40, help="the miner's default")
    p.add_argument("--int8", action="store_true", help="int8 dynamic quantisation of the LLM's linear layers")
    p.add_argument("--no-sort", action="store_true",
                   help="batch items in catalog order instead of by prompt length (the miner's sort_by_length)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "dcim_llm.json")
    p.add_argument("--catalog-run", type=Path,
                   help="summarise a whole-catalog evidence run into the JSON's catalog_run and exit (e.g. "
                        "runs/beauty_llm after `dig evidence -c configs/evidence/beauty_llm_int8.yaml`)")
    p.add_argument("--catalog-judge", type=Path,
                   help="summarise a whole-catalog judged evidence run into the JSON's catalog_judge and exit (e.g. "
                        "runs/beauty_llm_judged after `dig evidence -c configs/evidence/beauty_llm_int8_judged.yaml`)")
    p.add_argument("--against", type=Path, help="with --catalog-judge: another judge's run of the same catalog")
    p.add_argument("--ablation", action="store_true",
                   help="copy the DCIM (text only vs zero-shot vs LLM DCIM) and QARM (LLM vs rule judge) ablation "
                        "rows from benchmarks/results/beauty_quality.json and the rl_beauty-llm-dcim-*_grpo.json "
                        "files into the JSON's ablation and exit")
    args = p.parse_args(argv)
    summaries = {}
    if args.ablation:
        results = REPO / "benchmarks" / "results"
        summaries["ablation"] = ablation_summary(results / "beauty_quality.json", results)
    if args.catalog_judge:
        summaries["catalog_judge"] = catalog_judge_summary(args.catalog_judge, args.against)
    if args.catalog_run:
        summaries["catalog_run"] = catalog_run_summary(args.catalog_run)
    if summaries:  # a whole-catalog run summarised into the JSON beside its other figures, nothing measured
        result = json.loads(args.out.read_text(encoding="utf-8")) if args.out.exists() else {}
        result.update(summaries)
        args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        print(json.dumps(summaries, indent=2, ensure_ascii=False))
        return
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from deepinterestgr.evidence.constrained import descriptors_schema
    from deepinterestgr.evidence.llm import load_causal_lm
    from deepinterestgr.evidence.text_encoders import PackagedMiniLMEncoder

    encoder = PackagedMiniLMEncoder()
    items = beauty_items(args.data_root, args.sample, args.seed) if args.sample else []
    result = {"dataset": "Beauty", "sample_seed": args.seed, "rows": [],
              "command": "python benchmarks/bench_dcim_llm.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    if args.out.exists():  # models measured by an earlier invocation stay unless measured again
        earlier = json.loads(args.out.read_text(encoding="utf-8"))
        again = set(args.models)
        def same_settings(r) -> bool:  # rows of other settings (int8, descriptor length) are kept beside these
            return (r.get("int8", False) == args.int8
                    and r.get("max_descriptor_chars", 40) == args.max_descriptor_chars
                    and r.get("batch_size", 16) == args.batch
                    and r.get("sort_by_length", False) == (not args.no_sort)
                    and r.get("threads", 1) == torch.get_num_threads())

        result["rows"] = [r for r in earlier.get("rows", [])
                          if not (args.sample and r["model"] in again and same_settings(r))]
        result["mask_cost"] = {k: v for k, v in earlier.get("mask_cost", {}).items()
                               if not (args.sample and k in again)}
        result["synthetic_recovery"] = [r for r in earlier.get("synthetic_recovery", [])
                                        if not (args.synthetic and r["model"] in again and same_settings(r))]
    for name in args.models:
        if args.synthetic:
            result.setdefault("synthetic_recovery", []).append(
                synthetic_recovery(name, MODELS[name], args.synthetic, args, encoder))
        if args.sample:
            result["rows"].append({**mine_row(name, MODELS[name], items, args, encoder, constrained=True),
                                   "command": result["command"]})
            if args.free_sample:
                result["rows"].append(mine_row(name, MODELS[name], items[: args.free_sample], args, encoder,
                                               constrained=False))
            tokenizer, _ = load_causal_lm(MODELS[name])
            answer = json.dumps({"descriptors": [
                {"descriptor": "gift for a new mother", "confidence": 0.9},
                {"descriptor": "stretch mark care during pregnancy", "confidence": 0.8}]})
            result.setdefault("mask_cost", {})[name] = mask_cost(
                tokenizer, descriptors_schema(args.max_descriptors), answer)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(result, indent=2, ensure_ascii=False))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
