"""Hook specifications. A plugin implements any subset of these with `@hookimpl`.

Each hook receives a `register(name, cls, *, aliases=(), description="")` callback. The host validates what is
registered (contract subclass, unique names, unique class names) instead of flattening lists that plugins return,
so a bad registration fails with a message naming the plugin.
"""

from __future__ import annotations

from typing import Protocol

import pluggy

PROJECT = "deepinterestgr"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class RegisterFn(Protocol):
    def __call__(self, name: str, cls: type, *, aliases: tuple[str, ...] = (), description: str = "") -> None: ...


@hookspec
def dig_register_dataset_reader(register: RegisterFn) -> None:
    """Register dataset readers (`deepinterestgr.data.readers.base.DatasetReader`)."""


@hookspec
def dig_register_captioner(register: RegisterFn) -> None:
    """Register CMSA captioners, image -> text (`deepinterestgr.evidence.contracts.Captioner`)."""


@hookspec
def dig_register_image_encoder(register: RegisterFn) -> None:
    """Register CMSA image encoders, image -> features (`deepinterestgr.evidence.contracts.ImageEncoder`)."""


@hookspec
def dig_register_intent_miner(register: RegisterFn) -> None:
    """Register DCIM intent miners (`deepinterestgr.evidence.contracts.IntentMiner`)."""


@hookspec
def dig_register_quality_judge(register: RegisterFn) -> None:
    """Register QARM quality judges (`deepinterestgr.evidence.contracts.QualityJudge`)."""


@hookspec
def dig_register_text_encoder(register: RegisterFn) -> None:
    """Register text encoders (`deepinterestgr.evidence.contracts.TextEncoder`)."""


@hookspec
def dig_register_collaborative_source(register: RegisterFn) -> None:
    """Register collaborative item-embedding sources (`deepinterestgr.evidence.contracts.CollaborativeSource`)."""


@hookspec
def dig_register_attribute_source(register: RegisterFn) -> None:
    """Register item-attribute embedding sources (`deepinterestgr.evidence.contracts.AttributeSource`)."""


@hookspec
def dig_register_quantizer(register: RegisterFn) -> None:
    """Register quantizers (`deepinterestgr.quantize.base.Quantizer`)."""


@hookspec
def dig_register_generator(register: RegisterFn) -> None:
    """Register SID generators (`deepinterestgr.generate.base.Generator`)."""


@hookspec
def dig_register_reward(register: RegisterFn) -> None:
    """Register reward functions (`deepinterestgr.rl.rewards.base.Reward`)."""
