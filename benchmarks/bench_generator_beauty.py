"""Generator quality against wall time on a run directory that already has data/ and quantize/ (e.g. Beauty).

Fits a generator config with `dig fit` (1 thread, capped by --max-time, best checkpoint on valid N@10), tests the
best checkpoint with `dig test`, then writes the validation N@10 curve against wall time (from the TensorBoard
events) and the test metrics to JSON:

    python benchmarks/bench_generator_beauty.py --run runs/beauty_v2 --max-time 00:01:00:00 \\
        --out benchmarks/results/generate_beauty_v2.json

`--summarise-only` skips the fit and test and summarises what the run directory already holds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TIGER_PAPER = {"recall@5": 0.0454, "ndcg@5": 0.0321, "recall@10": 0.0648, "ndcg@10": 0.0384}
BASELINES = REPO / "benchmarks" / "results" / "baselines_beauty.json"  # bench_baselines.py on the same split


def floors() -> dict:
    out = {"tiger_paper": TIGER_PAPER}
    if BASELINES.is_file():
        for name, row in json.loads(BASELINES.read_text())["methods"].items():
            out[name] = {k.removeprefix("test/"): round(v, 4) for k, v in row["test"].items()}
    return out


def dig(*args: str, threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "deepinterestgr.cli.main", *args], cwd=REPO, env=env, check=True)
    return time.perf_counter() - t0


def valid_curve(run: Path) -> list[dict]:
    from deepinterestgr.generate.evaluation import valid_curve as curve

    return curve(run / "generate")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="run directory with data/ and quantize/")
    p.add_argument("--model", default="configs/model/generator_t5_small.yaml")
    p.add_argument("--max-time", default="00:01:00:00", help="fit wall-clock cap, DD:HH:MM:SS")
    p.add_argument("--val-max-users", type=int, default=3000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--summarise-only", action="store_true")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "generate_beauty_v2.json"))
    args = p.parse_args()
    run = Path(args.run).resolve()
    common = ["-c", "configs/trainer/generate_cpu.yaml", "-c", args.model, "-c", "configs/data/sequences.yaml",
              "--data.run_dir", str(run), "--trainer.default_root_dir", str(run / "generate"),
              "--trainer.enable_progress_bar", "false"]
    fit_s = test_s = None
    if not args.summarise_only:
        fit_s = dig("fit", *common, "--trainer.max_time", args.max_time, "--data.val_max_users",
                    str(args.val_max_users), threads=args.threads)
        test_s = dig("test", *common, "--ckpt_path", str(run / "generate" / "checkpoints" / "best.ckpt"),
                     threads=args.threads)
    curve = valid_curve(run)
    best = max(curve, key=lambda r: r["val_ndcg@10"]) if curve else None
    result = {
        "run": str(run), "model": args.model, "max_time": args.max_time, "valid_users": args.val_max_users,
        "threads": args.threads, "fit_wall_s": round(fit_s) if fit_s else None,
        "test_wall_s": round(test_s) if test_s else None,
        "best_valid": best, "test": json.loads((run / "generate" / "metrics_test.json").read_text()),
        "valid_ndcg10_vs_wall": curve, "floors": floors(),
        "command": "python benchmarks/bench_generator_beauty.py " + " ".join(sys.argv[1:]),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "valid_ndcg10_vs_wall"}, indent=2))


if __name__ == "__main__":
    main()
