"""`dig pipeline`: prepare -> evidence -> quantize -> generate (fit + test) -> rl (fit + test), in one run directory.

Each stage is skipped when its artifacts verify against their manifest and were produced from the same stage
config and the same upstream artifacts (a content-hash key kept in `<run>/pipeline_state.json`); `--from STAGE`
forces that stage and every later one to rerun. Trainable stages go through the same LightningCLI as `dig fit`,
resume from their `last.ckpt` when one exists, and log to TensorBoard under `<run>/<stage>/`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from deepinterestgr.artifacts import (
    ArtifactError,
    atomic_write_json,
    sha256_file,
    stable_hash,
    verify_manifest,
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


def _state_path(run: Path) -> Path:
    return run / "pipeline_state.json"


def _load_state(run: Path) -> dict:
    p = _state_path(run)
    return json.loads(p.read_text(encoding="utf-8")) if p.exists() else {}


def _manifest_sha(stage_dir: Path) -> str | None:
    try:
        verify_manifest(stage_dir)
    except ArtifactError:
        return None
    return sha256_file(stage_dir / "manifest.json")


def _config_files_digest(configs: list[str]) -> dict[str, str]:
    # the content of each YAML fragment is part of the key: editing a config reruns the stage
    from deepinterestgr.config_files import resolve_config

    return {c: sha256_file(resolve_config(c)) for c in configs}


def _file_digest(path: str | None) -> str | None:
    return sha256_file(path) if path and Path(path).is_file() else None


def _lightning_args(stage: TrainStage, run: Path, stage_name: str) -> list[str]:
    args: list[str] = []
    for c in stage.configs:
        args += ["-c", c]
    args += ["--data.run_dir", str(run), "--trainer.default_root_dir", str(run / stage_name)]
    return args + list(stage.overrides)


def _fit_and_test(stage: TrainStage, run: Path, stage_name: str, *, key: str, fresh: bool) -> dict[str, Any]:
    """`dig fit` then `dig test` on the best checkpoint. Resumes an interrupted fit of the same config (same `key`)
    from its `last.ckpt`; `fresh` (from `--from`) always starts over.

    Single-process fits run in this process. A multi-process trainer (DDP over several devices) that Lightning must
    launch itself runs as `dig fit` / `dig test` subprocesses: Lightning starts ranks 1.. by re-running the command
    line, and only a plain `dig fit` re-runs into the same place on every rank (a re-run `dig pipeline` would not).
    """
    from deepinterestgr.lightning_configs import run_lightning

    stage_dir = run / stage_name
    args = _lightning_args(stage, run, stage_name)
    probe = run_lightning(args, run=False)  # parse + instantiate only, to see how the trainer will run
    launches_ranks = (probe.trainer.world_size > 1
                      and not probe.trainer.strategy.cluster_environment.creates_processes_externally)
    last = resumable_checkpoint(stage_dir, key, fresh=fresh)
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
    write_manifest(stage_dir, stage_name, files, metrics=metrics)
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
        evidence: keyword arguments of `dig evidence` (text_encoder, intent_miner, quality_judge, captioner,
            image_encoder, plugin_args), or the path of a YAML file holding them. Omit to use the defaults.
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
    state = _load_state(run)
    from deepinterestgr.data.prepare import prepare_dataset

    data_kwargs = _stage_kwargs(data, accepts=prepare_dataset)
    if data_root:  # the folder holding the datasets, as for `dig data prepare`; the data config names `dataset`
        data_kwargs["data_root"] = data_root

    def run_stage(name: str, config: Any, fn, *, always_call: bool = False) -> Any:
        """`always_call`: the stage function checks its own inputs (raw data files) and is a cheap no-op when
        nothing changed, so it is always asked; the stage counts as up to date when its manifest did not change."""
        upstream = {s: state.get(s, {}).get("manifest") for s in STAGES[: STAGES.index(name)] if s in state}
        key = stable_hash({"config": config, "upstream": upstream})
        stage_dir = run / name
        recorded = state.get(name, {})
        up_to_date = recorded.get("key") == key and recorded.get("manifest") == _manifest_sha(stage_dir)
        if name in forced:
            # stage functions skip work whose manifest matches their config: without it they must redo it
            (stage_dir / "manifest.json").unlink(missing_ok=True)
        elif up_to_date and not always_call:
            log.info("stage %s: artifacts match the config, skipped", name)
            print(f"[{name}] up to date (skipped)")
            return recorded.get("result")
        only_asking = always_call and up_to_date and name not in forced  # run once; it decides whether to work
        if not only_asking:
            print(f"[{name}] running ...", flush=True)
        start = time.perf_counter()
        result = fn(key, name in forced)
        seconds = round(time.perf_counter() - start, 1)
        if only_asking and _manifest_sha(stage_dir) == recorded.get("manifest"):
            print(f"[{name}] up to date (skipped)")
            return recorded.get("result")
        state[name] = {"key": key, "manifest": _manifest_sha(stage_dir), "seconds": seconds, "result": result}
        atomic_write_json(_state_path(run), state)
        print(f"[{name}] done in {seconds:.1f} s", flush=True)
        return result

    run_stage("data", data_kwargs, lambda key, fresh: _jsonable(prepare_dataset(run_dir=str(run), **data_kwargs)),
              always_call=True)

    from deepinterestgr.evidence.stage import run_evidence

    evidence_kwargs = _stage_kwargs(evidence, accepts=run_evidence)
    run_stage("evidence", evidence_kwargs,
              lambda key, fresh: _jsonable(run_evidence(run_dir=str(run), **evidence_kwargs)))

    results: dict[str, Any] = {}
    if sids is not None:
        from deepinterestgr.quantize.precomputed import import_sids

        if quantize is not None:
            raise ValueError("give either quantize (train a quantizer) or sids (import released SIDs), not both")
        sids_kwargs = _stage_kwargs(sids, accepts=import_sids)
        root = data_kwargs.get("data_root")
        if root and sids_kwargs.get("sids_file") and not Path(sids_kwargs["sids_file"]).is_absolute():
            sids_kwargs["sids_file"] = str(Path(root) / sids_kwargs["sids_file"])
        results["quantize"] = run_stage(
            "quantize", {"import": sids_kwargs, "sha256": _file_digest(sids_kwargs.get("sids_file"))},
            lambda key, fresh: _jsonable(import_sids(str(run), **sids_kwargs)))
    if quantize is not None:
        from deepinterestgr.quantize.stage import run_quantize

        qcfg = {**asdict(quantize), "files": _config_files_digest(quantize.configs)}
        results["quantize"] = run_stage(
            "quantize", qcfg,
            lambda key, fresh: _jsonable(run_quantize(str(run), configs=quantize.configs, overrides=quantize.overrides,
                                                      fresh=fresh))
        )
    for name, stage in (("generate", generate), ("rl", rl)):
        if stage is not None:
            cfg = {**asdict(stage), "files": _config_files_digest(stage.configs)}
            results[name] = run_stage(name, cfg, lambda key, fresh, stage=stage, name=name:
                                      _fit_and_test(stage, run, name, key=key, fresh=fresh))
    if baselines:
        from deepinterestgr.baselines import run_baselines

        results["baselines"] = run_stage("baselines", {"methods": baselines},
                                         lambda key, fresh: _jsonable(run_baselines(str(run), methods=list(baselines))))
    table = format_results_table(results)
    print(table)
    atomic_write_json(run / "results.json", _jsonable(results))
    return results


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
