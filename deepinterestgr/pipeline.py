"""`dig pipeline`: prepare -> evidence -> quantize -> generate (fit + test) -> rl (fit + test), in one run directory.

Each stage is skipped when it is current (`artifacts.is_current`): its artifacts verify against its manifest, and the
manifest records the same resolved config (seed included) and the same manifest hashes of the stages it reads.
`--from STAGE` forces that stage and every later one to rerun. Trainable stages go through the same LightningCLI as
`dig fit`, resume from their `last.ckpt` when a fit of the same record wrote it, and log to TensorBoard under
`<run>/<stage>/`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepinterestgr.artifacts import (
    MANIFEST,
    READS,
    ArtifactError,
    atomic_write_json,
    input_manifests,
    is_current,
    stage_record,
    write_manifest,
)
from deepinterestgr.training import resumable_checkpoint

log = logging.getLogger(__name__)

STAGES = ("data", "evidence", "quantize", "generate", "rl", "baselines")


@dataclass
class TrainStage:
    """A trainable stage: LightningCLI config fragments (composed in order) and extra `--key value` overrides."""

    configs: list[str]
    overrides: list[str] = field(default_factory=list)


def _lightning_args(stage: TrainStage, run: Path, stage_name: str) -> list[str]:
    args: list[str] = []
    for c in stage.configs:
        args += ["-c", c]
    args += ["--data.run_dir", str(run), "--trainer.default_root_dir", str(run / stage_name)]
    return args + list(stage.overrides)


def _fit_and_test(stage: TrainStage, run: Path, stage_name: str, *, fresh: bool) -> dict[str, Any]:
    """`dig fit` then `dig test` on the best checkpoint, unless the stage is current (its summary is returned then).
    Resumes an interrupted fit of the same resolved config and inputs from its `last.ckpt`; `fresh` (from `--from`)
    always starts over.

    Single-process fits run in this process. A multi-process trainer (DDP over several devices) that Lightning must
    launch itself runs as `dig fit` / `dig test` subprocesses: Lightning starts ranks 1.. by re-running the command
    line, and only a plain `dig fit` re-runs into the same place on every rank (a re-run `dig pipeline` would not).
    """
    from deepinterestgr.lightning_configs import resolved_config, run_lightning

    stage_dir = run / stage_name
    args = _lightning_args(stage, run, stage_name)
    probe = run_lightning(args, run=False)  # parse + instantiate only: the resolved config, how the trainer will run
    config, inputs = resolved_config(probe), input_manifests(run, READS[stage_name])
    if not fresh and is_current(stage_dir, stage_name, config, inputs):
        return json.loads((stage_dir / "pipeline_metrics.json").read_text(encoding="utf-8"))
    seed = config.get("seed_everything")
    if isinstance(seed, int) and not isinstance(seed, bool):  # `seed_everything: true` drew it: fit with that one
        args += ["--seed_everything", str(seed)]
    launches_ranks = (probe.trainer.world_size > 1
                      and not probe.trainer.strategy.cluster_environment.creates_processes_externally)
    last = resumable_checkpoint(stage_dir, config, inputs, fresh=fresh)
    fit_args = ["fit", *args] + (["--ckpt_path", str(last)] if last is not None else [])
    start = time.perf_counter()
    if launches_ranks:
        metrics, ckpt = _fit_and_test_in_subprocesses(fit_args, args, stage_dir)
        fit_seconds = time.perf_counter() - start
    else:
        cli = run_lightning(fit_args)
        fit_seconds = time.perf_counter() - start
        best = cli.trainer.checkpoint_callback.best_model_path if cli.trainer.checkpoint_callback else ""
        last_now = stage_dir / "checkpoints" / "last.ckpt"
        ckpt = best or (str(last_now) if last_now.exists() else None)
        results = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt, verbose=False)
        metrics = {k: float(v) for k, v in (results[0] if results else {}).items()}
    summary = {"metrics": metrics, "checkpoint": ckpt, "fit_seconds": round(fit_seconds, 1)}
    atomic_write_json(stage_dir / "pipeline_metrics.json", summary)
    files = ["pipeline_metrics.json"]
    if ckpt and Path(ckpt).is_relative_to(stage_dir):
        files.append(str(Path(ckpt).relative_to(stage_dir)))
    write_manifest(stage_dir, stage_name, files, **stage_record(config, inputs), metrics=metrics)
    return summary


def _fit_and_test_in_subprocesses(fit_args: list[str], args: list[str], stage_dir: Path) -> tuple[dict, str | None]:
    import subprocess
    import sys

    command = [sys.executable, "-m", "deepinterestgr.cli.main"]
    for sub in (fit_args, None):
        if sub is None:  # test the best checkpoint (the modules' checkpoint callback names it best.ckpt)
            best, last = stage_dir / "checkpoints" / "best.ckpt", stage_dir / "checkpoints" / "last.ckpt"
            ckpt = str(best if best.exists() else last) if (best.exists() or last.exists()) else None
            sub = ["test", *args] + (["--ckpt_path", ckpt] if ckpt else [])
            (stage_dir / "metrics_test.json").unlink(missing_ok=True)  # never read a previous run's metrics
        print(f"[{stage_dir.name}] multi-process trainer: running `dig {sub[0]}` in a subprocess", flush=True)
        proc = subprocess.run([*command, *sub])
        if proc.returncode != 0:
            raise RuntimeError(f"`dig {sub[0]}` of the {stage_dir.name} stage failed (exit {proc.returncode}); "
                               f"its output is above. Rerun the pipeline to resume from {stage_dir / 'checkpoints'}.")
    metrics_file = stage_dir / "metrics_test.json"
    if not metrics_file.exists():
        raise ArtifactError(f"{metrics_file}: `dig test` wrote no metrics; rerun the `{stage_dir.name}` stage")
    written = json.loads(metrics_file.read_text(encoding="utf-8"))
    return {k: float(v) for k, v in written.items() if k.startswith("test/")}, ckpt


def run_pipeline(
    run_dir: str = "runs/synthetic",
    data: dict | str | None = None,
    evidence: dict | str | None = None,
    quantize: TrainStage | None = None,
    sids: dict | None = None,
    generate: TrainStage | None = None,
    rl: TrainStage | None = None,
    baselines: list[str] | None = None,
    data_root: str | None = None,
    from_stage: str | None = None,
) -> dict:
    """Run the whole DeepInterestGR pipeline into one run directory and print the metrics table.

    Args:
        run_dir: where every stage writes its artifacts (`<run_dir>/<stage>/`).
        data: keyword arguments of `dig data prepare` (reader, category, kcore, reader_args, ...), or the path of a
            YAML file holding them (the file `dig data prepare -c` takes). A relative `data_root` inside it is
            resolved against the `data_root` option when that is given.
        evidence: the options of `dig evidence` (text_encoder, intent_miner, quality_judge, captioner,
            image_encoder, collaborative, attributes as `class_path` / `init_args`; batch_size, ...), or the path of
            a YAML file holding them (configs/evidence/*.yaml).
        quantize: LightningCLI config fragments (+ overrides) of the quantizer fit.
        sids: released Semantic IDs imported instead of a quantizer fit: the keyword arguments of `dig quantize
            import` (`sids_file`, `key`, `codebook_size`), e.g. {sids_file: ../shared/data/Instruments/
            Instruments.index.json}; a relative `sids_file` is read inside the data's `data_root` (the folder
            holding the datasets: `Instruments/Instruments.index.json`). Exclusive with `quantize`.
        generate: LightningCLI config fragments (+ overrides) of the generator fit + test.
        rl: LightningCLI config fragments (+ overrides) of the GRPO policy fit + test; omit to skip RL.
        baselines: floors computed on the same split (most-popular, cooccurrence, sasrec).
        data_root: folder holding the datasets (e.g. ../shared/data), as for `dig data prepare`: replaces the data
            config's `data_root`, whose `dataset` names the folder inside it (`--data-root /mnt/amazon` reads
            `/mnt/amazon/Beauty`). Spelled `--data-root`.
        from_stage: force this stage and every later one to rerun (one of data, evidence, quantize, generate, rl,
            baselines). Spelled `--from` on the command line. Evidence reruns reassemble from the content-keyed
            cache; delete `<run>/evidence/cache` to recompute it.
    """
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    if from_stage is not None and from_stage not in STAGES:
        raise ValueError(f"--from {from_stage!r}: not a stage; stages are {', '.join(STAGES)}")
    forced = set(STAGES[STAGES.index(from_stage):]) if from_stage else set()
    from deepinterestgr.data.prepare import prepare_dataset

    data_kwargs = _stage_kwargs(data, accepts=prepare_dataset)
    if data_root:  # the folder holding the datasets, as for `dig data prepare`; the data config names `dataset`
        data_kwargs["data_root"] = data_root
    results: dict[str, Any] = {"stage_seconds": {}}

    def run_stage(name: str, fn) -> Any:
        """`fn(fresh)` runs the stage, or returns its recorded result when it is current (every stage function asks
        `is_current` itself: only it resolves its config). A stage that left its manifest untouched was current."""
        manifest = run / name / MANIFEST
        if name in forced:
            # stage functions without a `fresh` option skip work their manifest vouches for: without it they redo it
            manifest.unlink(missing_ok=True)
        before = _stamp(manifest)
        start = time.perf_counter()
        result = fn(name in forced)
        results["stage_seconds"][name] = seconds = round(time.perf_counter() - start, 1)
        if before is not None and _stamp(manifest) == before:
            print(f"[{name}] up to date (skipped)", flush=True)
        else:
            print(f"[{name}] done in {seconds:.1f} s", flush=True)
        return result

    run_stage("data", lambda fresh: _jsonable(prepare_dataset(run_dir=str(run), **data_kwargs)))

    from deepinterestgr.config_files import check_class_paths
    from deepinterestgr.evidence.stage import run_evidence

    evidence_kwargs = _stage_kwargs(evidence, accepts=run_evidence)
    # a misspelt plugin class fails now, naming the file, before any stage works
    check_class_paths(run_evidence, evidence_kwargs,
                      where=evidence if isinstance(evidence, str) else "the pipeline's evidence options")
    run_stage("evidence", lambda fresh: _evidence(run, evidence_kwargs, fresh=fresh))

    if sids is not None:
        from deepinterestgr.quantize.precomputed import import_sids

        if quantize is not None:
            raise ValueError("give either quantize (train a quantizer) or sids (import released SIDs), not both")
        sids_kwargs = _stage_kwargs(sids, accepts=import_sids)
        root = data_kwargs.get("data_root")
        if root and sids_kwargs.get("sids_file") and not Path(sids_kwargs["sids_file"]).is_absolute():
            sids_kwargs["sids_file"] = str(Path(root) / sids_kwargs["sids_file"])
        results["quantize"] = run_stage("quantize", lambda fresh: _jsonable(import_sids(str(run), **sids_kwargs)))
    if quantize is not None:
        from deepinterestgr.quantize.stage import run_quantize

        results["quantize"] = run_stage("quantize", lambda fresh: _jsonable(
            run_quantize(str(run), configs=quantize.configs, overrides=quantize.overrides, fresh=fresh)))
    for name, stage in (("generate", generate), ("rl", rl)):
        if stage is not None:
            results[name] = run_stage(name, lambda fresh, stage=stage, name=name:
                                      _fit_and_test(stage, run, name, fresh=fresh))
    if baselines:
        results["baselines"] = run_stage("baselines", lambda fresh: _baselines(run, list(baselines), fresh=fresh))
    table = format_results_table(results)
    print(table)
    atomic_write_json(run / "results.json", _jsonable(results))
    return results


def _stamp(manifest: Path) -> tuple[int, int] | None:
    # every manifest is replaced atomically (a new file): another inode or mtime means the stage wrote one
    try:
        st = manifest.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def _evidence(run: Path, kwargs: dict, *, fresh: bool) -> dict | None:
    """The evidence stage, unless current; its options are the evidence section's YAML keys."""
    from deepinterestgr.evidence.stage import evidence_arguments, evidence_is_current, run_evidence

    if not fresh and evidence_is_current(run, kwargs):
        return None
    return _jsonable(run_evidence(**evidence_arguments(kwargs, run_dir=str(run))))  # as `dig evidence -c` builds it


def _baselines(run: Path, methods: list[str], *, fresh: bool) -> dict:
    """The baselines (one `<method>.json` each) and their manifest, unless current."""
    from deepinterestgr.baselines import run_baselines

    stage_dir, config, inputs = run / "baselines", {"methods": methods}, input_manifests(run, READS["baselines"])
    if not fresh and is_current(stage_dir, "baselines", config, inputs):
        return {m: json.loads((stage_dir / f"{m}.json").read_text(encoding="utf-8")) for m in methods}
    records = _jsonable(run_baselines(str(run), methods=methods))
    write_manifest(stage_dir, "baselines", [f"{m}.json" for m in records], **stage_record(config, inputs))
    return records


def load_yaml(path: str | Path) -> dict:
    """A YAML mapping; errors name the file."""
    import yaml

    from deepinterestgr.config_files import resolve_config

    path = Path(resolve_config(path))
    if not path.exists():
        raise FileNotFoundError(f"{path}: config not found")
    loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a mapping of options, got {type(loaded).__name__}")
    return loaded


def _stage_kwargs(section: dict | str | None, accepts=None) -> dict:
    """The stage's keyword arguments; with `accepts` (the stage function), an unknown key is an error naming the
    YAML file and the close matches (a bare TypeError from the call would name neither)."""
    loaded = load_yaml(section) if isinstance(section, str) else dict(section or {})
    loaded.pop("run_dir", None)  # the experiment's run_dir wins over one in a stage file
    if accepts is not None:
        import difflib
        import inspect

        known = [k for k in inspect.signature(accepts).parameters if k != "run_dir"]
        for key in loaded:
            if key not in known:
                where = section if isinstance(section, str) else f"the {accepts.__name__} options"
                close = difflib.get_close_matches(key, known, n=2)
                hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
                raise ValueError(f"{where}: unknown option {key!r} for {accepts.__name__}.{hint} "
                                 f"Options: {', '.join(known)}")
    return loaded


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


METRIC_COLUMNS = ("recall@5", "ndcg@5", "recall@10", "ndcg@10")


def _pick(metrics: dict, column: str) -> float | None:
    # modules log e.g. "test/recall@5"; accept any prefix
    for key, value in metrics.items():
        if key.split("/")[-1].lower() == column:
            return float(value)
    return None


def format_results_table(results: dict) -> str:
    rows = []
    for name in ("generate", "rl"):
        if results.get(name):
            rows.append(({"generate": "generator", "rl": "policy (GRPO)"}[name], results[name].get("metrics", {})))
    for method, payload in (results.get("baselines") or {}).items():
        if isinstance(payload, dict):
            rows.append((method, payload.get("test", payload)))
    header = f"| {'model':<16} | " + " | ".join(f"{c:>9}" for c in METRIC_COLUMNS) + " |"
    lines = ["", "Test metrics (full ranking, leave-one-out):", header, "|" + "-" * (len(header) - 2) + "|"]
    for label, metrics in rows:
        cells = [_pick(metrics, c) for c in METRIC_COLUMNS]
        lines.append(f"| {label:<16} | "
                     + " | ".join(f"{v:>9.4f}" if v is not None else f"{'-':>9}" for v in cells) + " |")
    return "\n".join(lines)
