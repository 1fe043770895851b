"""Every shipped YAML parses: LightningCLI fragments through the real `dig fit` parser (run=False), stage configs
through the jsonargparse parser of their command, experiments through `dig pipeline`'s parser. A config pointing at a
class that no longer exists fails here, not in a user's run."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml
from jsonargparse import ArgumentParser

from deepinterestgr.cli.main import STAGE_COMMANDS

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
ALL_YAML = sorted(p for p in CONFIGS.rglob("*.yaml"))


def _function(words: tuple[str, ...]):
    module, _, attr = STAGE_COMMANDS[words][0].partition(":")
    return getattr(importlib.import_module(module), attr)


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


def _compositions() -> list[tuple[str, list[str]]]:
    """Every trainable-stage composition named by a shipped experiment."""
    out = []
    for path, exp in _experiments():
        for stage in ("quantize", "generate", "rl"):
            if exp.get(stage):
                out.append((f"{path.name}:{stage}", exp[stage]["configs"]))
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
    parser = ArgumentParser()
    parser.add_function_arguments(_function(("pipeline",)))
    cfg = parser.parse_path(str(path))
    assert cfg.run_dir
    for section, words in (("data", ("data", "prepare")), ("evidence", ("evidence",))):
        value = cfg.get(section)
        if isinstance(value, str):
            assert (REPO / value).exists(), f"{path}: {section} names a missing config {value}"
            stage_parser = ArgumentParser()
            stage_parser.add_function_arguments(_function(words))
            stage_parser.parse_path(str(REPO / value))
    for stage in ("quantize", "generate", "rl"):
        section = cfg.get(stage)
        if section is not None:
            for fragment in section.configs:
                assert (REPO / fragment).exists(), f"{path}: {stage} names a missing config {fragment}"


@pytest.mark.parametrize("name,configs", _compositions(), ids=[c[0] for c in _compositions()])
def test_lightning_composition_parses(name, configs, tmp_path, monkeypatch):
    from deepinterestgr.cli.lightning import DigLightningCLI

    monkeypatch.chdir(REPO)
    args = []
    for c in configs:
        args += ["-c", c]
    args += ["--data.run_dir", str(tmp_path), "--trainer.default_root_dir", str(tmp_path)]
    # GPU fragments (bf16-mixed, ddp) are parsed as written, then pointed at this CPU so the Trainer can be built
    args += ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.strategy", "auto",
             "--trainer.precision", "32-true"]
    cli = DigLightningCLI(args=args, run=False)
    assert cli.model is not None and cli.datamodule is not None


def test_every_lightning_fragment_is_used_by_an_experiment():
    used = {c for _, configs in _compositions() for c in configs}
    fragments = {str(p.relative_to(REPO)) for p in ALL_YAML if _kind(p) == "lightning"}
    # GPU-only trainer fragments are composed by the full-scale experiment; everything else must be exercised here
    unused = sorted(fragments - used)
    assert not unused, f"config fragments no experiment composes (so nothing checks them): {unused}"


@pytest.mark.parametrize("path", [p for p in ALL_YAML if _kind(p) == "evidence"], ids=lambda p: p.name)
def test_evidence_config_parses(path):
    parser = ArgumentParser()
    parser.add_function_arguments(_function(("evidence",)))
    parser.parse_path(str(path))


@pytest.mark.parametrize("path", [p for p in ALL_YAML if _kind(p) == "prepare"], ids=lambda p: p.name)
def test_prepare_config_parses(path):
    parser = ArgumentParser()
    parser.add_function_arguments(_function(("data", "prepare")))
    parser.parse_path(str(path))
