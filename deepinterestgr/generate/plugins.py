"""Built-in plugins of this kind, registered through the plugin hooks (see deepinterestgr.registry.builtins)."""


def register_builtins(register) -> None:
    pass  # filled in by the stage's implementation
