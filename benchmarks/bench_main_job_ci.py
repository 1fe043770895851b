"""Paired bootstrap CIs for the main job's table: generator and policy vs the floors, on the same test users.

Reads a finished `dig pipeline` run (default `runs/synthetic`): the generator's best checkpoint and the policy's,
each ranked with its own ranker, and the floors refitted on `items[:-2]` with the parameters the baselines stage
selected on valid (`<run>/baselines/*.json`). Writes `benchmarks/results/main_job_ci.json`:
{"run", "users", "ndcg@10": {model: mean}, "comparisons": [{"a", "b", "mean_diff", "ci95"}]}.

    python benchmarks/bench_main_job_ci.py --run runs/synthetic
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def model_ndcg(module, dm, num_users: int) -> torch.Tensor:
    """Per-user test NDCG@10 [num_users] of a GeneratorModule / PolicyModule, indexed by user."""
    from deepinterestgr.generate.evaluation import ndcg_per_user
    from deepinterestgr.generate.metrics import hit_ranks

    out = torch.full((num_users,), float("nan"))
    module.eval()
    with torch.no_grad():
        for batch in dm.test_dataloader():
            items = module.generate(batch["history"], batch["history_mask"]).items[:, :10]
            out[batch["user_index"]] = ndcg_per_user(hit_ranks(items, batch["target_item"]))
    return out


def floor_ndcg(run: Path, method: str) -> torch.Tensor:
    from deepinterestgr.baselines.cooccurrence import CoOccurrence
    from deepinterestgr.baselines.evaluation import drop_history_items, split_view
    from deepinterestgr.baselines.popularity import MostPopular
    from deepinterestgr.data.io import load_catalog, load_sequences
    from deepinterestgr.generate.evaluation import ndcg_per_user
    from deepinterestgr.generate.metrics import hit_ranks

    record = json.loads((run / "baselines" / f"{method}.json").read_text(encoding="utf-8"))
    params = dict(record.get("params") or {})
    exclude = params.pop("exclude_history", False)
    protocol = record.get("protocol", "train")
    protocol = protocol["name"] if isinstance(protocol, dict) else protocol
    view = split_view(load_sequences(str(run)), "test", max_history=20, protocol=protocol)
    model = (CoOccurrence(**params) if method == "cooccurrence" else MostPopular(**params))
    model.fit(view.fit_sequences, num_items=len(load_catalog(str(run))))
    top = drop_history_items(model.recommend(view.histories, k=30), view.histories, 10) if exclude else \
        model.recommend(view.histories, k=10)
    return ndcg_per_user(hit_ranks(top, torch.tensor(view.targets)))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    p.add_argument("--run", type=Path, default=REPO / "runs" / "synthetic")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "main_job_ci.json")
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    from deepinterestgr.generate.data import SequenceDataModule
    from deepinterestgr.generate.evaluation import paired_bootstrap
    from deepinterestgr.generate.module import GeneratorModule
    from deepinterestgr.rl.module import PolicyModule

    dm = SequenceDataModule(str(args.run), max_history=20, eval_batch_size=256)
    dm.setup("test")
    n = len(dm.split.examples["test"])
    generator = GeneratorModule.load_from_checkpoint(args.run / "generate/checkpoints/best.ckpt", map_location="cpu")
    ndcg = {"generator": model_ndcg(generator.use_recorded_ranking(), dm, n)}
    policy_ckpt = args.run / "rl/checkpoints/best.ckpt"
    if not policy_ckpt.exists():
        policy_ckpt = args.run / "rl/checkpoints/last.ckpt"
    if policy_ckpt.exists():
        ndcg["policy (GRPO)"] = model_ndcg(PolicyModule.load_from_checkpoint(policy_ckpt, map_location="cpu"), dm, n)
    for method in ("most-popular", "cooccurrence"):
        if (args.run / "baselines" / f"{method}.json").exists():
            ndcg[method] = floor_ndcg(args.run, method)
    if any(torch.isnan(v).any() or len(v) != n for v in ndcg.values()):
        raise SystemExit("the models did not score the same users; is the run complete?")
    pairs = [("generator", "most-popular"), ("generator", "cooccurrence"), ("policy (GRPO)", "generator")]
    comparisons = [{"a": a, "b": b, **paired_bootstrap(ndcg[a], ndcg[b])} for a, b in pairs if a in ndcg and b in ndcg]
    result = {"run": str(args.run), "users": n, "metric": "test ndcg@10 per user",
              "ndcg@10": {k: float(v.mean()) for k, v in ndcg.items()}, "comparisons": comparisons}
    for k, v in result["ndcg@10"].items():
        print(f"{k:<16} N@10 {v:.4f}")
    for c in comparisons:
        print(f"{c['a']} - {c['b']}: {c['mean_diff']:+.4f} (95% CI {c['ci95'][0]:+.4f} .. {c['ci95'][1]:+.4f})")
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
