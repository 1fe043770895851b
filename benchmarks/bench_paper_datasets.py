"""The paper's other two datasets (Sports, Instruments) under the Beauty protocol, with the best Beauty settings.

    python benchmarks/bench_paper_datasets.py --data-root ../shared/data --datasets instruments sports

Protocol: that of benchmarks/bench_beauty_quality.py (chronological leave-one-out, every model fitted on
items[:-2], full ranking, all users on both splits, selection on valid, test quoted). Neither release ships item
text, so the SIDs come from what each has:
  instruments  collab   co-occurrence SVD alone (configs/experiment/instruments.yaml)
               letter   LETTER's released 4-level SIDs, imported (configs/experiment/instruments_letter.yaml)
  sports       collab   co-occurrence SVD alone (configs/experiment/sports.yaml)
               attr-collab  brand + category attribute ids fused with it (configs/experiment/sports_attributes.yaml)
Every variant trains the same generator (configs/model/generator_t5_items.yaml, the best Beauty CPU model) with the
same budget, nothing retuned.

Phases (each reuses what an earlier invocation left): sids, floors (most-popular, co-occurrence with weights
selected on valid), sasrec (the Beauty bench's SASRec settings, --sasrec-seeds), fit, candidates (beam searches
cached in the run, so two processes can search side by side), evaluate (writes the table).
Generator seeds (--seeds 42 2333 6666): one run per seed (generators/t5-items-<source>[-seed<k>]), a row per seed
(each selected on its own valid), and a "generator, mean over seeds" row (mean ± std) per source whose seeds were
fitted on one SID table (the checkpoints' sid_table_sha256). A fit without its fit_done.json marker resumes from
its last epoch's checkpoint (a killed fit, or one whose --max-time was raised); its record says from which step.
Killing the benchmark (SIGTERM) stops the fit it runs too, at the end of its current step.
The SIDs are reproducible only under the thread count they were built with (BLAS reductions change the low bits of
the collaborative SVD, and the RQ-VAE's codes with them): the evidence and quantize manifests record
torch_num_threads. The Instruments table of the results was built with --threads 1 (a rebuild reproduced its
sid_table_sha256 6a03b0..; a 2-thread rebuild did not), and so was Sports' (a 1-thread rebuild reproduced 0ad4c5..).

Writes benchmarks/results/paper_datasets.json: {"rows": [{"dataset", "method", "variant", "split", "seeds",
"recall@5", "ndcg@5", "recall@10", "ndcg@10", "std", "fit_s"}, ...], "published_test": {...}, "bootstrap": [...]};
rows of datasets not evaluated by this invocation are kept. Beside it, paper_datasets_test_ranks.jsonl keeps every
evaluated generator's and the co-occurrence floor's per-user test rank (top 10, one line each), so the paired
bootstraps, the seed-mean one included (the seeds' per-user N@10 averaged, against co-occurrence), can be
recomputed after the run directories are gone.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_beauty_quality as beauty  # noqa: E402

REPO = beauty.REPO
COLUMNS = beauty.COLUMNS
GENERATOR = "configs/model/generator_t5_items.yaml"
#: dataset -> its data config, its SID sources (name -> experiment config + `dig pipeline` overrides) and the rows
#: published on this exact processing (test split; sources in the README's "The paper's datasets" section)
DATASETS = {
    "instruments": {
        "name": "Instruments",
        "sids": {"collab": ("configs/experiment/instruments.yaml", ()),
                 "letter": ("configs/experiment/instruments_letter.yaml", ())},
        # N@10 only, as quoted from the LETTER paper (TIGER, LETTER-TIGER, LC-Rec, LETTER-LC-Rec) and the LC-Rec
        # paper (its own row) by secondary sources; the primary tables were not reachable offline
        "published": {"TIGER (LETTER paper)": (None, None, None, 0.0797),
                      "LETTER-TIGER (LETTER paper)": (None, None, None, 0.0831),
                      "LC-Rec (LETTER paper)": (None, None, None, 0.0772),
                      "LETTER-LC-Rec (LETTER paper)": (None, None, None, 0.0854),
                      "LC-Rec (LC-Rec paper)": (None, None, 0.1220, 0.0926)},
    },
    "sports": {
        "name": "Sports",
        "sids": {"collab": ("configs/experiment/sports.yaml", ()),
                 "attr-collab": ("configs/experiment/sports_attributes.yaml", ())},
        "published": {"TIGER (TIGER paper, Table 1)": (0.0264, 0.0181, 0.0400, 0.0225),
                      "SASRec (TIGER paper, Table 1)": (0.0233, 0.0154, 0.0350, 0.0192)},
    },
}
SEED_MEAN = "generator, mean over seeds"
FLOOR = "cooccurrence"
log = logging.getLogger("bench_paper_datasets")


def sids_run(args, dataset: str, sids: str) -> Path:
    return args.work / dataset / f"sids_{sids}"


def make_sids(args, dataset: str, sids: str) -> Path:
    """data -> evidence -> SIDs (quantizer fit or import) of one source, via `dig pipeline` without the later
    stages."""
    experiment, overrides = DATASETS[dataset]["sids"][sids]
    run = sids_run(args, dataset, sids)
    beauty.sh("pipeline", "-c", experiment, "--generate", "null", "--rl", "null", "--baselines", "null",
              *overrides, "--run_dir", str(run), "--data-root", str(args.data_root), threads=args.threads)
    return run


#: every source's first fit: its run, rows, bootstraps and sweep keep their unsuffixed names (earlier results use them)
FIRST_SEED = 42


def seed_suffix(seed: int, form: str = "-seed{}") -> str:
    """A name's seed suffix in `form` (run directories "-seed{}", labels ", seed {}", sweep keys "/seed{}")."""
    return "" if seed == FIRST_SEED else form.format(seed)


def generator_dir(args, dataset: str, sids: str, seed: int = FIRST_SEED) -> Path:
    """Where a generator (SID source x seed) trains; looking does not create it."""
    return args.work / dataset / "generators" / f"t5-items-{sids}{seed_suffix(seed)}"


def selected_sources(args, dataset: str) -> list[str]:
    return [s for s in DATASETS[dataset]["sids"] if args.sids is None or s in args.sids]


def generator_run(args, dataset: str, sids: str, seed: int = FIRST_SEED) -> Path:
    """Each generator trains in its own run whose data/ and quantize/ link to its SID run."""
    run = generator_dir(args, dataset, sids, seed)
    run.mkdir(parents=True, exist_ok=True)
    for part in ("data", "quantize"):
        link = run / part
        if not link.is_symlink() and not link.exists():
            link.symlink_to((sids_run(args, dataset, sids) / part).resolve(), target_is_directory=True)
    return run


def generate_configs() -> list[str]:
    """The LightningCLI fragments every generator fit composes (tests/test_configs.py parses them)."""
    return ["configs/trainer/generate_cpu.yaml", GENERATOR, "configs/data/sequences.yaml"]


def fit(args, dataset: str, sids: str, seed: int) -> dict:
    run = generator_run(args, dataset, sids, seed)
    marker = run / "generate" / "fit_done.json"
    if marker.exists():
        return json.loads(marker.read_text())
    fragments = [a for c in generate_configs() for a in ("-c", c)]
    # a step budget makes SID sources comparable when their fits share the cores unequally
    steps = ("--trainer.max_steps", str(args.max_steps)) if args.max_steps else ()
    resumed = resume_point(run, seed)
    resume = ("--ckpt_path", resumed["checkpoint"]) if resumed else ()
    earlier_s = resumed["earlier_s"] if resumed else 0.0
    fit_s = beauty.sh("fit", *fragments, "--data.run_dir", str(run), "--trainer.default_root_dir",
                      str(run / "generate"), "--trainer.enable_progress_bar", "false", "--trainer.max_time",
                      args.max_time, "--data.val_max_users", str(args.val_max_users), "--seed_everything",
                      str(seed), *steps, *resume, threads=args.threads)
    record = {"dataset": dataset, "sids": sids, "config": GENERATOR, "fit_s": round(earlier_s + fit_s),
              "max_time": args.max_time, "max_steps": args.max_steps, "seed": seed,
              "val_max_users": args.val_max_users, "threads": args.threads}
    if resumed:
        record["resumed"] = resumed
    marker.write_text(json.dumps(record, indent=2) + "\n")
    return record


def resume_point(run: Path, seed: int) -> dict | None:
    """An unfinished fit (killed, or stopped by a --max-time it should not have had) resumes from its last epoch's
    checkpoint: trainer, optimizer, schedule, early stopping, the Timer's elapsed time and the StepSeed'ed dropout all
    continue. Returns that checkpoint, its step and the seconds of training and validation already spent."""
    last = run / "generate" / "checkpoints" / "last.ckpt"
    if not last.exists():
        return None
    saved = torch.load(last, map_location="cpu", weights_only=False, mmap=True)
    saved_seed = next((v.get("seed") for k, v in saved.get("callbacks", {}).items() if k.startswith("StepSeed")), None)
    if saved_seed is not None and saved_seed != seed:
        raise SystemExit(f"{last}: an unfinished fit under seed {saved_seed}, not {seed}; remove {run} to start over")
    elapsed = next((v["time_elapsed"] for k, v in saved.get("callbacks", {}).items() if k.startswith("Timer")), {})
    log.info("%s: resuming the unfinished fit from %s (step %d)", run.name, last, saved["global_step"])
    return {"checkpoint": str(last), "step": int(saved["global_step"]),
            "earlier_s": round(float(elapsed.get("train", 0.0) + elapsed.get("validate", 0.0)))}


def floors(args, dataset: str) -> dict:
    from deepinterestgr.baselines import run_baselines

    done = args.work / dataset / "floors.json"
    if done.exists():
        return json.loads(done.read_text())
    records = run_baselines(str(sequences_run(args, dataset)), methods=["most-popular", "cooccurrence"])
    done.write_text(json.dumps(records, indent=2) + "\n")
    return records


def sequences_run(args, dataset: str) -> Path:
    """A SID run holding the prepared data (every SID source of a dataset prepares the same data)."""
    runs = [sids_run(args, dataset, s) for s in DATASETS[dataset]["sids"]]
    return next((r for r in runs if (r / "data").exists()), runs[0])


def sasrec(args, dataset: str, *, train: bool = True) -> list[dict]:
    from deepinterestgr.baselines import run_baselines_on_sequences
    from deepinterestgr.data.io import load_catalog, load_sequences

    records = []
    for seed in args.sasrec_seeds:
        out = args.work / dataset / f"sasrec_seed{seed}"
        done = out / "sasrec.json"
        if done.exists():
            records.append(json.loads(done.read_text()))
        elif train:
            run = str(sequences_run(args, dataset))
            records.append(run_baselines_on_sequences(
                load_sequences(run), num_items=len(load_catalog(run)), out_dir=out, methods=["sasrec"], seed=seed,
                sasrec_max_epochs=200, sasrec_max_minutes=args.sasrec_max_minutes,
                sasrec_kwargs=dict(beauty.SASREC_SETTINGS))["sasrec"])
    return records


def row(dataset: str, method: str, variant: str, split: str, metrics: dict, **kw) -> dict:
    return {"dataset": DATASETS[dataset]["name"], **beauty.row(method, variant, split, metrics, **kw)}


def dataset_rows(args, dataset: str) -> tuple[list[dict], dict, list[dict], dict[str, torch.Tensor]]:
    """The dataset's rows, its generators' sweeps, paired bootstraps over test users of test N@10 (every generator
    against the co-occurrence floor, and the SID sources against each other), and the per-user test ranks they
    came from (the generators' and the floor's, users in the sequences' order)."""
    from deepinterestgr.generate.evaluation import ndcg_per_user, paired_bootstrap

    rows: list[dict] = []
    floor_records = floors(args, dataset)
    for method, rec in floor_records.items():
        for split in ("valid", "test"):
            no_repeat = ", no repeats" if rec["params"].get("exclude_history") else ""
            variant = ("weights selected on valid" if method == "cooccurrence" else "-") + no_repeat
            rows.append(row(dataset, method, variant, split, rec[split], seeds=[], fit_s=rec["wall_time_s"]))
    sas = sasrec(args, dataset, train=False)
    for split in ("valid", "test") if sas else ():
        mean, std = beauty.mean_std(sas, split)
        no_repeat = ", no repeats" if all(r["params"].get("exclude_history") for r in sas) else ""
        rows.append(row(dataset, "sasrec", f"2x64, CE, len 50, dropout 0.5{no_repeat}", split, mean,
                        seeds=[r["seed"] for r in sas], std=std,
                        fit_s=round(sum(r["wall_time_s"] for r in sas) / len(sas))))
    sweeps, ranks = {}, {}
    for sids in selected_sources(args, dataset):
        for seed in args.seeds:
            run = generator_dir(args, dataset, sids, seed)
            marker = run / "generate" / "fit_done.json"
            if not marker.exists():
                log.warning("%s: generator on %s SIDs, seed %d has no finished fit; left out (run --phases fit)",
                            dataset, sids, seed)
                continue
            fit_record = json.loads(marker.read_text())
            ev = beauty.evaluate_run(run, run.name, beams=args.beams, weights=args.weights)
            sweeps[sweep_key(sids, seed)] = {k: v for k, v in ev.items() if k not in ("test_ranks", "test_users")}
            name = f"generator, {source_label(sids, seed)}"
            # a generator serves users in length order: its ranks back in the sequences' user order
            ranks[name] = torch.full((len(ev["test_ranks"]),), -1, dtype=torch.long)
            ranks[name][ev["test_users"]] = torch.as_tensor(ev["test_ranks"]).long()
            no_repeat = ", no repeats" if ev["selected_exclude_history"] else ""
            for split in ("valid", "test"):
                label = (f"t5-items, {source_label(sids, seed)} (beam {ev['selected_beam']}, "
                         f"rerank w={ev['selected_weight']:g}{no_repeat})")
                rows.append(row(dataset, "generator", label, split, ev[split], seeds=[fit_record["seed"]],
                                fit_s=fit_record["fit_s"]))
    bootstraps = []
    if ranks:
        names = list(ranks)
        ranks[FLOOR] = beauty.per_user_floor_ranks(sequences_run(args, dataset), floor_records[FLOOR])
        per_user = {n: ndcg_per_user(r) for n, r in ranks.items()}
        pairs = [(n, FLOOR) for n in names]
        # SID sources are compared seed for seed (a seed's noise is not a source's effect)
        pairs += [(a, b) for i, a in enumerate(names) for b in names[i + 1:] if seed_of(a) == seed_of(b)]
        for a, b in pairs:
            bootstraps.append({"dataset": DATASETS[dataset]["name"], "a": a, "b": b,
                               "metric": "test ndcg@10 per user", **paired_bootstrap(per_user[a], per_user[b])})
    return rows, sweeps, bootstraps, ranks


ranks_file = beauty.ranks_file  # <results stem>_test_ranks.jsonl beside the results


def load_ranks(path: Path) -> dict[str, dict[str, list[int]]]:
    """dataset -> name (a bootstrap's: "generator, <source> SIDs[, seed k]" or "cooccurrence") -> per-user rank."""
    out: dict[str, dict[str, list[int]]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            out.setdefault(entry["dataset"], {})[entry["name"]] = entry["test_rank"]
    return out


def save_ranks(path: Path, ranks: dict[str, dict[str, list[int]]]) -> None:
    lines = [json.dumps({"dataset": d, "name": n, "test_rank": r}, separators=(",", ":"))
             for d in sorted(ranks) for n, r in sorted(ranks[d].items())]
    path.write_text("\n".join(lines) + "\n")


top10 = beauty.top10


def row_test_ndcg(rows: list[dict], dataset: str, name: str) -> float | None:
    """The test N@10 of the table row a ranks entry belongs to (None: no such row)."""
    for r in rows:
        if r["dataset"] != dataset or r["split"] != "test":
            continue
        if name == FLOOR and r["method"] == FLOOR:
            return r["ndcg@10"]
        owner = "t5-items, " + name.removeprefix("generator, ")
        if r["method"] == "generator" and r["variant"].split(" (")[0] == owner:
            return r["ndcg@10"]
    return None


def seed_mean_bootstraps(rows: list[dict], ranks: dict[str, dict[str, list[int]]]) -> list[dict]:
    """For each test "mean over seeds" row, the paired bootstrap of its claim against co-occurrence: per user, test
    N@10 averaged over the row's seeds, minus the floor's. Only ranks that agree with their rows count (a refitted
    generator or floor whose ranks were not recorded would not). When some seeds' ranks are missing but two or more
    agree, the bootstrap is over those seeds and its name and `of_seeds` say so; with fewer, none, and it says why."""
    from deepinterestgr.generate.evaluation import ndcg_per_user, paired_bootstrap

    out = []
    for r in rows:
        if r["method"] != SEED_MEAN or r["split"] != "test":
            continue
        source = r["variant"].removeprefix("t5-items, ").split(" SIDs")[0]
        names = {seed: f"generator, {source_label(source, seed)}" for seed in r["seeds"]}
        have = ranks.get(r["dataset"], {})
        per_user = {n: ndcg_per_user(torch.tensor(have[n])) for n in [*names.values(), FLOOR] if n in have}
        row_values = {n: row_test_ndcg(rows, r["dataset"], n) for n in per_user}
        # rows hold 4 decimals: a recorded mean further off than that belongs to another fit of the row
        agree = {n for n, x in per_user.items()
                 if row_values[n] is not None and abs(float(x.mean()) - row_values[n]) <= 1e-4}
        seeds = [seed for seed, n in names.items() if n in agree]
        unusable = [n for n in [*names.values(), FLOOR] if n not in agree]
        if unusable:
            log.warning("%s %s: per-user ranks missing or not matching their rows for %s (evaluate those runs "
                        "again)%s", r["dataset"], r["variant"], unusable,
                        "" if FLOOR in agree and len(seeds) >= 2 else "; no seed-mean bootstrap")
        if FLOOR not in agree or len(seeds) < 2:
            continue
        mean = torch.stack([per_user[names[seed]] for seed in seeds]).mean(0)
        lost = [seed for seed in r["seeds"] if seed not in seeds]
        partial = "" if not lost else (f" (of {', '.join(map(str, r['seeds']))}: per-user ranks of seed "
                                       f"{', '.join(map(str, lost))} lost)")
        out.append({"dataset": r["dataset"], "a": f"generator, {source} SIDs, mean over seeds "
                    + ", ".join(map(str, seeds)) + partial, "b": FLOOR, "metric": "test ndcg@10 per user, seed mean",
                    "seeds": seeds, "of_seeds": r["seeds"], **paired_bootstrap(mean, per_user[FLOOR])})
    return out


def source_label(sids: str, seed: int) -> str:
    """How rows and bootstraps name a generator: its SID source, and its seed unless it is the first."""
    return f"{sids} SIDs" + seed_suffix(seed, ", seed {}")


def sweep_key(sids: str, seed: int) -> str:
    return sids + seed_suffix(seed, "/seed{}")


def seed_of(name: str) -> int:
    """The seed in a generator's row or bootstrap name (source_label's inverse)."""
    return int(name.rsplit(", seed ", 1)[1]) if ", seed " in name else FIRST_SEED


def seed_mean_rows(rows: list[dict], sweeps: dict) -> list[dict]:
    """A "generator, mean over seeds" row (mean ± std, each seed selected on its own valid) per dataset, SID source
    and split that has fits under two or more seeds on one SID table; seeds fitted on different SID tables (a
    rebuilt quantizer) are not averaged, and say so."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["method"] == "generator":
            owner = r["variant"].split(" (")[0]
            source = owner.removeprefix("t5-items, ").split(" SIDs")[0]
            groups.setdefault((r["dataset"], source, r["split"]), []).append(r)
    out = []
    for (dataset, source, split), chosen in groups.items():
        if len(chosen) < 2:
            continue
        tables = {sweeps.get(f"{dataset}/{sweep_key(source, r['seeds'][0])}", {}).get("sid_table_sha256")
                  for r in chosen}
        if len(tables) != 1 or None in tables:
            log.warning("%s %s: seeds %s were fitted on different SID tables (or one is unknown); no mean row",
                        dataset, source, [r["seeds"][0] for r in chosen])
            continue
        chosen = sorted(chosen, key=lambda r: r["seeds"][0])
        out.append({"dataset": dataset, **beauty.mean_row(f"t5-items, {source} SIDs (selected on valid per seed)",
                                                          split, chosen)})
    return out


def row_owner(r: dict) -> tuple[str, str]:
    """What produced a row, per dataset (the Beauty bench's owner: a floor's method or a generator's SID source)."""
    return r["dataset"], beauty.row_owner(r)


def carry_over(old: dict, rows: list[dict], sweeps: dict, bootstraps: list[dict]):
    """Keep the rows, sweeps and bootstraps of an earlier invocation that this one did not recompute (a floor rerun
    must not drop generator rows whose fits live elsewhere); recomputed owners replace their old rows. A kept
    bootstrap against a refitted generator is dropped: its per-user figures are gone."""
    owners = {row_owner(r) for r in rows}
    kept = [r for r in old.get("rows", []) if row_owner(r) not in owners]
    for r in kept:
        log.info("kept from the earlier results: %s %s %s %s", r["dataset"], r["method"], r["variant"], r["split"])
    kept_sweeps = {k: v for k, v in old.get("generator_sweeps", {}).items() if k not in sweeps}
    new_pairs = {(b["dataset"], b["a"], b["b"]) for b in bootstraps}
    # a bootstrap names a generator "generator, <source> SIDs"; its rows are labelled "t5-items, <source> SIDs"
    refitted = {(d, "generator, " + o.removeprefix("t5-items, ")) for d, o in owners if o.startswith("t5-items, ")}
    kept_boot = [b for b in old.get("bootstrap", []) if (b["dataset"], b["a"], b["b"]) not in new_pairs
                 and (b["dataset"], b["a"]) not in refitted and (b["dataset"], b["b"]) not in refitted]
    return table_order(kept + rows), {**kept_sweeps, **sweeps}, kept_boot + bootstraps


def table_order(rows: list[dict]) -> list[dict]:
    """Datasets in DATASETS order; floors, SASRec, generators, seed means; splits stay put."""
    order = {name: i for i, name in enumerate(d["name"] for d in DATASETS.values())}
    method_order = {"most-popular": 0, "cooccurrence": 1, "sasrec": 2, "generator": 3}
    return sorted(rows, key=lambda r: (order.get(r["dataset"], len(order)), method_order.get(r["method"], 4),
                                       row_owner(r)))


def beauty_rows(path: Path) -> tuple[list[dict], dict]:
    """The Beauty table's floors and seed-mean generator row (benchmarks/bench_beauty_quality.py), for the README's
    three-dataset table; nothing when that bench has not run."""
    if not path.exists():
        return [], {}
    beauty_result = json.loads(path.read_text())
    keep = ("most-popular", FLOOR, "sasrec", SEED_MEAN)
    rows = [{**r, "dataset": "Beauty"} for r in beauty_result["rows"] if r["method"] in keep]
    return rows, {"Beauty": {k: v for k, v in beauty_result["published_test"].items() if k.startswith("TIGER")}}


def markdown_table(result: dict, beauty: Path | None = None) -> str:
    extra_rows, extra_published = beauty_rows(beauty) if beauty else ([], {})
    result = {**result, "rows": extra_rows + result["rows"],
              "published_test": {**extra_published, **result["published_test"]}}
    lines = ["| dataset | method | variant | seeds | R@5 | N@5 | R@10 | N@10 | valid N@10 | fit s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    valid = {(r["dataset"], r["method"], r["variant"]): r for r in result["rows"] if r["split"] == "valid"}

    def cell(r: dict, c: str) -> str:
        std = r["std"].get(c)
        return f"{r[c]:.4f}" + (f" ± {std:.4f}" if std else "")

    for r in (r for r in result["rows"] if r["split"] == "test"):
        v = valid.get((r["dataset"], r["method"], r["variant"]))
        lines.append(f"| {r['dataset']} | {r['method']} | {r['variant']} | {len(r['seeds']) or '-'} | "
                     + " | ".join(cell(r, c) for c in COLUMNS)
                     + f" | {cell(v, 'ndcg@10') if v else '-'} | {r['fit_s'] if r['fit_s'] is not None else '-'} |")
    for dataset, published in result["published_test"].items():
        for name, values in published.items():
            cells = " | ".join("-" if x is None else f"{x:.4f}" for x in values)
            lines.append(f"| {dataset} | {name} | published | | {cells} | | |")
    if result.get("bootstrap"):
        lines.append("")
    for b in result.get("bootstrap", []):
        lines.append(f"- {b['dataset']}: test N@10 of {b['a']} minus {b['b']}: {b['mean_diff']:+.4f} (95% CI "
                     f"{b['ci95'][0]:+.4f} .. {b['ci95'][1]:+.4f}, paired bootstrap over {b['users']:,} users)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    p.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--work", type=Path, default=REPO / "runs" / "paper_datasets", help="run directories and fits")
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--sids", nargs="+", default=None,
                   help="SID sources to fit and evaluate (default: every source of a dataset); the other sources' "
                        "rows stay as --results has them")
    p.add_argument("--phases", nargs="+", default=["sids", "floors", "sasrec", "fit", "evaluate"])
    p.add_argument("--sasrec-seeds", type=int, nargs="+", default=[42])
    p.add_argument("--sasrec-max-minutes", type=float, default=35.0)
    p.add_argument("--seeds", "--seed", type=int, nargs="+", default=[FIRST_SEED],
                   help="generator seeds: one fit (and run directory) per seed; seeds of one source fitted on one SID "
                        "table get a mean ± std row")
    p.add_argument("--threads", type=int, default=int(os.environ["OMP_NUM_THREADS"]))
    p.add_argument("--max-time", default="00:00:55:00", help="generator fit wall-clock cap, DD:HH:MM:SS")
    p.add_argument("--max-steps", type=int, default=None,
                   help="generator step budget (as well as --max-time): equal training for SID sources compared")
    p.add_argument("--val-max-users", type=int, default=3000, help="seeded random valid sample for checkpointing")
    p.add_argument("--beams", type=int, nargs="+", default=[50], help="beam widths tried (selected on valid)")
    p.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0])
    p.add_argument("--results", type=Path, default=beauty.RESULTS / "paper_datasets.json")
    p.add_argument("--markdown", action="store_true", help="print the README table of --results and exit")
    args = p.parse_args(argv)
    if args.markdown:
        print(markdown_table(json.loads(args.results.read_text()), beauty=beauty.RESULTS / "beauty_quality.json"))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)

    for dataset in args.datasets:
        if "sids" in args.phases:
            for s in selected_sources(args, dataset):
                make_sids(args, dataset, s)
        if "floors" in args.phases:
            floors(args, dataset)
        if "fit" in args.phases:
            for s in selected_sources(args, dataset):
                for seed in args.seeds:
                    fit(args, dataset, s, seed)
        if "sasrec" in args.phases:
            sasrec(args, dataset)
        if "candidates" in args.phases:
            for s in selected_sources(args, dataset):
                for seed in args.seeds:
                    run = generator_dir(args, dataset, s, seed)
                    if (run / "generate" / "fit_done.json").exists():
                        beauty.evaluate_run(run, run.name, beams=args.beams, weights=args.weights)
    if "evaluate" not in args.phases:
        return
    old = json.loads(args.results.read_text()) if args.results.exists() else {}
    ranks = load_ranks(ranks_file(args.results))
    rows, sweeps, bootstraps = [], {}, []
    for dataset in args.datasets:
        new_rows, new_sweeps, new_boot, new_ranks = dataset_rows(args, dataset)
        rows += new_rows
        bootstraps += new_boot
        sweeps |= {f"{DATASETS[dataset]['name']}/{s}": v for s, v in new_sweeps.items()}
        ranks.setdefault(DATASETS[dataset]["name"], {}).update({n: top10(r) for n, r in new_ranks.items()})
    rows, sweeps, bootstraps = carry_over(old, rows, sweeps, bootstraps)
    # the seed means and their bootstraps are recomputed from every seed's rows and ranks
    rows = [r for r in rows if r["method"] != SEED_MEAN]
    rows = table_order(rows + seed_mean_rows(rows, sweeps))
    bootstraps = [b for b in bootstraps if "seeds" not in b] + seed_mean_bootstraps(rows, ranks)
    result = {"protocol": beauty.PROTOCOL, "rows": rows,
              "published_test": {DATASETS[d]["name"]: DATASETS[d]["published"] for d in DATASETS},
              "bootstrap": bootstraps, "generator_sweeps": sweeps, "threads": args.threads,
              "command": "python benchmarks/bench_paper_datasets.py " + " ".join(sys.argv[1:])}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2) + "\n")
    save_ranks(ranks_file(args.results), ranks)
    print(f"wrote {args.results}\n")
    print(markdown_table(result, beauty=beauty.RESULTS / "beauty_quality.json"))


if __name__ == "__main__":
    main()
