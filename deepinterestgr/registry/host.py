"""The plugin host: loads built-ins and entry-point plugins through the same hooks and validates registrations."""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import os
from dataclasses import dataclass, field

import pluggy

from deepinterestgr.registry import hookspecs
from deepinterestgr.registry.hookspecs import PROJECT

#: kind -> "module:Class" of the contract every plugin of that kind must subclass. Imported lazily so that
#: `import deepinterestgr.registry` stays cheap (no torch / transformers at import).
KINDS: dict[str, str] = {
    "dataset_reader": "deepinterestgr.data.readers.base:DatasetReader",
    "captioner": "deepinterestgr.evidence.contracts:Captioner",
    "image_encoder": "deepinterestgr.evidence.contracts:ImageEncoder",
    "intent_miner": "deepinterestgr.evidence.contracts:IntentMiner",
    "quality_judge": "deepinterestgr.evidence.contracts:QualityJudge",
    "text_encoder": "deepinterestgr.evidence.contracts:TextEncoder",
    "collaborative_source": "deepinterestgr.evidence.contracts:CollaborativeSource",
    "attribute_source": "deepinterestgr.evidence.contracts:AttributeSource",
    "quantizer": "deepinterestgr.quantize.base:Quantizer",
    "generator": "deepinterestgr.generate.base:Generator",
    "reward": "deepinterestgr.rl.rewards.base:Reward",
}

#: Comma-separated entry-point names (or distribution names) that are not loaded. Like tox's
#: TOX_DISABLED_EXTERNAL_PLUGINS: the escape hatch when a third-party plugin breaks start-up.
DISABLED_ENV = "DIG_DISABLED_PLUGINS"

BUILTIN_SOURCE = "deepinterestgr"


class RegistryError(ValueError):
    """A plugin registration or lookup that cannot be honoured."""


@dataclass(frozen=True)
class PluginSpec:
    kind: str
    name: str
    cls: type
    source: str
    aliases: tuple[str, ...] = ()
    description: str = ""

    @property
    def class_path(self) -> str:
        return f"{self.cls.__module__}.{self.cls.__qualname__}"


def _import_contract(kind: str) -> type:
    module, _, attr = KINDS[kind].partition(":")
    return getattr(importlib.import_module(module), attr)


def _first_doc_line(cls: type) -> str:
    doc = (cls.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


@dataclass
class Registry:
    """All registered plugins of every kind. Build with `Registry.load()` or `Registry.from_manager(pm)`."""

    pm: pluggy.PluginManager
    _specs: dict[str, dict[str, PluginSpec]] = field(default_factory=dict)
    _aliases: dict[str, dict[str, str]] = field(default_factory=dict)

    # ----------------------------------------------------------------------------------------------- building
    @staticmethod
    def new_manager(*, entry_points: bool = True, builtins: bool = True) -> pluggy.PluginManager:
        pm = pluggy.PluginManager(PROJECT)
        pm.add_hookspecs(hookspecs)
        for blocked in filter(None, (s.strip() for s in os.environ.get(DISABLED_ENV, "").split(","))):
            pm.set_blocked(blocked)
        if builtins:
            from deepinterestgr.registry import builtins as builtin_plugins

            pm.register(builtin_plugins, name=BUILTIN_SOURCE)
        if entry_points:
            pm.load_setuptools_entrypoints(PROJECT)
        # a hookimpl whose name matches no spec (a typo such as `dig_register_rewards`) fails loudly here
        pm.check_pending()
        return pm

    @classmethod
    def load(cls, *, entry_points: bool = True, builtins: bool = True) -> "Registry":
        return cls.from_manager(cls.new_manager(entry_points=entry_points, builtins=builtins))

    @classmethod
    def from_manager(cls, pm: pluggy.PluginManager) -> "Registry":
        registry = cls(pm)
        sources = {id(plugin): dist.project_name for plugin, dist in pm.list_plugin_distinfo()}
        for kind in KINDS:
            hook = getattr(pm.hook, f"dig_register_{kind}")
            # Call implementations one at a time so each registration is attributed to the distribution that made
            # it (`dig plugins list` shows that source). Registration order, not pluggy's LIFO call order: the
            # built-ins are registered first, so a third-party plugin can never take a built-in name.
            for impl in hook.get_hookimpls():
                source = sources.get(id(impl.plugin), impl.plugin_name)
                impl.function(register=registry._register_fn(kind, source))
        return registry

    def _register_fn(self, kind: str, source: str):
        def register(name: str, cls: type, *, aliases: tuple[str, ...] = (), description: str = "") -> None:
            self.add(kind, name, cls, source=source, aliases=tuple(aliases), description=description)

        return register

    def add(
        self, kind: str, name: str, cls: type, *, source: str = BUILTIN_SOURCE, aliases=(), description: str = ""
    ) -> PluginSpec:
        if kind not in KINDS:
            raise RegistryError(f"unknown plugin kind {kind!r}; kinds are {sorted(KINDS)}")
        contract = _import_contract(kind)
        where = f"{kind} plugin {name!r} from {source}"
        if not isinstance(cls, type) or not issubclass(cls, contract):
            raise RegistryError(f"{where}: {cls!r} does not implement the contract "
                                f"{contract.__module__}.{contract.__name__}")
        if getattr(cls, "__abstractmethods__", None):
            missing = ", ".join(sorted(cls.__abstractmethods__))
            raise RegistryError(f"{where}: {cls.__name__} leaves abstract methods unimplemented: {missing}")
        specs = self._specs.setdefault(kind, {})
        aliases_of_kind = self._aliases.setdefault(kind, {})
        for key in (name, *aliases):
            if key in specs or key in aliases_of_kind:
                prior = specs.get(key) or specs[aliases_of_kind[key]]
                raise RegistryError(f"{where}: the name {key!r} is already registered by "
                                    f"{prior.source} ({prior.class_path})")
        for prior in specs.values():
            # jsonargparse resolves `class_path: RQVAE` by class name: two classes with one name would be ambiguous
            if prior.cls.__name__ == cls.__name__ and prior.cls is not cls:
                raise RegistryError(
                    f"{where}: class name {cls.__name__!r} is already used by {prior.class_path} ({prior.source}); "
                    "rename the class so configs can name it unambiguously"
                )
        spec = PluginSpec(kind, name, cls, source, tuple(aliases), description or _first_doc_line(cls))
        specs[name] = spec
        for alias in aliases:
            aliases_of_kind[alias] = name
        return spec

    # ----------------------------------------------------------------------------------------------- lookup
    def get(self, kind: str, name: str) -> PluginSpec:
        if kind not in KINDS:
            raise RegistryError(f"unknown plugin kind {kind!r}; kinds are {sorted(KINDS)}")
        specs = self._specs.get(kind, {})
        name = self._aliases.get(kind, {}).get(name, name)
        if name in specs:
            return specs[name]
        by_class = [s for s in specs.values() if s.cls.__name__ == name]
        if by_class:
            return by_class[0]
        known = sorted([*specs, *self._aliases.get(kind, {})])
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise RegistryError(f"no {kind} plugin named {name!r}.{hint} Registered: {', '.join(known) or '(none)'}")

    def create(self, kind: str, name: str, /, **kwargs):
        return self.get(kind, name).cls(**kwargs)

    def list(self, kind: str, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._specs.get(kind, {}) if fnmatch.fnmatch(n, pattern))

    def specs(self, kind: str | None = None) -> list[PluginSpec]:
        kinds = [kind] if kind else list(KINDS)
        return [self._specs.get(k, {})[n] for k in kinds for n in self.list(k)]


_default: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, built on first use (never at import)."""
    global _default
    if _default is None:
        _default = Registry.load()
    return _default


def reset_registry() -> None:
    global _default
    _default = None


def create(kind: str, name: str, /, **kwargs):
    return get_registry().create(kind, name, **kwargs)


def list_plugins(kind: str, pattern: str = "*") -> list[str]:
    return get_registry().list(kind, pattern)


def _make_kind_functions() -> dict[str, object]:
    # create_quantizer(name, **kw), list_quantizer(pattern), ... for every kind, like timm's create_model/list_models
    out: dict[str, object] = {}
    for kind in KINDS:
        def _create(name: str, /, _kind=kind, **kwargs):
            return create(_kind, name, **kwargs)

        def _list(pattern: str = "*", _kind=kind) -> list[str]:
            return list_plugins(_kind, pattern)

        _create.__name__, _list.__name__ = f"create_{kind}", f"list_{kind}"
        _create.__doc__ = f"Instantiate the {kind} plugin registered as `name`; raises with close matches if unknown."
        _list.__doc__ = f"Names of registered {kind} plugins matching the fnmatch `pattern`."
        out[_create.__name__], out[_list.__name__] = _create, _list
    return out


globals().update(_make_kind_functions())
