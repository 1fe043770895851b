"""Plugin registry: pluggy hooks, one `dig_register_<kind>` hook per plugin kind.

Nothing here creates a plugin manager at import time; `get_registry()` builds one lazily.
"""

from deepinterestgr.registry.hookspecs import PROJECT, hookimpl, hookspec
from deepinterestgr.registry.host import (
    KINDS,
    PluginSpec,
    Registry,
    RegistryError,
    create,
    get_registry,
    list_plugins,
    reset_registry,
)

__all__ = [
    "KINDS",
    "PROJECT",
    "PluginSpec",
    "Registry",
    "RegistryError",
    "create",
    "get_registry",
    "hookimpl",
    "hookspec",
    "list_plugins",
    "reset_registry",
]
