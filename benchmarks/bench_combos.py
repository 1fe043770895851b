"""Component-combination benchmark: which DeepInterestGR components help, on which data.

Runs `dig pipeline` for every (dataset, variant, seed) of `benchmarks/combos.yaml` (or a subset), reusing the
evidence cache across variants of a dataset, and writes
  <runs>/<dataset>/<variant>/seed<k>/            the run directory (all artifacts, TensorBoard logs;
                                                 runs/ is not tracked)
  <out>/runs/<dataset>__<variant>__seed<k>.json  one JSON per run: test metrics of generator and policy, SID stats,
                                                 and on synthetic data the information SIDs carry about the
                                                 latent intents
  <out>/combos.md                                a markdown table, mean ± std over seeds
  <out>/combos_<dataset>.png                     bar plots of N@10 (and intent NMI on synthetic)

    python benchmarks/bench_combos.py --datasets synthetic --seeds 42 2333 6666
    python benchmarks/bench_combos.py --datasets beauty --variants text_only dcim qarm full --seeds 42 \\
        --data-root ../shared/data
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from deepinterestgr.combos import apply_variant, grid, load_yaml  # noqa: E402

METRICS = ("recall@5", "ndcg@5", "recall@10", "ndcg@10")


def _pick(metrics: dict, name: str) -> float | None:
    for key, value in (metrics or {}).items():
        if key.split("/")[-1].lower() == name:
            return float(value)
    return None


def run_one(dataset: str, base_path: str, variant_name: str, variant: dict, seed: int, runs: Path,
            data_root: str | None) -> dict:
    run_dir = runs / dataset / variant_name / f"seed{seed}"
    exp = apply_variant(load_yaml(REPO / base_path), variant, run_dir=str(run_dir), seed=seed)
    exp["evidence"]["cache_dir"] = str(runs / dataset / "evidence_cache")  # shared: variants reuse each other's work
    run_dir.mkdir(parents=True, exist_ok=True)
    exp_path = run_dir / "experiment.yaml"
    exp_path.write_text(yaml.safe_dump(exp, sort_keys=False), encoding="utf-8")
    cmd = [sys.executable, "-m", "deepinterestgr.cli.main", "pipeline", "-c", str(exp_path)]
    if data_root:
        cmd += ["--data-root", data_root]
    start = time.perf_counter()
    with open(run_dir / "pipeline.log", "w", encoding="utf-8") as log:
        proc = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{dataset}/{variant_name}/seed{seed} failed (exit {proc.returncode}); "
                           f"see {run_dir / 'pipeline.log'}")
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    record = {
        "dataset": dataset, "variant": variant_name, "seed": seed, "wall_seconds": round(seconds, 1),
        "description": variant.get("description", ""),
        "generator": {m: _pick(results.get("generate", {}).get("metrics", {}), m) for m in METRICS},
        "policy": ({m: _pick(results.get("rl", {}).get("metrics", {}), m) for m in METRICS}
                   if results.get("rl") else None),
        "sid": _sid_stats(run_dir),
        "stage_seconds": results.get("stage_seconds", {}),
    }
    return record


def _sid_stats(run_dir: Path) -> dict:
    import torch

    from deepinterestgr.data.io import load_truth
    from deepinterestgr.quantize.analysis import sid_label_information
    from deepinterestgr.quantize.sid import SIDTable

    table = SIDTable.load(run_dir / "quantize")
    quantize = json.loads((run_dir / "quantize" / "metrics.json").read_text(encoding="utf-8"))
    # collision_rate: items sharing all 3 codes (after the distinct last level); prefix_collision_rate[1]: items the
    # first two levels do not separate; perplexity per level shows a collapsed codebook
    stats = {"collision_rate": table.collision_rate(), "num_suffix": table.num_suffix,
             "prefix_collision_rate": quantize.get("prefix_collision_rate"), "perplexity": quantize.get("perplexity"),
             "collapsed_levels": quantize.get("collapsed_levels")}
    truth = load_truth(str(run_dir))
    if truth:
        primary = torch.tensor([item["intents"][0] for item in truth["items"]])
        stats.update(sid_label_information(table.codes, primary))
    return stats


def _mean_std(values: list[float | None]) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.4f}"
    return f"{statistics.mean(vals):.4f} ± {statistics.stdev(vals):.4f}"


def _collisions(group: list[dict]) -> str:
    two = [r["sid"]["prefix_collision_rate"][1] for r in group if r["sid"].get("prefix_collision_rate")]
    three = [r["sid"]["collision_rate"] for r in group]
    return f"{statistics.mean(two):.3f} / {statistics.mean(three):.3f}" if two else f"- / {statistics.mean(three):.3f}"


def _perplexities(group: list[dict]) -> str:
    rows = [r["sid"]["perplexity"] for r in group if r["sid"].get("perplexity")]
    if not rows:
        return "-"
    cell = " / ".join(f"{statistics.mean(level):.0f}" for level in zip(*rows))
    collapsed = sorted({lv for r in group for lv in (r["sid"].get("collapsed_levels") or [])})
    return cell + (f" (collapsed: L{', L'.join(map(str, collapsed))})" if collapsed else "")


def oracle_label(dataset: str, variant: dict | None) -> str:
    """The synthetic zero-shot miner ranks deepinterestgr/evidence/vocab/synthetic.txt, whose first 16 lines are the
    generator's true intents: its DCIM rows are an oracle's, and every table says so."""
    evidence = (variant or {}).get("evidence") or {}
    return " (oracle vocabulary)" if dataset == "synthetic" and evidence.get("intent_miner", "on") is not None else ""


def write_table(records: list[dict], out: Path, variants: dict | None = None) -> str:
    lines = ["| dataset | variant | seeds | model | R@5 | N@5 | R@10 | N@10 | intent NMI@L1 | purity@L1 | "
             "2-code / 3-code collisions | perplexity L0 / L1 / L2 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["dataset"], r["variant"]) for r in records}, key=lambda k: (k[0], list(dict.fromkeys(
        r["variant"] for r in records)).index(k[1])))
    for dataset, variant in keys:
        group = [r for r in records if r["dataset"] == dataset and r["variant"] == variant]
        for model in ("generator", "policy"):
            if all(r.get(model) is None for r in group):
                continue
            cells = [_mean_std([(r.get(model) or {}).get(m) for r in group]) for m in METRICS]
            sid = [_mean_std([r["sid"].get(k) for r in group]) for k in ("nmi@L1", "purity@L1")]
            sid.append(_collisions(group))
            sid.append(_perplexities(group))
            label = variant + oracle_label(dataset, (variants or {}).get(variant))
            lines.append(f"| {dataset} | {label} | {len(group)} | {model} | " + " | ".join(cells + sid) + " |")
    table = "\n".join(lines)
    (out / "combos.md").write_text(table + "\n", encoding="utf-8")
    return table


def write_plots(records: list[dict], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for dataset in sorted({r["dataset"] for r in records}):
        rows = [r for r in records if r["dataset"] == dataset]
        variants = list(dict.fromkeys(r["variant"] for r in rows))
        panels = [("generator", "ndcg@10"), ("policy", "ndcg@10")]
        with_truth = any("nmi@L1" in r["sid"] for r in rows)
        fig, axes = plt.subplots(1, len(panels) + with_truth, figsize=(5 * (len(panels) + with_truth), 4))
        for ax, (model, metric) in zip(axes, panels):
            values = [[(r.get(model) or {}).get(metric) for r in rows if r["variant"] == v] for v in variants]
            means = [statistics.mean([x for x in vs if x is not None]) if any(x is not None for x in vs) else 0
                     for vs in values]
            errs = [statistics.stdev([x for x in vs if x is not None]) if sum(x is not None for x in vs) > 1 else 0
                    for vs in values]
            ax.bar(variants, means, yerr=errs, capsize=3)
            ax.set_title(f"{dataset}: {model} test {metric}")
            ax.tick_params(axis="x", rotation=45)
        if with_truth:
            ax = axes[-1]
            values = [[r["sid"].get("nmi@L1", 0) for r in rows if r["variant"] == v] for v in variants]
            ax.bar(variants, [statistics.mean(v) for v in values])
            ax.set_title(f"{dataset}: NMI(level-0 code, latent intent)")
            ax.tick_params(axis="x", rotation=45)
        fig.tight_layout()
        path = out / f"combos_{dataset}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", default=str(REPO / "benchmarks" / "combos.yaml"))
    parser.add_argument("--datasets", nargs="+", default=["synthetic"])
    parser.add_argument("--variants", nargs="+", default=None, help="subset of the grid's variants (default: all)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 2333, 6666])
    parser.add_argument("--data-root", default=None, help="folder holding the real datasets (e.g. ../shared/data)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "combos"), help="JSON, table, plots")
    parser.add_argument("--runs", default=str(REPO / "runs" / "combos"), help="run directories (large; untracked)")
    parser.add_argument("--resume", action="store_true", help="skip runs whose record JSON already exists")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    spec = grid(args.grid)
    out = Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    variants = args.variants or list(spec["variants"])
    for name in variants:
        if name not in spec["variants"]:
            parser.error(f"unknown variant {name!r}; the grid has {', '.join(spec['variants'])}")
    for dataset in args.datasets:
        if dataset not in spec["datasets"]:
            parser.error(f"unknown dataset {dataset!r}; the grid has {', '.join(spec['datasets'])}")
        for variant in variants:
            for seed in args.seeds:
                record_path = out / "runs" / f"{dataset}__{variant}__seed{seed}.json"
                if args.resume and record_path.exists():
                    print(f"== {dataset} / {variant} / seed {seed}: recorded, skipped (--resume)", flush=True)
                    continue
                print(f"== {dataset} / {variant} / seed {seed}", flush=True)
                record = run_one(dataset, spec["datasets"][dataset], variant, spec["variants"][variant] or {}, seed,
                                 Path(args.runs), args.data_root)
                record_path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
                print(json.dumps({k: record[k] for k in ("generator", "policy", "sid", "wall_seconds")}), flush=True)
    records = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]
    print(write_table(records, out, spec["variants"]))
    for path in write_plots(records, out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
