"""`dig`: the DeepInterestGR command line.

Lightning subcommands (`fit|validate|test|predict`) go to LightningCLI; stage commands are plain functions whose
signature and docstring jsonargparse turns into options, `--help` and `-c/--config` YAML support.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Sequence

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")

#: command words -> "module:function" (imported only when that command runs, so `dig --help` stays fast)
STAGE_COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("data", "prepare"): ("deepinterestgr.data.prepare:prepare_dataset",
                          "read a dataset (or generate the synthetic catalog), k-core, split, write <run>/data"),
    ("data", "download"): ("deepinterestgr.data.download:download_amazon",
                           "stream public Amazon review files (2014/2018/2023) with resume and size checks"),
    ("evidence",): ("deepinterestgr.evidence.stage:run_evidence",
                    "CMSA captions + image features, DCIM descriptors, QARM quality, text embeddings -> <run>/evidence"),
    ("quantize",): ("deepinterestgr.quantize.stage:run_quantize",
                    "train a quantizer and write the Semantic ID table -> <run>/quantize"),
    ("pipeline",): ("deepinterestgr.pipeline:run_pipeline",
                    "prepare -> evidence -> quantize -> generate -> rl, skipping stages whose artifacts match"),
    ("items", "add"): ("deepinterestgr.serve.items:add_items",
                       "give new items SIDs with the trained quantizer (no retraining) -> a new <run>/items version"),
    ("plugins", "list"): ("deepinterestgr.cli.plugins:list_plugins_command",
                          "every registered plugin: kind, name, source distribution, description"),
}


def _usage() -> str:
    lines = [
        "usage: dig <command> [options]   (every command takes -h/--help and -c/--config FILE.yaml)",
        "",
        "Lightning commands (LightningCLI; compose configs: -c configs/trainer/cpu.yaml -c configs/model/... -c configs/data/...):",
        "  fit | validate | test | predict",
        "",
        "Stage commands:",
    ]
    for words, (_, help_text) in STAGE_COMMANDS.items():
        lines.append(f"  {' '.join(words):<16} {help_text}")
    lines += ["", "Example: dig pipeline -c configs/experiment/synthetic.yaml"]
    return "\n".join(lines)


def _match(argv: Sequence[str]) -> tuple[tuple[str, ...], list[str]] | None:
    for n in (2, 1):
        words = tuple(argv[:n])
        if words in STAGE_COMMANDS:
            return words, list(argv[n:])
    return None


#: command-line spellings users expect -> parameter names (`from` is a Python keyword)
ALIASES = {"--from": "--from_stage", "--data-root": "--data_root", "--run-dir": "--run_dir"}


def _spelling(arg: str) -> str:
    flag, eq, value = arg.partition("=")
    return ALIASES.get(flag, flag) + eq + value if flag in ALIASES else arg


def _configure_runtime() -> None:
    logging.basicConfig(level=os.environ.get("DIG_LOG_LEVEL", "INFO"), format="%(levelname)s %(name)s: %(message)s")
    # Offline by design: plugin models load from local paths or packaged weights, never from a hub at run time.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    _configure_runtime()
    if argv[0] in LIGHTNING_SUBCOMMANDS:
        from deepinterestgr.cli.lightning import run_lightning

        run_lightning(argv)
        return 0
    matched = _match(argv)
    if matched is None:
        print(f"dig: unknown command {' '.join(argv[:2])!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    words, rest = matched
    rest = [_spelling(a) for a in rest]
    target, _ = STAGE_COMMANDS[words]
    module, _, attr = target.partition(":")
    function = getattr(importlib.import_module(module), attr)

    result = _run_function(function, rest, prog=f"dig {' '.join(words)}")
    _print_result(words, result)
    return 0


def build_function_parser(function, *, prog: str):
    """Options from the function's signature and docstring; `-c/--config FILE.yaml` supplies any of them."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog=prog, description=(function.__doc__ or "").strip().split("\n\n")[0], default_env=False)
    parser.add_argument("-c", "--config", action=ActionConfigFile, help="YAML file with any of the options below")
    parser.add_function_arguments(function, as_positional=False)
    return parser


def _run_function(function, args: list[str], *, prog: str):
    parser = build_function_parser(function, prog=prog)
    cfg = parser.parse_args(args)
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # renamed in jsonargparse 4.49
    kwargs = instantiate(cfg).as_dict()
    kwargs.pop("config", None)
    kwargs.pop("__path__", None)
    return function(**kwargs)


def _print_result(words: tuple[str, ...], result) -> None:
    if words == ("data", "prepare") and isinstance(result, dict):
        from deepinterestgr.data.prepare import format_stats

        print(format_stats(result))
    elif isinstance(result, dict) and words not in (("pipeline",),):
        import json

        print(json.dumps(result, indent=2, default=str))

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
