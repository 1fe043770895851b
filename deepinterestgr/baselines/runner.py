"""`run_baselines`: fit and score the floors of the benchmark tables on a run directory's leave-one-out split.

Writes one `<run>/baselines/<method>.json` per method (atomically): valid and test Recall/NDCG@5/10 on the full
ranking protocol, the chosen parameters, the protocol and the wall time.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from deepinterestgr.artifacts import atomic_write_json
from deepinterestgr.baselines.cooccurrence import CoOccurrence
from deepinterestgr.baselines.evaluation import DEFAULT_KS, PROTOCOLS, SPLITS, evaluate, split_view
from deepinterestgr.baselines.popularity import MostPopular
from deepinterestgr.data.schema import UserSequence

log = logging.getLogger(__name__)

STAGE = "baselines"
MAX_HISTORY = 20
SELECT_ON = "ndcg@10"  # valid metric every tuned baseline is selected on
# Valid-tuned on Beauty (see benchmarks/bench_baselines.py); the grid is searched again on every run.
COOCCURRENCE_GRID = {"recency_decay": (0.2, 0.3, 0.5, 0.7), "cooccurrence_weight": (0.0, 0.05, 0.1)}

FIT_ON = {
    "train": "items[:-2] of every user for both splits (TIGER's protocol; the test history reads the valid item)",
    "train+valid": "valid: items[:-2] of every user; test: count models refitted on items[:-1] (train + valid)",
}


def protocol_record(protocol: str = "train") -> dict:
    """The protocol block every baseline record (and the generator's benchmark rows) carries."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    return {
        "name": protocol,
        "split": "chronological leave-one-out: last item = test target, second-to-last = valid target",
        "ranking": "full ranking over all catalog items; history items not masked",
        "max_history": MAX_HISTORY,
        "fit_on": FIT_ON[protocol],
    }


EXCLUDE_HISTORY = (False, True)  # the no-repeat rule: a model option every method selects on valid


def _most_popular(sequences: Sequence[UserSequence], num_items: int, *, protocol: str = "train", **_) -> dict:
    views = {split: split_view(sequences, split, max_history=MAX_HISTORY, protocol=protocol) for split in SPLITS}
    models = {split: MostPopular().fit(view.fit_sequences, num_items=num_items) for split, view in views.items()}
    by_exclude = {ex: {split: evaluate(models[split], views[split], exclude_history=ex) for split in SPLITS}
                  for ex in EXCLUDE_HISTORY}
    exclude = max(EXCLUDE_HISTORY, key=lambda ex: by_exclude[ex]["valid"][SELECT_ON])
    return {"params": {"exclude_history": exclude}, **by_exclude[exclude], "selected_on": f"valid {SELECT_ON}",
            "by_exclude_history": {str(ex).lower(): v for ex, v in by_exclude.items()}}


def _cooccurrence(sequences: Sequence[UserSequence], num_items: int, *, cooccurrence_grid: dict | None = None,
                  protocol: str = "train", **_) -> dict:
    grid = cooccurrence_grid or COOCCURRENCE_GRID
    valid = split_view(sequences, "valid", max_history=MAX_HISTORY, protocol=protocol)
    tried = []
    for values in itertools.product(*grid.values()):
        params = dict(zip(grid, values))
        model = CoOccurrence(**params).fit(valid.fit_sequences, num_items=num_items)
        for exclude in EXCLUDE_HISTORY:
            metrics = evaluate(model, valid, exclude_history=exclude)
            log.info("cooccurrence %s exclude_history=%s valid %s", params, exclude, metrics)
            tried.append({"params": {**params, "exclude_history": exclude}, "valid": metrics})
    best = max(tried, key=lambda t: t["valid"][SELECT_ON])
    test = split_view(sequences, "test", max_history=MAX_HISTORY, protocol=protocol)
    params = {k: v for k, v in best["params"].items() if k != "exclude_history"}
    model = CoOccurrence(**params).fit(test.fit_sequences, num_items=num_items)
    return {"params": {"last_n": model.last_n, **best["params"]}, "valid": best["valid"],
            "test": evaluate(model, test, exclude_history=best["params"]["exclude_history"]),
            "tuning": tried, "selected_on": f"valid {SELECT_ON}"}


def _sasrec(sequences: Sequence[UserSequence], num_items: int, *, out_dir: Path, seed: int, sasrec_max_epochs: int,
            sasrec_max_minutes: float | None = None, sasrec_kwargs: dict | None = None, protocol: str = "train",
            **_) -> dict:
    from deepinterestgr.baselines.sasrec import fit_sasrec  # imports Lightning: only when SASRec is asked for

    if protocol != "train":
        raise ValueError("SASRec trains once on items[:-2] and early-stops on valid: only protocol 'train' applies")
    kwargs = {"max_len": MAX_HISTORY, **(sasrec_kwargs or {})}
    # SASRec reads as much history as it was built for (max_len 50 in the tuned setting)
    valid = split_view(sequences, "valid", max_history=kwargs["max_len"])
    test = split_view(sequences, "test", max_history=kwargs["max_len"])
    fit_kwargs = {k: kwargs.pop(k) for k in ("patience", "batch_size") if k in kwargs}
    result = fit_sasrec(
        train_sequences=valid.fit_sequences,  # items[:-2]: training never sees a valid or test target
        valid=(valid.histories, valid.targets),
        test=(test.histories, test.targets),
        num_items=num_items,
        out_dir=out_dir / "sasrec",
        seed=seed,
        max_epochs=sasrec_max_epochs,
        max_minutes=sasrec_max_minutes,
        **fit_kwargs,
        **kwargs,
    )
    record = {"params": {**kwargs, **fit_kwargs, "max_epochs": sasrec_max_epochs, "max_minutes": sasrec_max_minutes},
              "valid": result.valid, "test": result.test}
    select_sasrec_exclude_history(record, result.best_checkpoint, valid, test)
    return {**record, "epochs": result.epochs, "stopped_by": result.stopped_by,
            "best_checkpoint": result.best_checkpoint, "selected_on": "valid ndcg@10 (early stop)",
            "trained_on": "items[:-2] of every user"}


def select_sasrec_exclude_history(record: dict, checkpoint: str, valid, test) -> dict:
    """Score a trained SASRec with the no-repeat rule too and keep, in `record` (valid/test/params), whichever is
    better on valid: a model option selected like the checkpoint. `valid`/`test` are the SplitViews it was scored on."""
    from deepinterestgr.baselines.evaluation import score_top_k
    from deepinterestgr.baselines.sasrec import SASRec, sasrec_top_k

    model = SASRec.load_from_checkpoint(checkpoint, map_location="cpu")
    excluded = {split: score_top_k(sasrec_top_k(model, view.histories, k=max(DEFAULT_KS), exclude_history=True),
                                   view.targets) for split, view in (("valid", valid), ("test", test))}
    plain = {"valid": record["valid"], "test": record["test"]}
    exclude = excluded["valid"][SELECT_ON] > plain["valid"][SELECT_ON]
    record.update(excluded if exclude else plain)
    record["params"]["exclude_history"] = exclude
    record["by_exclude_history"] = {"false": plain, "true": excluded}
    return record


METHODS: dict[str, Callable[..., dict]] = {"most-popular": _most_popular, "cooccurrence": _cooccurrence,
                                           "sasrec": _sasrec}


def run_baselines_on_sequences(
    sequences: Sequence[UserSequence],
    *,
    num_items: int,
    out_dir: str | Path,
    methods: Sequence[str] = ("most-popular", "cooccurrence"),
    seed: int = 42,
    sasrec_max_epochs: int = 50,
    protocol: str = "train",
    **method_kwargs,
) -> dict[str, dict]:
    """Score `methods` on `sequences` (dense ids < num_items) under `protocol` ("train" or "train+valid", see
    `deepinterestgr.baselines.evaluation`); write `<out_dir>/<method>.json`; return the records."""
    protocol_block = protocol_record(protocol)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; known: {sorted(METHODS)}")
    out_dir = Path(out_dir)
    records = {}
    for method in methods:
        start = time.perf_counter()
        record = METHODS[method](sequences, num_items, out_dir=out_dir, seed=seed, sasrec_max_epochs=sasrec_max_epochs,
                                 protocol=protocol, **method_kwargs)
        record = {"method": method, "seed": seed, "users": len(sequences), "items": num_items, "ks": list(DEFAULT_KS),
                  "protocol": protocol_block, **record, "wall_time_s": round(time.perf_counter() - start, 2)}
        atomic_write_json(out_dir / f"{method}.json", record)
        log.info("%s: valid %s test %s (%.1f s)", method, record["valid"], record["test"], record["wall_time_s"])
        records[method] = record
    return records


def run_baselines(
    run_dir: str,
    methods: list[str] = ["most-popular", "cooccurrence"],  # noqa: B006 (the documented default list)
    seed: int = 42,
    sasrec_max_epochs: int = 50,
    sasrec_max_minutes: float | None = None,
) -> dict:
    """Read `<run>/data` (verified against its manifest), write `<run>/baselines/<method>.json`,
    return {method: record}."""
    from deepinterestgr.data.io import load_catalog, load_sequences

    num_items = len(load_catalog(run_dir))
    return run_baselines_on_sequences(
        load_sequences(run_dir), num_items=num_items, out_dir=Path(run_dir) / STAGE, methods=methods, seed=seed,
        sasrec_max_epochs=sasrec_max_epochs, sasrec_max_minutes=sasrec_max_minutes,
    )
