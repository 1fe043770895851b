"""Beauty floors for the benchmark tables: most-popular, transition + co-occurrence, SASRec (BASELINES.md).

    .venv/bin/python benchmarks/bench_baselines.py --data-root /work/shared/data [--run RUN_DIR] \
        [--methods most-popular cooccurrence sasrec] [--sasrec-max-epochs 50]

Reads `<run>/data` when --run names a prepared run directory; otherwise the sequences come straight from
`<data-root>/Beauty/Beauty.inter.json` (`{"user": [items]}` chronological, 0-based LETTER ids, 12,101 items).
Prints a valid/test table beside BASELINES.md's reference rows and writes `benchmarks/results/baselines_beauty.json`
(per-method records, also under `<out>/<method>.json`).
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
import yaml  # noqa: E402

from deepinterestgr.artifacts import atomic_write_json  # noqa: E402
from deepinterestgr.baselines import run_baselines, run_baselines_on_sequences  # noqa: E402
from deepinterestgr.data.schema import UserSequence  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
# BASELINES.md, test split (R@5, N@5, R@10, N@10)
REFERENCE = {
    "most-popular": (0.0072, 0.0040, 0.0114, 0.0053),
    "cooccurrence": (0.0539, 0.0391, 0.0744, 0.0458),
    "sasrec": (0.0496, 0.0292, 0.0773, 0.0381),
}
COLUMNS = ("recall@5", "ndcg@5", "recall@10", "ndcg@10")


def beauty_sequences(data_root: Path) -> tuple[list[UserSequence], int]:
    path = data_root / "Beauty" / "Beauty.inter.json"
    if not path.exists():
        sys.exit(f"{path} not found: pass --data-root pointing at the shared data folder")
    raw = json.loads(path.read_text(encoding="utf-8"))
    sequences = [UserSequence(user=user, items=[int(i) for i in items]) for user, items in raw.items()]
    return sequences, 1 + max(max(s.items) for s in sequences)


def table(records: dict[str, dict]) -> str:
    lines = [f"{'method':<14}{'split':<11}" + "".join(f"{c:>11}" for c in COLUMNS) + f"{'time s':>9}"]
    for method, rec in records.items():
        for split in ("valid", "test"):
            lines.append(f"{method:<14}{split:<11}" + "".join(f"{rec[split][c]:>11.4f}" for c in COLUMNS)
                         + f"{rec['wall_time_s']:>9.1f}")
        if method in REFERENCE:
            lines.append(f"{method:<14}{'BASELINES':<11}" + "".join(f"{v:>11.4f}" for v in REFERENCE[method]))
    return "\n".join(lines)


def _value(text: str):
    """A KEY=VALUE setting's value: int, float (1e-3 included, which YAML 1.1 reads as a string) or YAML."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return yaml.safe_load(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--run", type=Path, default=None, help="a prepared run directory (uses <run>/data)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/dig_baselines_beauty"),
                        help="where per-method JSON and SASRec checkpoints go without --run")
    parser.add_argument("--methods", nargs="+", default=["most-popular", "cooccurrence", "sasrec"])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--sasrec-max-epochs", type=int, default=50)
    parser.add_argument("--sasrec-max-minutes", type=float, default=None,
                        help="stop SASRec training after this long and score its best checkpoint so far")
    parser.add_argument("--sasrec", nargs="*", default=[], metavar="KEY=VALUE",
                        help="SASRec settings, e.g. max_len=50 dropout=0.5 lr=1e-3 batch_size=128 patience=10")
    parser.add_argument("--protocol", default="train", choices=["train", "train+valid"],
                        help="train: every model fitted on items[:-2] (TIGER's); train+valid: count models refitted "
                             "on items[:-1] for test (a table of its own)")
    parser.add_argument("--results", type=Path, default=RESULTS / "baselines_beauty.json")
    args = parser.parse_args(argv)
    sasrec_kwargs = {k: _value(v) for k, _, v in (a.partition("=") for a in args.sasrec)}
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(1)

    start = time.perf_counter()
    if args.run is not None and (args.run / "data").is_dir():
        records = run_baselines(str(args.run), methods=args.methods, seed=args.seed,
                                sasrec_max_epochs=args.sasrec_max_epochs, sasrec_max_minutes=args.sasrec_max_minutes)
        source = str(args.run / "data")
    else:
        sequences, num_items = beauty_sequences(args.data_root)
        records = run_baselines_on_sequences(sequences, num_items=num_items, out_dir=args.out, methods=args.methods,
                                             seed=args.seed, sasrec_max_epochs=args.sasrec_max_epochs,
                                             sasrec_max_minutes=args.sasrec_max_minutes, sasrec_kwargs=sasrec_kwargs,
                                             protocol=args.protocol)
        source = str(args.data_root / "Beauty" / "Beauty.inter.json")
    print(table(records))
    previous = json.loads(args.results.read_text()) if args.results.exists() else {}
    merged = {**previous.get("methods", {}), **records}  # one method per invocation keeps the others' results
    atomic_write_json(args.results, {"dataset": "Beauty", "source": source, "methods": merged,
                                     "reference_test": REFERENCE, "wall_time_s": round(time.perf_counter() - start, 1),
                                     "threads": torch.get_num_threads()})
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
