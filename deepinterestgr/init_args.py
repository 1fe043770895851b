"""Checkpoint serialisation of plugins: they remember their constructor arguments, so modules store them as
configs rather than pickled objects.

LightningCLI writes a plugin argument into a checkpoint's hyper-parameters as `{"class_path", "init_args"}`; a module
built in plain Python would pickle the plugin object instead, and such a checkpoint only loads with
`weights_only=False` (arbitrary code on unpickling). Plugin base classes inherit `RecordsInitArgs`; modules call
`save_plugin_hparams` (Lightning's `save_hyperparameters`, then `plugin_hparams_as_configs`), and every checkpoint
loads with `weights_only=True`.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from typing import Any


class RecordsInitArgs:
    """Records the arguments the most-derived `__init__` was called with (`init_config()` returns them)."""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" not in cls.__dict__:
            return
        init = cls.__init__

        @functools.wraps(init)
        def recording_init(self, *args, **kw):
            # the outermost constructor records first (inner super().__init__ calls see it and skip); a subclass
            # without its own __init__ runs its parent's wrapper, which binds the very signature being called
            if "_init_args" not in self.__dict__:
                object.__setattr__(self, "_init_args", _bound_arguments(init, self, args, kw))
            init(self, *args, **kw)

        cls.__init__ = recording_init

    def init_config(self) -> dict[str, Any]:
        """`{"class_path", "init_args"}` that rebuilds this object (nested plugins as configs too)."""
        cls = type(self)
        args = {k: _as_config(v) for k, v in getattr(self, "_init_args", {}).items()}
        return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": args}


def _bound_arguments(init, obj, args: tuple, kwargs: dict) -> dict[str, Any]:
    bound = inspect.signature(init).bind(obj, *args, **kwargs)
    bound.apply_defaults()
    out: dict[str, Any] = {}
    for name, value in list(bound.arguments.items())[1:]:
        kind = bound.signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            out.update(value)  # **kwargs are passed on by name: record them by name
        elif kind is not inspect.Parameter.VAR_POSITIONAL:
            out[name] = value
    return out


def _as_config(value: Any) -> Any:
    if isinstance(value, RecordsInitArgs):
        return value.init_config()
    if isinstance(value, dict):
        return {k: _as_config(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_config(v) for v in value]
    return value


def plugin_hparams_as_configs(module, *names: str) -> None:
    """Replace plugin objects among `module.hparams[names]` by their configs, and mark the hyper-parameters for
    Lightning's CLI instantiator (which rebuilds nested class_path configs in `load_from_checkpoint`)."""
    changed = False
    for name in names:
        value = module.hparams.get(name)
        if isinstance(value, RecordsInitArgs):
            module.hparams[name] = value.init_config()
            changed = True
    if changed:
        module.hparams["_class_path"] = f"{type(module).__module__}.{type(module).__qualname__}"
        module.hparams["_instantiator"] = "lightning.pytorch.cli.instantiate_module"


def save_plugin_hparams(module, *names: str, ignore: tuple[str, ...] = ()) -> None:
    """`module.save_hyperparameters(ignore=...)` for the caller's `__init__`, with the plugins named in `names` kept as
    configs (`plugin_hparams_as_configs`).

    Lightning warns that an `nn.Module` argument "is already saved during checkpointing" and advises ignoring it; here
    it is stored as its `class_path` config, which `load_from_checkpoint` needs to rebuild the module, so the advice
    does not apply and the warning (printed on every fit, test and load) is silenced for these names only."""
    frame = inspect.currentframe().f_back  # save_hyperparameters reads the arguments of the caller's __init__
    try:
        with warnings.catch_warnings():
            for name in names:
                warnings.filterwarnings("ignore", message=rf"Attribute '{name}' is an instance of `nn.Module`")
            module.save_hyperparameters(ignore=list(ignore), frame=frame)
    finally:
        del frame
    plugin_hparams_as_configs(module, *names)
