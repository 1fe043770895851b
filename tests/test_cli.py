"""The `dig` entry point: usage, unknown commands, `--help` of every stage command, `plugins list`."""

from __future__ import annotations

import pytest

from deepinterestgr.cli.main import STAGE_COMMANDS, main


def test_usage_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for words in STAGE_COMMANDS:
        assert " ".join(words) in out
    assert "fit | validate | test | predict" in out


def test_unknown_command_exits_2_with_usage(capsys):
    assert main(["quantise"]) == 2
    assert "unknown command 'quantise'" in capsys.readouterr().err


@pytest.mark.parametrize("words", list(STAGE_COMMANDS), ids=lambda w: "-".join(w))
def test_every_stage_command_has_help(words, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*words, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: dig {' '.join(words)} [-c CONFIG]")


def test_plugins_list_shows_builtins_and_sources(capsys):
    assert main(["plugins", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("rqvae", "rqkmeans", "t5", "zero-shot-miner", "minilm-packaged", "qarm", "p5", "synthetic"):
        assert f" {name} " in out
    assert "deepinterestgr" in out


def test_plugins_list_filters_by_kind_and_pattern(capsys):
    assert main(["plugins", "list", "--kind", "quantizer", "--pattern", "rq*"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:2] == ["kind", "name"]
    assert sorted(line.split()[1] for line in lines[1:]) == ["rqkmeans", "rqvae"]


def _tiny_catalog_run(root):
    from deepinterestgr.artifacts import atomic_write_jsonl

    atomic_write_jsonl(root / "data" / "catalog.jsonl", [{"item_id": 0, "source_id": "A", "title": "a red lipstick"}])
    return root


@pytest.mark.parametrize("family", ["missing data folder", "missing artifact", "unknown plugin", "bad --from"])
def test_expected_errors_are_one_line_without_a_traceback(family, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DIG_DEBUG", raising=False)
    argv, message = {
        "missing data folder": (["data", "prepare", "--reader", "p5", "--category", "Beauty", "--data_root",
                                 str(tmp_path / "nowhere"), "--run_dir", str(tmp_path / "run")], "nowhere"),
        "missing artifact": (["quantize", "--run_dir", str(tmp_path / "empty")], "text_embeddings.safetensors"),
        "unknown plugin": (["evidence", "--run_dir", str(_tiny_catalog_run(tmp_path / "cat")), "--text_encoder",
                            "minilm-nope", "--intent_miner", "null", "--quality_judge", "null"], "minilm-nope"),
        "bad --from": (["pipeline", "--run_dir", str(tmp_path / "p"), "--from", "quantise"], "quantise"),
    }[family]
    assert main(argv) == 1
    err = capsys.readouterr().err
    last = [line for line in err.strip().splitlines() if line.startswith("dig: error: ")]
    assert len(last) == 1 and message in last[0], err
    assert "Traceback" not in err and "DIG_DEBUG=1" in err
    with pytest.raises(Exception, match=message):
        main([*argv, "--debug"])


def test_boolean_options_take_bare_flags():
    from deepinterestgr.cli.main import _boolean_parameters, bare_flags
    from deepinterestgr.data.prepare import prepare_dataset

    booleans = _boolean_parameters(prepare_dataset)
    assert "strict" in booleans
    assert bare_flags(["--strict", "--run_dir", "r"], booleans) == ["--strict", "true", "--run_dir", "r"]
    assert bare_flags(["--no-strict"], booleans) == ["--strict", "false"]
    assert bare_flags(["--strict", "false"], booleans) == ["--strict", "false"]
    assert bare_flags(["--run_dir", "r", "--strict"], booleans) == ["--run_dir", "r", "--strict", "true"]
    assert bare_flags(["--kcore", "-1"], booleans) == ["--kcore", "-1"]
    # LightningCLI: no signature to read, an option followed by no value is a boolean switched on
    assert bare_flags(["--trainer.fast_dev_run", "-c", "x.yaml", "--no-trainer.logger", "--print_config"]) == [
        "--trainer.fast_dev_run", "true", "-c", "x.yaml", "--trainer.logger", "false", "--print_config"]


def test_a_bare_boolean_flag_parses_end_to_end(tmp_path, capsys):
    """`dig data prepare --strict` (no value) used to fail with "expected one argument"."""
    run = tmp_path / "run"
    assert main(["data", "prepare", "--reader", "synthetic", "--run_dir", str(run), "--strict",
                 "--reader_args", '{"num_users": 40, "num_items": 30}']) == 0
    assert (run / "data" / "catalog.jsonl").exists()


def test_lightning_lines_are_printed_once(tmp_path):
    """lightning adds its own console handler at import; with ours on the root logger every line came twice."""
    import subprocess
    import sys

    code = ("from deepinterestgr.cli.main import _configure_runtime; _configure_runtime(); "
            "from lightning.pytorch.utilities.rank_zero import rank_zero_info; rank_zero_info('GPU available: hello')")
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300).stderr
    assert err.count("GPU available: hello") == 1, err
    assert "INFO lightning.pytorch" in err  # our format, naming the logger
