"""The built-in plugins, registered through the same hooks a third-party package implements.

Each stage package owns a `register_builtins(register)` function listing its plugins; the imports are inside the
hooks so that building a plugin manager imports a stage only when its kind is collected.
"""

from __future__ import annotations

from deepinterestgr.registry.hookspecs import hookimpl


@hookimpl
def dig_register_dataset_reader(register):
    from deepinterestgr.data.readers import register_builtins

    register_builtins(register)


@hookimpl
def dig_register_captioner(register):
    from deepinterestgr.evidence.plugins import register_captioners

    register_captioners(register)


@hookimpl
def dig_register_image_encoder(register):
    from deepinterestgr.evidence.plugins import register_image_encoders

    register_image_encoders(register)


@hookimpl
def dig_register_intent_miner(register):
    from deepinterestgr.evidence.plugins import register_intent_miners

    register_intent_miners(register)


@hookimpl
def dig_register_quality_judge(register):
    from deepinterestgr.evidence.plugins import register_quality_judges

    register_quality_judges(register)


@hookimpl
def dig_register_text_encoder(register):
    from deepinterestgr.evidence.plugins import register_text_encoders

    register_text_encoders(register)


@hookimpl
def dig_register_collaborative_source(register):
    from deepinterestgr.evidence.plugins import register_collaborative_sources

    register_collaborative_sources(register)


@hookimpl
def dig_register_attribute_source(register):
    from deepinterestgr.evidence.plugins import register_attribute_sources

    register_attribute_sources(register)


@hookimpl
def dig_register_quantizer(register):
    from deepinterestgr.quantize.plugins import register_builtins

    register_builtins(register)


@hookimpl
def dig_register_generator(register):
    from deepinterestgr.generate.plugins import register_builtins

    register_builtins(register)


@hookimpl
def dig_register_reward(register):
    from deepinterestgr.rl.rewards import register_builtins

    register_builtins(register)
