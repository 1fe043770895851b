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
