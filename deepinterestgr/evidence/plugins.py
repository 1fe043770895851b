"""Built-in evidence plugins, registered through the plugin hooks (see deepinterestgr.registry.builtins)."""


def register_text_encoders(register) -> None:
    pass


def register_intent_miners(register) -> None:
    pass


def register_quality_judges(register) -> None:
    pass


def register_cmsa_branches(register) -> None:
    pass
