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
