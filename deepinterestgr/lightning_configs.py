"""LightningCLI over every registered LightningModule / LightningDataModule: `dig fit|validate|test|predict`, the
quantize stage and the pipeline compose their Lightning objects from config fragments through it.

Plugins are loaded before the parser is built, so YAML configs can name plugin classes by their short class name
(`class_path: RQVAE`). Configs compose from small fragments: `-c configs/trainer/cpu.yaml -c configs/model/... -c ...`.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Sequence

from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI

log = logging.getLogger(__name__)

#: modules whose LightningModule / LightningDataModule subclasses the CLI can name by short class name
STAGE_MODULES = (
    "deepinterestgr.quantize.module",
    "deepinterestgr.generate.module",
    "deepinterestgr.rl.module",
)


def load_components() -> None:
    """Import every plugin (registry) and every stage's Lightning classes so jsonargparse can resolve them."""
    from deepinterestgr.registry import get_registry

    get_registry()
    for name in STAGE_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:  # a real import error inside an existing module must surface
                raise
            log.debug("stage module %s not present", name)


class DigLightningCLI(LightningCLI):
    """LightningCLI with the project's defaults: subclass mode for model and data, config saved per run."""

    def __init__(self, args: Sequence[str] | None = None, run: bool = True, **kwargs) -> None:
        load_components()
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("parser_kwargs", {"default_env": False})
        super().__init__(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=list(args) if args is not None else None,
            run=run,
            auto_configure_optimizers=False,
            **kwargs,
        )

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        # the components that draw random numbers get the resolved seed itself (`seed_everything: true` has been
        # drawn by now), not PL_GLOBAL_SEED: that may still hold the seed of an earlier run in this process
        from deepinterestgr.training import Seeded

        seed = _subconfig(self).get("seed_everything")
        if isinstance(seed, int) and not isinstance(seed, bool):
            for component in (self.model, self.datamodule):
                if isinstance(component, Seeded):
                    component.seed = seed

    def parse_arguments(self, parser, args) -> None:
        # Lightning warns when `args` is given while sys.argv holds other arguments. Here that is by design: the
        # pipeline and scripts pass `args` and keep their own command line in sys.argv, which must stay untouched
        # because Lightning's DDP launcher starts ranks 1.. by re-running sys.argv.
        if isinstance(args, (dict, Namespace)):
            self.config = parser.parse_object(args)
        else:
            self.config = parser.parse_args(args)


def run_lightning(args: Sequence[str], *, run: bool = True) -> DigLightningCLI:
    """Run `dig <subcommand> ...` in-process (used by the pipeline and tests); returns the CLI (trainer, model,
    datamodule). `-c configs/...` fragments are found in the package when the working directory has no `configs/`."""
    from deepinterestgr.config_files import resolve_config_args

    return DigLightningCLI(args=resolve_config_args(args), run=run)


def _subconfig(cli: LightningCLI) -> Namespace:
    return cli.config[cli.subcommand] if cli.subcommand else cli.config


def resolved_config(cli: LightningCLI) -> dict:
    """The CLI's resolved config as JSON: every option after composing the fragments and overrides, defaults filled,
    with the concrete `seed_everything`. What a trainable stage's manifest records (`artifacts.stage_record`). The
    fragments' file names are left out: what they set is in the values, and the paths differ between checkouts."""
    config = _subconfig(cli).clone()
    for key in ("config", "ckpt_path"):  # where a fit resumes from does not change what it computes
        config.pop(key, None)
    resolved = json.loads(json.dumps(config.as_dict(), default=str))
    run_dir = (resolved.get("data") or {}).get("init_args", {}).get("run_dir")
    return _relative_to_run(resolved, str(run_dir).rstrip("/")) if run_dir else resolved


def _relative_to_run(value, run_dir: str):
    """Paths inside the run directory as `<run>/...`: a moved or copied run directory stays current."""
    if isinstance(value, dict):
        return {k: _relative_to_run(v, run_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [_relative_to_run(v, run_dir) for v in value]
    if isinstance(value, str) and (value == run_dir or value.startswith(run_dir + "/")):
        return "<run>" + value[len(run_dir):]
    return value
