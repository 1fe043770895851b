"""Every shipped YAML parses: LightningCLI fragments through the real `dig fit` parser (run=False), stage configs
through the jsonargparse parser of their command, experiments through `dig pipeline`'s parser. A config pointing at a
class that no longer exists fails here, not in a user's run."""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from deepinterestgr.cli.main import STAGE_COMMANDS, build_function_parser

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
ALL_YAML = sorted(p for p in CONFIGS.rglob("*.yaml"))


def _function(words: tuple[str, ...]):
    module, _, attr = STAGE_COMMANDS[words][0].partition(":")
    return getattr(importlib.import_module(module), attr)


def _parse_stage_config(words: tuple[str, ...], path: Path, *extra: str):
    """Parse `path` exactly as `dig <words> -c path` would (run_dir supplied, as the pipeline does)."""
    parser = build_function_parser(_function(words), prog="dig " + " ".join(words))
    return parser.parse_args(["-c", str(path), *extra])


def _kind(path: Path) -> str:
    top = yaml.safe_load(path.read_text()) or {}
    if path.parent.name == "experiment":
        return "experiment"
    if set(top) & {"trainer", "model", "data", "seed_everything"} and (
        path.parent.name in ("trainer", "model") or isinstance(top.get("data"), dict) and "class_path" in top["data"]
    ):
        return "lightning"
    if path.parent.name == "evidence":
        return "evidence"
    if path.parent.name == "data":
        return "prepare"
    return "unknown"


def _experiments() -> list[tuple[Path, dict]]:
    return [(p, yaml.safe_load(p.read_text())) for p in ALL_YAML if _kind(p) == "experiment"]


def _grid_experiments() -> list[tuple[str, dict]]:
    """The experiments of the component-combination benchmark grid (benchmarks/combos.yaml)."""
    from deepinterestgr.combos import apply_variant, grid, load_yaml

    spec = grid(REPO / "benchmarks" / "combos.yaml")
    return [
        (f"{dataset}+{name}", apply_variant(load_yaml(REPO / base), variant or {}, run_dir="runs/x", seed=42))
        for dataset, base in spec["datasets"].items()
        for name, variant in spec["variants"].items()
    ]


def _bench(name: str):
    """A benchmark script under benchmarks/ loaded as a module (they are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def _rl_bench():
    return _bench("bench_rl")


def _quality_bench():
    return _bench("bench_beauty_quality")


def test_quality_sweeps_go_to_one_file_per_generator_one_line_per_point(tmp_path):
    """bench_beauty_quality's results: each generator's selection sweep in a file of its own (one line per point,
    metrics to 5 decimals), the results entry naming that file; entries already moved are kept."""
    bench = _quality_bench()
    results = tmp_path / "beauty_quality.json"
    point = {"beam": 50, "weight": 0.5, "valid": {"ndcg@10": 0.0612345678901234}, "test": {"ndcg@10": 0.05}}
    sweeps = {"a": {"sweep": [point, {**point, "beam": 20}], "valid": {"ndcg@10": 0.06}},
              "b": {"sweep_file": "beauty_quality_sweeps/b.json", "valid": {"ndcg@10": 0.05}}}
    entries = bench.write_sweeps(results, sweeps)
    assert entries == {"a": {"valid": {"ndcg@10": 0.06}, "sweep_file": "beauty_quality_sweeps/a.json"},
                       "b": sweeps["b"]}
    text = (tmp_path / entries["a"]["sweep_file"]).read_text()
    loaded = json.loads(text)
    assert loaded["variant"] == "a" and [p["beam"] for p in loaded["sweep"]] == [50, 20]
    assert loaded["sweep"][0]["valid"]["ndcg@10"] == 0.06123 and loaded["sweep"][0]["test"] == point["test"]
    lines = [line.strip().rstrip(",") for line in text.splitlines()]
    assert json.dumps(bench.rounded(point)) in lines  # one line per point
    result = {"rows": [{"method": "m", "ndcg@10": 0.05}], "generator_sweeps": entries}
    assert json.loads(bench.results_text(result)) == result


def _snapshot_fit(tmp_path, source_name: str) -> SimpleNamespace:
    """A finished fit of `source_name` with one snapshot per validation (a checkpoint naming its own step) and the
    sampled-valid N@10 of each logged as Lightning logs it; returns the benchmark's args for it."""
    from torch.utils.tensorboard import SummaryWriter

    source = tmp_path / "generators" / source_name / "generate"
    (source / "snapshots").mkdir(parents=True)
    valid = {500: 0.030, 1000: 0.041, 1500: 0.040, 2000: 0.052, 2400: 0.055}
    writer = SummaryWriter(str(source / "lightning_logs" / "version_0"))
    writer.add_scalar("train/loss", 9.0, 50)
    for step, ndcg in valid.items():
        writer.add_scalar("val/ndcg@10", ndcg, step - 1)  # as Lightning logs it: the last batch's index
        (source / "snapshots" / f"step{step}.ckpt").write_text(str(step))
    writer.close()
    (source / "fit_done.json").write_text(json.dumps({"variant": source_name, "fit_s": 3300, "seed": 2333}))
    speed = tmp_path / "train_path.json"
    speed.write_text(json.dumps({"fastpath_speedup": 1.6}))  # 2400 / 1.6 = 1500: steps 500, 1000, 1500 eligible
    (tmp_path / "sids_collab" / "data").mkdir(parents=True)
    (tmp_path / "sids_collab" / "quantize").mkdir()
    return SimpleNamespace(work=tmp_path, train_path_results=speed, collab_run=tmp_path / "sids_collab")


def test_equal_steps_row_takes_the_best_snapshot_the_old_path_reaches(tmp_path):
    """bench_beauty_quality's "-equal-steps" row: of its source fit's validation snapshots, the best on the sampled
    valid users among those at or before (last step / fastpath_speedup), linked as the row's best checkpoint."""
    bench = _quality_bench()
    name = next(n for n, (_, budget) in bench.EQUAL_STEPS.items() if budget is None)
    source_name = bench.EQUAL_STEPS[name][0]
    args = _snapshot_fit(tmp_path, source_name)

    record = bench.fit(args, name)

    assert (record["old_path_steps"], record["selected_step"]) == (1500, 1000)  # .041 beats .040 and .030
    best = tmp_path / "generators" / name / "generate" / "checkpoints" / "best.ckpt"
    assert best.read_text() == "1000" and record["seed"] == 2333 and record["equal_steps_of"] == source_name
    assert json.loads((best.parents[1] / "fit_done.json").read_text()) == record
    assert bench.fit(args, name) == record  # a second invocation reuses the record


def test_step_budget_row_takes_the_best_snapshot_at_or_before_its_budget(tmp_path, monkeypatch):
    """An EQUAL_STEPS row with a fixed step budget ignores the speed ratio: the best snapshot at or before it."""
    bench = _quality_bench()
    name, source_name = "fit-at-2000", "fit"
    monkeypatch.setitem(bench.EQUAL_STEPS, name, (source_name, 2000))
    monkeypatch.setitem(bench.VARIANTS, name, bench.VARIANTS["t5-items-collab"])
    monkeypatch.setitem(bench.VARIANTS, source_name, bench.VARIANTS["t5-items-collab"])
    args = _snapshot_fit(tmp_path, source_name)

    record = bench.fit(args, name)

    assert (record["step_budget"], record["selected_step"], record["source_last_step"]) == (2000, 2000, 2400)
    assert "fastpath_speedup" not in record and record["selected_sampled_valid_ndcg@10"] == 0.052
    best = tmp_path / "generators" / name / "generate" / "checkpoints" / "best.ckpt"
    assert best.read_text() == "2000"


def _quality_benchmark_experiments() -> list[tuple[str, dict]]:
    """The SID experiments and generator variants of benchmarks/bench_beauty_quality.py."""
    bench = _quality_bench()
    sids = [(p.name, yaml.safe_load(p.read_text())) for p in sorted((REPO / "benchmarks").glob("beauty_sids_*.yaml"))]
    return sids + [(f"bench_beauty_quality:{name}", {"generate": {"configs": bench.generate_configs(name)}})
                   for name in bench.VARIANTS]


def _compositions() -> list[tuple[str, list[str]]]:
    """Every trainable-stage composition named by a shipped experiment, the benchmark grid or the quality benchmark
    (deduplicated)."""
    out, seen = [], set()
    named = [(p.name, exp) for p, exp in _experiments()] + _grid_experiments() + _quality_benchmark_experiments()
    for name, exp in named:
        for stage in ("quantize", "generate", "rl"):
            if exp.get(stage) and tuple(exp[stage]["configs"]) not in seen:
                seen.add(tuple(exp[stage]["configs"]))
                out.append((f"{name}:{stage}", exp[stage]["configs"]))
    return out


def test_there_are_configs_of_every_kind():
    kinds = {_kind(p) for p in ALL_YAML}
    assert {"experiment", "lightning"} <= kinds, kinds
    assert "unknown" not in kinds, [p for p in ALL_YAML if _kind(p) == "unknown"]
    for sub in ("trainer", "model", "data", "experiment"):
        assert list((CONFIGS / sub).glob("*.yaml")), f"configs/{sub}/ is empty"
    for variant in ("cpu", "bf16-mixed", "ddp"):
        assert (CONFIGS / "trainer" / f"{variant}.yaml").exists()


@pytest.mark.parametrize("path", [p for p in ALL_YAML if _kind(p) == "experiment"], ids=lambda p: p.name)
def test_experiment_parses(path):
    cfg = _parse_stage_config(("pipeline",), path)
    assert cfg.run_dir
    for section, words in (("data", ("data", "prepare")), ("evidence", ("evidence",))):
        value = cfg.get(section)
        if isinstance(value, str):
            assert (REPO / value).exists(), f"{path}: {section} names a missing config {value}"
            _parse_stage_config(words, REPO / value, "--run_dir", "runs/x")
    for stage in ("quantize", "generate", "rl"):
        section = cfg.get(stage)
        if section is not None:
            for fragment in section.configs:
                assert (REPO / fragment).exists(), f"{path}: {stage} names a missing config {fragment}"


@pytest.mark.parametrize("path", sorted((REPO / "benchmarks").glob("beauty_sids_*.yaml")), ids=lambda p: p.name)
def test_quality_benchmark_sid_experiments_parse_with_their_evidence(path, tmp_path):
    """The SID experiments of bench_beauty_quality.py: the pipeline, and their inline evidence section as the
    evidence stage reads it (plugins and their arguments checked)."""
    cfg = _parse_stage_config(("pipeline",), path)
    assert cfg.run_dir.startswith("runs/beauty_quality/sids_")
    evidence = tmp_path / "evidence.yaml"
    evidence.write_text(yaml.safe_dump(yaml.safe_load(path.read_text())["evidence"]))
    _parse_stage_config(("evidence",), evidence, "--run_dir", "runs/x")


def test_every_grid_variant_builds_a_parseable_experiment(tmp_path):
    for name, exp in _grid_experiments():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(exp))
        cfg = _parse_stage_config(("pipeline",), path)
        assert cfg.run_dir == "runs/x", name


@pytest.mark.parametrize("name,configs", _compositions(), ids=[c[0] for c in _compositions()])
def test_lightning_composition_parses(name, configs, tmp_path, monkeypatch):
    from deepinterestgr.cli.lightning import run_lightning

    monkeypatch.chdir(REPO)
    args = []
    for c in configs:
        args += ["-c", c]
    args += ["--data.run_dir", str(tmp_path), "--trainer.default_root_dir", str(tmp_path)]
    # GPU fragments (bf16-mixed, ddp) are parsed as written, then pointed at this CPU so the Trainer can be built
    args += ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.strategy", "auto",
             "--trainer.precision", "32-true"]
    cli = run_lightning(args, run=False)
    assert cli.model is not None and cli.datamodule is not None


def test_every_lightning_fragment_is_used_by_an_experiment():
    used = {c for _, configs in _compositions() for c in configs}
    # fragments that only tests compose (e.g. ddp_cpu.yaml in the 2-process DDP tests) count as exercised
    test_sources = "\n".join(p.read_text() for p in (REPO / "tests").glob("test_*.py"))
    fragments = {str(p.relative_to(REPO)) for p in ALL_YAML if _kind(p) == "lightning"}
    unused = sorted(f for f in fragments - used if Path(f).name not in test_sources)
    assert not unused, f"config fragments no experiment composes (so nothing checks them): {unused}"


@pytest.mark.parametrize("path", [p for p in ALL_YAML if _kind(p) == "evidence"], ids=lambda p: p.name)
def test_evidence_config_parses(path):
    _parse_stage_config(("evidence",), path, "--run_dir", "runs/x")


@pytest.mark.parametrize("path", [p for p in ALL_YAML if _kind(p) == "prepare"], ids=lambda p: p.name)
def test_prepare_config_parses(path):
    _parse_stage_config(("data", "prepare"), path, "--run_dir", "runs/x")


@pytest.mark.parametrize("path", sorted((CONFIGS / "trainer").glob("*.yaml")), ids=lambda p: p.name)
def test_every_trainer_fragment_sets_its_seed(path):
    # a fragment without its own seed gets LightningCLI's `seed_everything: true`: a new random seed every run
    assert isinstance((yaml.safe_load(path.read_text()) or {}).get("seed_everything"), int), path


def test_every_rl_benchmark_setting_builds_a_valid_policy():
    """benchmarks/bench_rl.py: each setting's reward builds and suits its candidate groups."""
    from deepinterestgr.rl.module import PolicyModule

    bench = _rl_bench()
    for name, (reward, candidates, mu, lr, *scaled) in bench.SETTINGS.items():
        module = PolicyModule(reward=bench.composite(bench.REWARDS[reward]), candidates=candidates, ppo_epochs=mu,
                              lr=lr, scale_advantages=scaled[0] if scaled else True)
        assert module.hparams.candidates == candidates, name


def test_rl_benchmark_curve_averages_windows_of_steps_and_seeds():
    """bench_rl's per-setting curve: 25 logged batches become 10 windows ending at their last step, each the mean of
    its batches, then averaged point by point over seeds."""
    bench = _rl_bench()
    stats = bench.StepStats()
    stats.rows = [{"step": i + 1, "train/reward_mean": float(i), "train/zero_advantage_fraction": 1.0}
                  for i in range(25)]
    curve = stats.curve()
    assert [p["step"] for p in curve] == [2, 5, 7, 10, 12, 15, 17, 20, 22, 25]
    assert curve[0]["reward_mean"] == 0.5 and curve[-1]["reward_mean"] == 23.0  # rows 0-1, rows 22-24
    assert "kl" not in curve[0]  # a scalar the policy did not log is left out, not zero-filled
    other = [{**p, "reward_mean": p["reward_mean"] + 2.0} for p in curve]
    assert bench.mean_curve([curve, other])[0]["reward_mean"] == 1.5


def test_rl_benchmark_names_a_missing_quality_file(tmp_path, capsys):
    """bench_rl.py --quality (QARM's q_i from another judge's evidence run) fails before any work when the file is
    missing, naming it."""
    bench = _rl_bench()
    missing = tmp_path / "judged" / "quality.safetensors"
    with pytest.raises(SystemExit):
        bench.main(["--run", str(tmp_path), "--quality", str(missing), "--settings", "exact-qarm-beam-mu1"])
    assert str(missing) in capsys.readouterr().err

    # q_i judged on another catalog would credit the wrong items: refused, naming both catalogs
    missing.parent.mkdir()
    missing.write_bytes(b"")
    (missing.parent / "manifest.json").write_text(json.dumps({"catalog_sha256": "a" * 64}))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "manifest.json").write_text(json.dumps({"files": {"catalog.jsonl": {"sha256": "b" * 64}}}))
    with pytest.raises(SystemExit):
        bench.main(["--run", str(tmp_path), "--quality", str(missing), "--settings", "exact-qarm-beam-mu1"])
    err = capsys.readouterr().err
    assert "a" * 16 in err and "b" * 16 in err


@pytest.mark.parametrize("name", list(_quality_bench().VARIANTS))
def test_quality_benchmark_variant_overrides_parse(name, tmp_path, monkeypatch):
    """A variant's `dig fit` command line (its fragments and its own overrides) parses, and the overrides land."""
    from deepinterestgr.cli.lightning import run_lightning

    bench = _quality_bench()
    monkeypatch.chdir(REPO)
    args = [a for c in bench.generate_configs(name) for a in ("-c", c)]
    overrides = list(bench.VARIANTS[name][2])
    cli = run_lightning(args + ["--data.run_dir", str(tmp_path), "--trainer.default_root_dir", str(tmp_path),
                                *overrides], run=False)
    if "--trainer.max_steps" in overrides:
        assert cli.trainer.max_steps == int(overrides[overrides.index("--trainer.max_steps") + 1])
    if "--seed_everything" in overrides:
        assert cli.config["seed_everything"] == bench.variant_seed(SimpleNamespace(seed=42), overrides)


def test_quality_benchmark_seed_group_rows_are_mean_and_std_of_their_seeds():
    bench = _quality_bench()
    group, members = next(iter(bench.SEED_GROUPS.items()))
    rows = []
    for i, m in enumerate(members):
        for split in ("valid", "test"):
            metrics = {c: 0.01 * (i + 1) for c in bench.COLUMNS}
            rows.append(bench.row("generator", f"{m} (beam 50, rerank w=4)", split, metrics, seeds=[i], fit_s=10 * i))
            rows.append(bench.row("generator", f"{m} (beam 50, no rerank)", split, {c: 1.0 for c in bench.COLUMNS},
                                  seeds=[i], fit_s=10 * i))
    out = bench.seed_group_rows(rows)
    assert [r["split"] for r in out] == ["valid", "test"]
    n = len(members)
    mean = sum(0.01 * (i + 1) for i in range(n)) / n
    std = (sum((0.01 * (i + 1) - mean) ** 2 for i in range(n)) / (n - 1)) ** 0.5
    for r in out:
        assert r["ndcg@10"] == pytest.approx(mean, abs=1e-4) and r["std"]["ndcg@10"] == pytest.approx(std, abs=1e-4)
        assert r["seeds"] == list(range(n)) and group in r["variant"]
    assert bench.seed_group_rows(rows[:-4]) == [], "a group with a missing seed gets no row"
    # with dense candidates selected, each seed's "no dense" ablation row gets its own mean row beside the selected one
    for i, m in enumerate(members):
        for split in ("valid", "test"):
            rows.append(bench.row("generator", f"{m} (beam 50, rerank w=2, no dense)", split,
                                  {c: 0.1 for c in bench.COLUMNS}, seeds=[i], fit_s=1))
    out = bench.seed_group_rows(rows)
    assert [(r["split"], "no dense" in r["variant"]) for r in out] == [
        ("valid", False), ("valid", True), ("test", False), ("test", True)]
    assert all(r["ndcg@10"] == pytest.approx(0.1 if "no dense" in r["variant"] else mean, abs=1e-4) for r in out)


def test_quality_benchmark_keeps_earlier_ablation_bootstraps_beside_new_ones(tmp_path):
    """Evaluating one more variant must not drop the paired bootstraps an earlier invocation measured."""
    bench = _quality_bench()
    sweep = {"valid": {"ndcg@10": 0.05}}
    old = {"rows": [], "generator_sweeps": {"best": {"valid": {"ndcg@10": 0.06}}},
           "bootstrap": {"a": "generator best", "b": "cooccurrence", "mean_diff": -0.001,
                         "ablations": {"x-ema": {"a": "generator x-ema", "mean_diff": 0.002}}}}
    results = tmp_path / "r.json"
    results.write_text(json.dumps(old))
    new = {"a": "generator y", "b": "cooccurrence", "mean_diff": -0.01,
           "ablations": {"y-ema": {"a": "generator y-ema", "mean_diff": 0.003}}}
    _, sweeps, boot = bench.carry_over(results, [], {"y": sweep}, new)
    assert boot["a"] == "generator best", "the headline stays the generator best on valid"
    assert set(boot["ablations"]) == {"x-ema", "y-ema"} and set(sweeps) == {"best", "y"}


def test_quality_benchmark_pairs_a_new_variant_with_recorded_ranks_of_an_earlier_one(tmp_path, monkeypatch):
    """Per-user test ranks are kept beside the results (top 10 only), and an ablation whose base was evaluated by an
    earlier invocation pairs through them, but only while they agree with the base's row."""
    import torch

    from deepinterestgr.generate.evaluation import ndcg_per_user

    bench = _quality_bench()
    monkeypatch.setattr(bench, "ABLATION_PAIRS", {"new": "base", "other": "gone"})
    users = 400
    gen = torch.Generator().manual_seed(0)
    base_ranks = torch.randint(-1, 30, (users,), generator=gen)
    order = torch.randperm(users, generator=gen)  # generators serve users in length order
    evaluations = {"new": {"test_users": order, "test_ranks": torch.zeros(users, dtype=torch.long)},
                   "other": {"test_users": order, "test_ranks": torch.zeros(users, dtype=torch.long)}}
    path = bench.ranks_file(tmp_path / "beauty_quality.json")
    assert path.name == "beauty_quality_test_ranks.jsonl"
    bench.save_ranks(path, {"base": bench.top10(base_ranks)})
    recorded = bench.load_ranks(path)
    assert max(recorded["base"]) < 10 and recorded["base"].count(-1) == int(((base_ranks < 0) | (base_ranks >= 10))
                                                                               .sum())
    recorded.update({n: bench.top10(bench.user_order_ranks(ev, users)) for n, ev in evaluations.items()})
    assert recorded["new"] == [0] * users, "ranks go back to the sequences' user order"
    ndcg = float(ndcg_per_user(torch.tensor(recorded["base"])).mean())
    base_row = bench.row("generator", "base (beam 50, rerank w=2, no repeats)", "test",
                         {c: ndcg for c in bench.COLUMNS}, seeds=[42], fit_s=1)
    out = bench.ablation_bootstraps(evaluations, recorded, [base_row])
    assert set(out) == {"new"}, "a base with no recorded ranks is left out"
    assert out["new"]["mean_diff"] == pytest.approx(1.0 - ndcg, abs=1e-6) and out["new"]["users"] == users
    stale = {**base_row, "ndcg@10": round(ndcg + 0.01, 4)}
    assert bench.ablation_bootstraps(evaluations, recorded, [stale]) == {}, "ranks of another fit of the base"


def test_quality_benchmark_keeps_the_hybrid_bootstrap_of_the_best_hybrid_on_valid(tmp_path):
    """A later invocation whose hybrids are all worse on valid must not replace the best hybrid's bootstrap."""
    bench = _quality_bench()
    old = {"rows": [], "generator_sweeps": {"x": {"valid": {"ndcg@10": 0.06}, "hybrid": {"valid": {"ndcg@10": 0.08}}}},
           "bootstrap": {"a": "generator x", "b": "cooccurrence", "mean_diff": -0.001,
                         "hybrid": {"a": "hybrid x", "b": "cooccurrence", "mean_diff": 0.006}}}
    results = tmp_path / "r.json"
    results.write_text(json.dumps(old))
    worse = {"valid": {"ndcg@10": 0.07}, "hybrid": {"valid": {"ndcg@10": 0.075}}}
    new = {"a": "generator y", "b": "cooccurrence", "mean_diff": -0.0005,
           "hybrid": {"a": "hybrid y", "b": "cooccurrence", "mean_diff": 0.004}}
    _, _, boot = bench.carry_over(results, [], {"y": worse}, json.loads(json.dumps(new)))
    assert boot["a"] == "generator y", "y is the best generator on valid now"
    assert boot["hybrid"]["a"] == "hybrid x", "but x's hybrid is still the best hybrid on valid"
    better = {"valid": {"ndcg@10": 0.07}, "hybrid": {"valid": {"ndcg@10": 0.09}}}
    _, _, boot = bench.carry_over(results, [], {"y": better}, json.loads(json.dumps(new)))
    assert boot["hybrid"]["a"] == "hybrid y"


@pytest.mark.parametrize("name", ["toys", "scientific"])
def test_other_catalogs_run_the_beauty_experiment_unchanged(name):
    """The best Beauty settings are not Beauty-specific: another catalog's experiment differs in data and run_dir
    only, so a change to beauty.yaml that is not carried over fails here."""
    beauty = yaml.safe_load((CONFIGS / "experiment" / "beauty.yaml").read_text())
    other = yaml.safe_load((CONFIGS / "experiment" / f"{name}.yaml").read_text())
    assert other["data"] == f"configs/data/prepare_{name}.yaml" and other["run_dir"] == f"runs/{name}"
    assert {k: v for k, v in other.items() if k not in ("data", "run_dir")} == \
        {k: v for k, v in beauty.items() if k not in ("data", "run_dir")}


@pytest.mark.parametrize("path", [p for p in ALL_YAML if _kind(p) == "experiment"
                                  and any((yaml.safe_load(p.read_text()).get(s) or {}).get("overrides")
                                          for s in ("generate", "rl"))], ids=lambda p: p.name)
def test_experiment_stage_overrides_parse_with_their_fragments(path, tmp_path, monkeypatch):
    """A shipped experiment's generate / rl command line, as the pipeline builds it (fragments, run directory, then
    the stage's own overrides), parses, and each override lands in the resolved config."""
    from deepinterestgr.cli.lightning import run_lightning
    from deepinterestgr.pipeline import TrainStage, _lightning_args

    monkeypatch.chdir(REPO)
    exp = yaml.safe_load(path.read_text())
    for name in ("generate", "rl"):
        if not (exp.get(name) or {}).get("overrides"):
            continue
        stage = TrainStage(**exp[name])
        args = _lightning_args(stage, tmp_path, name)
        if not torch.cuda.is_available():  # a GPU experiment's trainer is built on CPU here; its overrides still parse
            args += ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.strategy", "auto",
                     "--trainer.precision", "32-true"]
        cli = run_lightning(args, run=False)
        for key, value in zip(stage.overrides[::2], stage.overrides[1::2]):
            resolved = cli.config
            for part in key.removeprefix("--").split("."):  # `--data.x` addresses data's init_args.x
                if part not in resolved and "init_args" in resolved:
                    resolved = resolved["init_args"]
                resolved = resolved[part]
            assert str(resolved).lower() == str(value).lower(), f"{path.name} {name}: {key} {value} -> {resolved}"
