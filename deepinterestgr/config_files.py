"""The shipped config files live inside the package (`deepinterestgr/configs`, which the source tree also shows as
`configs/`), so a wheel install has them too. A relative `configs/...` path that does not exist from the working
directory is read from the package: `dig pipeline -c configs/experiment/synthetic.yaml` works from any folder."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

PACKAGE_CONFIGS = Path(__file__).resolve().parent / "configs"


def resolve_config(path: str | os.PathLike) -> str:
    p = Path(path)
    if p.is_absolute() or p.exists() or not p.parts or p.parts[0] != "configs":
        return str(path)
    packaged = PACKAGE_CONFIGS.joinpath(*p.parts[1:])
    return str(packaged) if packaged.exists() else str(path)


def resolve_config_args(args: Sequence[str]) -> list[str]:
    """The values of `-c` / `--config` options resolved with `resolve_config`; everything else as given."""
    out: list[str] = []
    args = list(args)
    for i, arg in enumerate(args):
        if i and args[i - 1] in ("-c", "--config"):
            out.append(resolve_config(arg))
        elif arg.startswith("--config="):
            out.append("--config=" + resolve_config(arg.split("=", 1)[1]))
        else:
            out.append(arg)
    return out


def function_parser(function, *, prog: str | None = None, exit_on_error: bool = True):
    """A jsonargparse parser of `function`'s options (signature and docstring); `-c/--config FILE.yaml` supplies any
    of them. Plugin-typed options take `class_path` / `init_args`; registered plugins are loaded first so a config
    can name a class by its short name (`class_path: ZeroShotIntentMiner`)."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    from deepinterestgr.registry import get_registry

    get_registry()
    parser = ArgumentParser(prog=prog, description=(function.__doc__ or "").strip().split("\n\n")[0],
                            default_env=False, exit_on_error=exit_on_error)
    parser.add_argument("-c", "--config", action=ActionConfigFile, help="YAML file with any of the options below")
    parser.add_function_arguments(function, as_positional=False)
    return parser


def instantiate_arguments(parser, cfg) -> dict:
    """The parsed options as keyword arguments, plugins instantiated."""
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # renamed in jsonargparse 4.49
    return _without_parser_keys(instantiate(cfg).as_dict())


def _without_parser_keys(options: dict) -> dict:
    """The function's options only: the `-c` files and jsonargparse's source path are the parser's own."""
    options.pop("config", None)
    options.pop("__path__", None)
    return options


def parse_function_options(function, config: dict | str | os.PathLike, **given):
    """(parser, namespace) of `function`'s options from a config mapping or YAML file, parsed exactly as the command
    line does (a wrong key or type is an error naming it), plugins not yet built; `given` (e.g. run_dir) fills
    required options."""
    # a library call raises (jsonargparse.ArgumentError naming the option) instead of exiting the process
    parser = function_parser(function, prog=getattr(function, "__name__", None), exit_on_error=False)
    if isinstance(config, dict):
        check_class_paths(function, config, where=f"the {function.__name__} options")
        return parser, parser.parse_object({**config, **given})
    import yaml

    path = resolve_config(config)
    check_class_paths(function, yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}, where=path)
    return parser, parser.parse_args(["-c", path, *[f"--{k}={v}" for k, v in given.items()]])


def function_arguments(function, config: dict | str | os.PathLike, **given) -> dict:
    """`function`'s keyword arguments from a config mapping or YAML file, plugins instantiated (`dig <command> -c`)."""
    return instantiate_arguments(*parse_function_options(function, config, **given))


def resolved_options(cfg) -> dict:
    """A parsed namespace as plain data: every plugin as its full `class_path` with all `init_args`, defaults
    filled, as `RecordsInitArgs.init_config()` records a built one."""
    import json

    return _without_parser_keys(json.loads(json.dumps(cfg.as_dict(), default=str)))


def check_class_paths(function, config: dict, *, where: str) -> None:
    """A `class_path` naming no known class of its option's type fails with the close matches among the
    registered plugins (jsonargparse's own message lists neither)."""
    import difflib
    import importlib
    import typing

    from deepinterestgr.registry import RegistryError, get_registry

    hints = typing.get_type_hints(function)
    specs = get_registry().specs()
    for option, value in config.items() if isinstance(config, dict) else ():
        if not (isinstance(value, dict) and isinstance(value.get("class_path"), str)):
            continue
        bases = [t for t in typing.get_args(hints.get(option)) or (hints.get(option),) if isinstance(t, type)
                 and t is not type(None)]
        known = sorted({spec.cls.__name__ for spec in specs if any(issubclass(spec.cls, b) for b in bases)})
        class_path = value["class_path"]
        if not known or class_path in known:
            continue
        module, _, attr = class_path.rpartition(".")
        try:
            if module and hasattr(importlib.import_module(module), attr):
                continue
        except ImportError:
            pass
        close = difflib.get_close_matches(class_path.rpartition(".")[2], known, n=2, cutoff=0.5)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise RegistryError(f"{where}: {option}: no {bases[0].__name__} class named {class_path!r}.{hint} "
                            f"Registered: {', '.join(known)} (`dig plugins list` shows them)")
