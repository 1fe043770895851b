"""GRPO against its SFT start: rewards x candidates x optimisation epochs at equal steps, seeds, paired bootstrap.

Starts every setting from the same trained generator (`<run>/generate/checkpoints/best.ckpt`), trains a policy for
`--steps` optimiser steps per seed, and evaluates start and policy on every test user with the same ranker
(the generator's beam, re-ranking weight and no-repeat rule). Writes

  benchmarks/results/rl_<name>_grpo.json: {"run", "start": {metrics}, "settings": [{"setting", "reward",
      "candidates", "ppo_epochs", "lr", "steps", "seeds", "start", "policy" (mean over seeds), "policy_std",
      "delta_ndcg@10", "ci95" (paired bootstrap over users of the seed-mean per-user NDCG@10 vs start),
      "zero_advantage_fraction" (mean over steps and seeds), "clip_fraction", "kl", "distinct_top1",
      "coverage@10", "hits_by_quality_quartile" (test hits by quartile of the target's q_i), "curve" (the training
      scalars over 10 windows of the run, mean over seeds: step, zero_advantage_fraction, reward_mean, kl,
      clip_fraction), "fit_s"}], "qarm_effect": [{"qarm", "without", "seeds", "delta_ndcg@10", "ci95", "users"}]
      (each QARM setting against its twin without the QARM term, when both ran in one invocation)}

    python benchmarks/bench_rl.py --run runs/synthetic --name synthetic            # after the main job
    python benchmarks/bench_rl.py --run runs/beauty --name beauty --steps 300 --settings exact-mixed-mu4
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

log = logging.getLogger("bench_rl")

PAPER = {"exact": 1.0, "valid": 0.1, "prefix": 0.2, "qarm": 1.0}
REWARDS = {
    "exact": {"weights": {"exact": 1.0}},
    "paper": {"weights": PAPER, "options": {"qarm": {"alpha": 0.5}}},  # exact + valid + LCP + QARM (the paper's)
    "paper-no-qarm": {"weights": {k: v for k, v in PAPER.items() if k != "qarm"}},  # QARM's own effect
    "prefix": {"weights": {"exact": 1.0, "prefix": 0.5}},  # denser credit for near misses
    "rank": {"weights": {"exact": 1.0, "rank": 1.0}},  # MiniOneRec/ReRe rank penalty (beam groups)
    # QARM's own effect at equal steps: exact-only plus the relevance-gated quality bonus, nothing else
    "exact-qarm": {"weights": {"exact": 1.0, "qarm": 1.0}, "options": {"qarm": {"alpha": 0.5}}},
}


def composite(recipe: dict):
    """A CompositeReward from a recipe of REWARDS (term names of the built-in rewards, weights, options)."""
    from deepinterestgr.rl import rewards as r

    classes = {"exact": r.ExactMatchReward, "valid": r.ValidityReward, "prefix": r.PrefixReward,
               "qarm": r.QARMReward, "rank": r.RankPenaltyReward}
    options = recipe.get("options", {})
    return r.CompositeReward(terms={n: classes[n](**options.get(n, {})) for n in recipe["weights"]},
                             weights=recipe["weights"])


#: name -> (reward, candidates, ppo_epochs, lr[, scale_advantages (default True)])
SETTINGS = {
    "exact-beam-mu1-lr1e-5": ("exact", "beam", 1, 1e-5),  # the paper's lr, today's default: moves nothing
    "exact-beam-mu1": ("exact", "beam", 1, 1e-4),
    "exact-sample-mu1": ("exact", "sample", 1, 1e-4),
    "exact-mixed-mu1": ("exact", "mixed", 1, 1e-4),
    "exact-mixed-mu4": ("exact", "mixed", 4, 1e-4),
    "paper-mixed-mu4": ("paper", "mixed", 4, 1e-4),
    "paper-no-qarm-mixed-mu4": ("paper-no-qarm", "mixed", 4, 1e-4),
    "prefix-mixed-mu4": ("prefix", "mixed", 4, 1e-4),
    "rank-beam-mu4": ("rank", "beam", 4, 1e-4),
    "exact-beam-mu4": ("exact", "beam", 4, 1e-4),
    "exact-beam-mu1-lr1e-3": ("exact", "beam", 1, 1e-3),
    "paper-beam-mu4": ("paper", "beam", 4, 1e-4),
    "paper-no-qarm-beam-mu4": ("paper-no-qarm", "beam", 4, 1e-4),
    "exact-qarm-beam-mu1": ("exact-qarm", "beam", 1, 1e-4),  # pair with exact-beam-mu1 (same steps, lr, groups)
    # unscaled advantages (Dr. GRPO): the std no longer cancels QARM's per-group factor (1 + alpha * q_target)
    "exact-beam-mu1-unscaled": ("exact", "beam", 1, 1e-4, False),
    "exact-qarm-beam-mu1-unscaled": ("exact-qarm", "beam", 1, 1e-4, False),
}


STEP_SCALARS = ("train/zero_advantage_fraction", "train/clip_fraction", "train/kl", "train/reward_mean")


#: QARM setting -> the same setting without the QARM term (same candidates, μ, lr, advantage scaling): QARM's own
#: effect is their per-user paired difference when both run in one invocation with the same seeds
QARM_TWINS = {"paper-mixed-mu4": "paper-no-qarm-mixed-mu4", "paper-beam-mu4": "paper-no-qarm-beam-mu4",
              "exact-qarm-beam-mu1": "exact-beam-mu1", "exact-qarm-beam-mu1-unscaled": "exact-beam-mu1-unscaled"}


class StepStats:
    """Collects the per-step training scalars the policy logs (zero-advantage fraction, clip fraction, KL)."""

    def __init__(self) -> None:
        from lightning.pytorch.callbacks import Callback

        stats = self
        self.rows: list[dict[str, float]] = []

        class _Collect(Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                m = trainer.callback_metrics
                stats.rows.append({"step": trainer.global_step,
                                   **{k: float(m[k]) for k in STEP_SCALARS if k in m}})

        self.callback = _Collect()

    def mean(self, key: str) -> float | None:
        vals = [r[key] for r in self.rows if key in r]
        return sum(vals) / len(vals) if vals else None

    def curve(self, points: int = 10) -> list[dict[str, float]]:
        """The run's scalars averaged over `points` consecutive windows of batches: how reward and signal evolve."""
        n = len(self.rows)
        out = []
        for i in range(min(points, n)):
            window = self.rows[i * n // points:(i + 1) * n // points] if n >= points else self.rows[i:i + 1]
            out.append({"step": window[-1]["step"],
                        **{k.removeprefix("train/"): sum(r[k] for r in window) / len(window)
                           for k in STEP_SCALARS if all(k in r for r in window)}})
        return out


def mean_curve(curves: list[list[dict[str, float]]]) -> list[dict[str, float]]:
    """Seeds' curves averaged point by point (they share steps: same settings, same --steps)."""
    return [{k: sum(c[i][k] for c in curves) / len(curves) for k in curves[0][i]}
            for i in range(min(len(c) for c in curves))]


def evaluate(module, dm) -> dict:
    """Per-user test ranks with the module's ranker, plus distinct top-1 and top-10 coverage."""
    from deepinterestgr.generate.metrics import hit_ranks

    module.eval()
    ranks, targets, top1, top10 = [], [], [], []
    with torch.no_grad():
        for batch in dm.test_dataloader():
            result = module.generate(batch["history"], batch["history_mask"])
            ranks.append(hit_ranks(result.items[:, :10], batch["target_item"]))
            targets.append(batch["target_item"])
            top1.append(result.items[:, 0])
            top10.append(result.items[:, :10].flatten())
    top10 = torch.cat(top10)
    return {"ranks": torch.cat(ranks), "targets": torch.cat(targets),
            "distinct_top1": int(torch.unique(torch.cat(top1)).numel()),
            "coverage@10": float(torch.unique(top10[top10 >= 0]).numel()) / dm.tokenizer.num_items}


def start_evaluation(init: Path, dm, max_history: int) -> dict:
    """`evaluate` of the generator itself, cached beside its checkpoint: every invocation on the same start (another
    judge's q_i, more settings) reuses it, keyed by the checkpoint's and the test data's hashes."""
    from deepinterestgr.artifacts import sha256_file
    from deepinterestgr.rl.module import PolicyModule

    key = {"checkpoint": sha256_file(init), "max_history": max_history,
           "sequences": sha256_file(Path(dm.run_dir) / "data" / "sequences.jsonl")}
    cache = init.parent.parent / f"rl_start_evaluation_h{max_history}.pt"
    if cache.is_file():
        saved = torch.load(cache, weights_only=False)
        if saved.get("key") == key:
            log.info("start evaluation: cached in %s", cache)
            return saved["evaluation"]
    module = PolicyModule(reward=composite(REWARDS["exact"]), init_checkpoint=str(init))
    module.load_policy(init, tokenizer=dm.tokenizer)
    evaluation = evaluate(module, dm)
    torch.save({"key": key, "evaluation": evaluation}, cache)
    return evaluation


def quality_quartile_hits(ev: dict, quality: torch.Tensor | None) -> list[int] | None:
    if quality is None:
        return None
    q = quality[ev["targets"]]
    edges = torch.quantile(quality, torch.tensor([0.25, 0.5, 0.75]))
    quartile = torch.bucketize(q, edges)
    hit = (ev["ranks"] >= 0) & (ev["ranks"] < 10)
    return [int((hit & (quartile == i)).sum()) for i in range(4)]


def qarm_effect(policy_ndcgs: dict[str, torch.Tensor], seeds: list[int], earlier: list[dict]) -> list[dict]:
    """QARM's own effect: each QARM setting against its twin without the QARM term, both trained in this invocation
    (same seeds and steps), as a paired bootstrap over test users of their seed-mean NDCG@10. Pairs measured by an
    earlier invocation stay unless remeasured here."""
    from deepinterestgr.generate.evaluation import paired_bootstrap

    pairs = []
    for with_qarm, without in QARM_TWINS.items():
        if with_qarm in policy_ndcgs and without in policy_ndcgs:
            boot = paired_bootstrap(policy_ndcgs[with_qarm], policy_ndcgs[without])
            pairs.append({"qarm": with_qarm, "without": without, "seeds": seeds,
                          "delta_ndcg@10": boot["mean_diff"], "ci95": boot["ci95"], "users": boot["users"]})
    measured = {p["qarm"] for p in pairs}
    return [p for p in earlier if p["qarm"] not in measured] + pairs


def curve_cells(r: dict) -> str:
    """The curve's ends as two table cells: does the training reward rise, and how far the policy drifts."""
    curve = r.get("curve")
    if not curve or "reward_mean" not in curve[0]:
        return "- | -"  # measured before curves were recorded
    kl = f"{curve[-1]['kl']:.3f}" if "kl" in curve[-1] else "-"
    return f"{curve[0]['reward_mean']:.4f} → {curve[-1]['reward_mean']:.4f} | {kl}"


def markdown_table(results: dict) -> str:
    start = results["start"]
    lines = [f"Start (the generator, same ranker): N@10 {start['ndcg@10']:.4f}, R@10 {start['recall@10']:.4f}, "
             f"distinct top-1 {start['distinct_top1']}, {results['users']} test users.", "",
             "| setting | reward | candidates | μ | lr | steps | seeds | N@10 (mean ± std) | "
             "Δ N@10 | 95% CI (paired) | zero-adv. groups | clip frac. | distinct top-1 | coverage@10 | "
             "train reward, first → last 10% | KL, last 10% |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["settings"]:
        lines.append(
            f"| {r['setting']} | {r['reward_name']} | {r['candidates']} | {r['ppo_epochs']} | {r['lr']:g} | "
            f"{r['steps']} | {len(r['seeds'])} | {r['policy']['ndcg@10']:.4f} ± {r['policy_std']['ndcg@10']:.4f} | "
            f"{r['delta_ndcg@10']:+.4f} ({100 * r['relative_delta_ndcg@10']:+.1f}%) | "
            f"{r['ci95'][0]:+.4f} .. {r['ci95'][1]:+.4f} | {r['zero_advantage_fraction']:.2f} | "
            f"{r['clip_fraction']:.3f} | {r['distinct_top1']:.0f} | {r['coverage@10']:.3f} | {curve_cells(r)} |")
    for pair in results.get("qarm_effect", []):
        lines.append(f"\nQARM's own effect, {pair['qarm']} minus {pair['without']} ({len(pair['seeds'])} "
                     f"seed{'s' if len(pair['seeds']) != 1 else ''}, paired "
                     f"over {pair['users']:,} users): N@10 {pair['delta_ndcg@10']:+.4f} "
                     f"(95% CI {pair['ci95'][0]:+.4f} .. {pair['ci95'][1]:+.4f})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    p.add_argument("--run", type=Path, default=REPO / "runs" / "synthetic",
                   help="run directory with a trained generator")
    p.add_argument("--name", default="synthetic", help="results file: benchmarks/results/rl_<name>_grpo.json")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--seeds", type=int, nargs="+", default=[42, 2333, 6666])
    p.add_argument("--steps", type=int, default=200, help="optimiser steps per fit (ppo_epochs per batch)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--beta", type=float, default=0.001)
    p.add_argument("--max-history", type=int, default=20)
    p.add_argument("--quality", type=Path, default=None,
                   help="item quality q_i for QARM and the quartile split (an evidence stage's quality.safetensors, "
                        "e.g. from the rule or the LLM judge); default <run>/evidence/quality.safetensors")
    p.add_argument("--markdown", action="store_true", help="print the README table of rl_<name>_grpo.json and exit")
    args = p.parse_args(argv)
    out_path = REPO / "benchmarks" / "results" / f"rl_{args.name}_grpo.json"
    quality_path = (args.quality or args.run / "evidence" / "quality.safetensors").resolve()
    if args.quality is not None:  # q_i of another evidence run: only meaningful on the very same catalog (item ids)
        if not quality_path.is_file():
            p.error(f"--quality {args.quality}: no such file (run the evidence stage with a quality judge)")
        theirs = json.loads((quality_path.parent / "manifest.json").read_text()).get("catalog_sha256")
        ours = json.loads((args.run / "data" / "manifest.json").read_text())["files"]["catalog.jsonl"]["sha256"]
        if theirs != ours:
            p.error(f"--quality {args.quality}: judged catalog {str(theirs)[:16]}... but {args.run}/data has catalog "
                    f"{ours[:16]}...; run the evidence stage on this run's catalog")
    if args.markdown:
        print(markdown_table(json.loads(out_path.read_text(encoding="utf-8"))))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    from lightning.pytorch import Trainer, seed_everything
    from safetensors.torch import load_file

    from deepinterestgr.generate.data import SequenceDataModule
    from deepinterestgr.generate.evaluation import metrics_from_ranks, ndcg_per_user, paired_bootstrap
    from deepinterestgr.rl.module import PolicyModule

    init = args.run / "generate" / "checkpoints" / "best.ckpt"
    dm = SequenceDataModule(str(args.run), max_history=args.max_history, batch_size=args.batch_size,
                            eval_batch_size=256)
    dm.setup("fit")
    quality = load_file(str(quality_path))["quality"].float() if quality_path.is_file() else None

    start = start_evaluation(init, dm, args.max_history)
    start_ndcg = ndcg_per_user(start["ranks"])
    start_metrics = metrics_from_ranks(start["ranks"])
    log.info("start: %s, distinct top-1 %d", start_metrics, start["distinct_top1"])

    results = {"run": str(args.run), "init_checkpoint": str(init), "users": int(len(start["ranks"])),
               "start": {**start_metrics, "distinct_top1": start["distinct_top1"], "coverage@10": start["coverage@10"],
                         "hits_by_quality_quartile": quality_quartile_hits(start, quality)},
               "quality_file": str(quality_path) if quality is not None else None,
               "protocol": "test split, every user; policy ranks with the generator's ranker", "settings": []}
    if out_path.exists():  # settings measured by an earlier invocation on the same start stay, unless rerun here
        earlier = json.loads(out_path.read_text(encoding="utf-8"))
        same_start = (earlier.get("init_checkpoint") == results["init_checkpoint"]
                      and earlier.get("start", {}).get("ndcg@10") == results["start"]["ndcg@10"]
                      and earlier.get("quality_file") == results["quality_file"])  # QARM rows depend on q_i
        if same_start:
            results["settings"] = [r for r in earlier["settings"] if r["setting"] not in args.settings]
            results["qarm_effect"] = earlier.get("qarm_effect", [])
    policy_ndcgs = {}  # setting -> per-user NDCG@10 (mean over seeds) of this invocation, for QARM's paired effect
    for name in args.settings:
        reward_name, candidates, mu, lr, *rest = SETTINGS[name]
        scaled = rest[0] if rest else True
        per_seed, stats_rows, fit_s = [], [], []
        for seed in args.seeds:
            seed_everything(seed, workers=True)
            module = PolicyModule(reward=composite(REWARDS[reward_name]), init_checkpoint=str(init),
                                  candidates=candidates, group_size=args.group_size, ppo_epochs=mu, lr=lr,
                                  beta=args.beta, quality_file=str(quality_path), scale_advantages=scaled)
            stats = StepStats()
            trainer = Trainer(accelerator="cpu", devices=1, precision="32-true", max_steps=args.steps,
                              limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                              enable_progress_bar=False, enable_model_summary=False, callbacks=[stats.callback])
            t0 = time.perf_counter()
            trainer.fit(module, datamodule=dm)
            fit_s.append(time.perf_counter() - t0)
            per_seed.append(evaluate(module, dm))
            stats_rows.append(stats)
            log.info("%s seed %d: %s (%.0f s)", name, seed, metrics_from_ranks(per_seed[-1]["ranks"]), fit_s[-1])
        metrics = [metrics_from_ranks(ev["ranks"]) for ev in per_seed]
        mean = {k: sum(m[k] for m in metrics) / len(metrics) for k in metrics[0]}
        std = {k: float(torch.tensor([m[k] for m in metrics]).std()) if len(metrics) > 1 else 0.0 for k in metrics[0]}
        policy_ndcg = torch.stack([ndcg_per_user(ev["ranks"]) for ev in per_seed]).mean(0)
        policy_ndcgs[name] = policy_ndcg
        boot = paired_bootstrap(policy_ndcg, start_ndcg)

        def avg(key):
            vals = [s.mean(key) for s in stats_rows if s.mean(key) is not None]
            return sum(vals) / len(vals) if vals else None

        row = {"setting": name, "reward": REWARDS[reward_name], "reward_name": reward_name, "candidates": candidates,
               "ppo_epochs": mu, "lr": lr, "scale_advantages": scaled, "steps": args.steps,
               "batch_size": args.batch_size,
               "group_size": args.group_size, "beta": args.beta, "seeds": args.seeds,
               "start": start_metrics, "policy": mean, "policy_std": std,
               "delta_ndcg@10": mean["ndcg@10"] - start_metrics["ndcg@10"],
               "relative_delta_ndcg@10": ((mean["ndcg@10"] - start_metrics["ndcg@10"])
                                          / max(start_metrics["ndcg@10"], 1e-12)),
               "ci95": boot["ci95"], "zero_advantage_fraction": avg("train/zero_advantage_fraction"),
               "clip_fraction": avg("train/clip_fraction"), "kl": avg("train/kl"),
               "reward_mean": avg("train/reward_mean"),
               "distinct_top1": sum(ev["distinct_top1"] for ev in per_seed) / len(per_seed),
               "coverage@10": sum(ev["coverage@10"] for ev in per_seed) / len(per_seed),
               "hits_by_quality_quartile": [quality_quartile_hits(ev, quality) for ev in per_seed],
               "curve": mean_curve([s.curve() for s in stats_rows]),
               "fit_s": round(sum(fit_s) / len(fit_s), 1)}
        results["settings"] = [r for r in results["settings"] if r["setting"] != name] + [row]
        print(f"{name:<28} N@10 {start_metrics['ndcg@10']:.4f} -> {mean['ndcg@10']:.4f} ± {std['ndcg@10']:.4f} "
              f"(delta {row['delta_ndcg@10']:+.4f}, CI {boot['ci95'][0]:+.4f}..{boot['ci95'][1]:+.4f}), "
              f"zero-adv {row['zero_advantage_fraction']:.2f}, clip {row['clip_fraction']:.3f}, "
              f"distinct top-1 {row['distinct_top1']:.0f} (start {start['distinct_top1']})", flush=True)
        results["qarm_effect"] = qarm_effect(policy_ndcgs, args.seeds, results.get("qarm_effect", []))
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")  # after every setting
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
