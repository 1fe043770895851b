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
from pathlib import Path

from deepinterestgr.cpu_allocator import keep_freed_memory

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")

#: command words -> "module:function" (imported only when that command runs, so `dig --help` stays fast)
STAGE_COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("data", "prepare"): ("deepinterestgr.data.prepare:prepare_dataset",
                          "read a dataset (or generate the synthetic catalog), k-core, split, write <run>/data"),
    ("data", "download"): ("deepinterestgr.data.download:download_amazon",
                           "stream public Amazon review files (2014/2018/2023) with resume and size checks"),
    ("evidence",): ("deepinterestgr.evidence.stage:run_evidence",
                    "CMSA captions + image features, DCIM descriptors, QARM quality, text embeddings "
                    "-> <run>/evidence"),
    ("quantize",): ("deepinterestgr.quantize.stage:run_quantize",
                    "train a quantizer and write the Semantic ID table -> <run>/quantize"),
    ("quantize", "import"): ("deepinterestgr.quantize.precomputed:import_sids",
                             "released SIDs (LETTER's <Cat>.index.json) instead of a quantizer fit -> <run>/quantize"),
    ("pipeline",): ("deepinterestgr.pipeline:run_pipeline",
                    "prepare -> evidence -> quantize -> generate -> rl, skipping stages whose artifacts match"),
    ("items", "add"): ("deepinterestgr.serve.items:add_items",
                       "give new items SIDs with the trained quantizer (no retraining) -> a new <run>/items version"),
    ("serve",): ("deepinterestgr.serve.server:serve",
                 "serve a run's recommendations over HTTP (LitServe): POST /recommend, GET /items/{id}, /health"),
    ("plugins", "list"): ("deepinterestgr.cli.plugins:list_plugins_command",
                          "every registered plugin: kind, name, source distribution, description"),
}


def _usage() -> str:
    lines = [
        "usage: dig <command> [options]   (every command takes -h/--help and -c/--config FILE.yaml)",
        "",
        "Lightning commands (LightningCLI; compose configs: "
        "-c configs/trainer/cpu.yaml -c configs/model/... -c configs/data/...):",
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


class _PropagateOnlyLogger(logging.Logger):
    """The `lightning` package logger: lightning adds its own console handler at import, which printed every
    Lightning line a second time beside the root handler's copy; this logger keeps none and propagates to root."""

    def addHandler(self, handler: logging.Handler) -> None:  # noqa: N802 (logging's name)
        pass


def _one_log_handler() -> None:
    existing = logging.Logger.manager.loggerDict.get("lightning")
    if isinstance(existing, logging.Logger):  # lightning already imported (an in-process caller)
        for handler in list(existing.handlers):
            existing.removeHandler(handler)
        return
    previous = logging.getLoggerClass()
    logging.setLoggerClass(_PropagateOnlyLogger)
    try:
        logging.getLogger("lightning")
    finally:
        logging.setLoggerClass(previous)


def _configure_runtime() -> None:
    logging.basicConfig(level=os.environ.get("DIG_LOG_LEVEL", "INFO"), format="%(levelname)s %(name)s: %(message)s")
    _one_log_handler()
    # Offline by design: plugin models load from local paths or packaged weights, never from a hub at run time.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # CPU training re-allocates the same large tensors every step: keep freed memory in the process (glibc)
    keep_freed_memory()


#: errors a user can fix from the message alone (a missing file or artifact, a bad option value, an unknown plugin):
#: printed as one `dig: error: ...` line; the traceback only with DIG_DEBUG=1 or --debug
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError)


def _expected_errors() -> tuple[type[BaseException], ...]:
    from deepinterestgr.artifacts import ArtifactError

    return (ArtifactError, *EXPECTED_ERRORS)  # RegistryError is a ValueError


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("DIG_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    try:
        return _main(argv)
    except _expected_errors() as e:
        if debug:
            raise
        print(f"dig: error: {e}\n(the traceback: rerun with DIG_DEBUG=1 or --debug)", file=sys.stderr)
        return 1


def _main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    _configure_runtime()
    if argv[0] in LIGHTNING_SUBCOMMANDS:
        from deepinterestgr.cli.lightning import run_lightning

        run_lightning(bare_flags(argv))
        return 0
    matched = _match(argv)
    if matched is None:
        print(f"dig: unknown command {' '.join(argv[:2])!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    words, rest = matched
    from deepinterestgr.config_files import resolve_config_args

    rest = resolve_config_args([_spelling(a) for a in rest])
    target, _ = STAGE_COMMANDS[words]
    module, _, attr = target.partition(":")
    function = getattr(importlib.import_module(module), attr)

    result = _run_function(function, rest, prog=f"dig {' '.join(words)}")
    _print_result(words, result)
    return 0


def build_function_parser(function, *, prog: str, exit_on_error: bool = True):
    from deepinterestgr.config_files import function_parser

    return function_parser(function, prog=prog, exit_on_error=exit_on_error)


#: options that take no value (everything else that is followed by no value is a boolean switched on)
NO_VALUE_OPTIONS = ("-h", "--help", "--print_config", "--print-config")


def bare_flags(args: Sequence[str], booleans: set[str] | None = None) -> list[str]:
    """`--strict` -> `--strict true` and `--no-strict` / `--no_strict` -> `--strict false`, as users expect of a
    boolean option (jsonargparse wants a value). `booleans` are the known boolean options (stage commands, from the
    function's signature); without it (LightningCLI, whose options depend on the class_path chosen) an option
    directly followed by another option or by nothing is taken as a boolean switched on, and a wrong guess fails
    with the option's own type error."""
    out: list[str] = []
    args = list(args)
    for i, arg in enumerate(args):
        if not arg.startswith("--") or "=" in arg or arg in NO_VALUE_OPTIONS:
            out.append(arg)
            continue
        name = arg[2:]
        for negation in ("no-", "no_"):
            if name.startswith(negation) and (booleans is None or name[3:] in booleans) and (
                    i + 1 == len(args) or args[i + 1].startswith("-")):
                out += [f"--{name[3:]}", "false"]
                break
        else:
            follows = args[i + 1] if i + 1 < len(args) else None
            has_value = follows is not None and (not follows.startswith("-")
                                                 or follows.lstrip("-").replace(".", "").isdigit())
            out += [arg, "true"] if not has_value and (booleans is None or name in booleans) else [arg]
    return out


def _boolean_parameters(function) -> set[str]:
    import inspect
    import types
    import typing

    hints = typing.get_type_hints(function)
    booleans = set()
    for name in inspect.signature(function).parameters:
        hint = hints.get(name)
        if hint is bool or (typing.get_origin(hint) in (typing.Union, types.UnionType)
                            and set(typing.get_args(hint)) <= {bool, type(None)}):
            booleans.add(name)
    return booleans


def _run_function(function, args: list[str], *, prog: str):
    from jsonargparse import ArgumentError

    from deepinterestgr.config_files import instantiate_arguments

    parser = build_function_parser(function, prog=prog, exit_on_error=False)
    args = bare_flags(args, _boolean_parameters(function))
    try:
        cfg = parser.parse_args(args)
    except ArgumentError as e:
        _check_given_class_paths(function, args)  # a misspelt plugin class: the close matches, not a type dump
        raise ValueError(f"{e} (`{prog} --help` lists the options)") from e
    return function(**instantiate_arguments(parser, cfg))


def _check_given_class_paths(function, args: list[str]) -> None:
    """Run `check_class_paths` on the plugin classes named on the command line and in its `-c` files."""
    import yaml

    from deepinterestgr.config_files import check_class_paths

    given: dict = {}
    for i, arg in enumerate(args):
        if arg in ("-c", "--config") and i + 1 < len(args):
            loaded = yaml.safe_load(Path(args[i + 1]).read_text(encoding="utf-8")) if Path(args[i + 1]).is_file() \
                else None
            if isinstance(loaded, dict):
                check_class_paths(function, loaded, where=args[i + 1])
        elif arg.startswith("--") and "." not in arg:
            name, _, value = arg[2:].partition("=")
            value = value or (args[i + 1] if i + 1 < len(args) else "")
            try:
                parsed = yaml.safe_load(value) if value else None
            except yaml.YAMLError:
                continue
            if isinstance(parsed, str):
                parsed = {"class_path": parsed}
            if isinstance(parsed, dict):
                given[name] = parsed
    check_class_paths(function, given, where="the command line")


def _print_result(words: tuple[str, ...], result) -> None:
    if words == ("data", "prepare") and isinstance(result, dict):
        from deepinterestgr.data.prepare import format_stats

        print(format_stats(result))
    elif isinstance(result, dict) and words not in (("pipeline",),):
        import json

        print(json.dumps(result, indent=2, default=str))

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
