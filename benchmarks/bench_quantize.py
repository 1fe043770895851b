"""Quantizer figures on Amazon Beauty (12,101 items): collision rate of the 3-code prefix, level-0 usage, unique SIDs,
fit time on this machine's CPUs, for RQ-KMeans and RQ-VAE.

Inputs: MiniLM embeddings of `title + categories` (benchmarks/beauty_embeddings.py, cached under /tmp), written as a
run directory's `evidence/text_embeddings.safetensors`; each variant then runs the real stage (`run_quantize` with the
shipped config fragments + overrides). Results: printed and written to benchmarks/results/quantize_beauty.json.

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/bench_quantize.py [--variants rqkmeans rqvae ...] [--epochs 150]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from beauty_embeddings import beauty_embeddings  # noqa: E402

from deepinterestgr.artifacts import atomic_write_json  # noqa: E402
from deepinterestgr.quantize.stage import CONFIG_DIR, run_quantize  # noqa: E402

log = logging.getLogger("bench_quantize")
RESULTS = Path(__file__).resolve().parent / "results" / "quantize_beauty.json"
TRAINER = [str(CONFIG_DIR / "trainer/cpu.yaml"), str(CONFIG_DIR / "trainer/quantize_cpu.yaml")]
DATA = str(CONFIG_DIR / "data/embeddings.yaml")
RQK, RQV = str(CONFIG_DIR / "model/quantizer_rqkmeans.yaml"), str(CONFIG_DIR / "model/quantizer_rqvae.yaml")
Q = "--model.quantizer.init_args."

#: name -> (model config, overrides); the first of each kind is the shipped config as is
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "rqkmeans": (RQK, []),
    "rqkmeans_plain": (RQK, [f"{Q}balanced", "false", f"{Q}distinct_last_level", "false"]),
    "rqkmeans_balanced_only": (RQK, [f"{Q}distinct_last_level", "false"]),
    "rqvae": (RQV, []),
    "rqvae_no_distinct": (RQV, [f"{Q}distinct_last_level", "false"]),
    "rqvae_sinkhorn": (RQV, [f"{Q}distinct_last_level", "false", f"{Q}sinkhorn_epsilon", "0.003"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--epochs", type=int, default=None, help="override trainer.max_epochs for RQ-VAE variants")
    parser.add_argument("--workdir", default="/tmp/dig_bench_quantize")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(1)

    emb = beauty_embeddings()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for name in args.variants:
        model_cfg, overrides = VARIANTS[name]
        run = Path(args.workdir) / name
        (run / "evidence").mkdir(parents=True, exist_ok=True)
        save_file({"embeddings": emb}, str(run / "evidence/text_embeddings.safetensors"))
        extra = ["--trainer.enable_progress_bar", "false"]
        if args.epochs and model_cfg == RQV:
            extra += ["--trainer.max_epochs", str(args.epochs)]
        started = time.perf_counter()
        metrics = run_quantize(str(run), configs=[*TRAINER, model_cfg, DATA], overrides=[*overrides, *extra])
        wall = time.perf_counter() - started
        row = {
            "items": metrics["num_items"], "collision_rate_3codes": metrics["collision_rate"],
            "usage": metrics["usage"], "perplexity": [round(p, 1) for p in metrics["perplexity"]],
            "max_group_size": metrics["max_group_size"],
            "all_sids_unique": metrics["num_sids_unique"] == metrics["num_items"],
            "num_suffix": metrics["num_suffix"], "fit_seconds": metrics["fit_seconds"], "stage_wall_seconds": wall,
            "epochs": metrics["epochs"], "config": [Path(model_cfg).name, *overrides, *extra],
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        }
        results[name] = row
        print(f"{name:24s} collisions {row['collision_rate_3codes']:.4f}  usage {row['usage']}  "
              f"unique {row['all_sids_unique']}  fit {row['fit_seconds']:.1f}s  (stage {wall:.1f}s)", flush=True)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(RESULTS, results)


if __name__ == "__main__":
    main()
