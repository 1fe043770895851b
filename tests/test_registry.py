"""Registration rules, entry-point discovery, blocking and hook validation of the pluggy host."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import types

import pluggy
import pytest
import torch

from deepinterestgr.registry import KINDS, Registry, RegistryError, hookimpl
from deepinterestgr.registry import host as host_module
from deepinterestgr.rl.rewards.base import Reward, RewardBatch


class OneReward(Reward):
    """Always one."""

    def __call__(self, batch: RewardBatch) -> torch.Tensor:
        return torch.ones(batch.generated_items.shape)


class HalfReward(Reward):
    def __call__(self, batch: RewardBatch) -> torch.Tensor:
        return torch.full(batch.generated_items.shape, 0.5)


class AbstractishReward(Reward):
    pass


def _empty_registry() -> Registry:
    return Registry.load(entry_points=False, builtins=False)


def test_add_and_create_and_list():
    reg = _empty_registry()
    spec = reg.add("reward", "one", OneReward, aliases=("unit",))
    assert spec.description == "Always one."
    assert isinstance(reg.create("reward", "one"), OneReward)
    assert isinstance(reg.create("reward", "unit"), OneReward)
    assert reg.get("reward", "OneReward") is spec  # configs may name the class
    reg.add("reward", "half", HalfReward)
    assert reg.list("reward") == ["half", "one"]
    assert reg.list("reward", "o*") == ["one"]


def test_rejects_non_contract_class():
    reg = _empty_registry()
    with pytest.raises(RegistryError, match="does not implement the contract"):
        reg.add("reward", "nope", dict)


def test_rejects_abstract_class():
    reg = _empty_registry()
    with pytest.raises(RegistryError, match="abstract methods unimplemented: __call__"):
        reg.add("reward", "abstract", AbstractishReward)


def test_rejects_duplicate_name_and_alias():
    reg = _empty_registry()
    reg.add("reward", "one", OneReward, aliases=("unit",), source="pkg-a")
    with pytest.raises(RegistryError, match="already registered by pkg-a"):
        reg.add("reward", "one", HalfReward)
    with pytest.raises(RegistryError, match="'unit' is already registered"):
        reg.add("reward", "half", HalfReward, aliases=("unit",))


def test_rejects_duplicate_class_name():
    reg = _empty_registry()
    reg.add("reward", "one", OneReward)
    Other = type("OneReward", (Reward,), {"__call__": lambda self, b: torch.zeros(1)})
    with pytest.raises(RegistryError, match="class name 'OneReward' is already used"):
        reg.add("reward", "other", Other)


def test_unknown_name_suggests_close_matches():
    reg = _empty_registry()
    reg.add("reward", "exact-match", OneReward)
    with pytest.raises(RegistryError, match="Did you mean 'exact-match'"):
        reg.create("reward", "exact-mach")
    with pytest.raises(RegistryError, match="unknown plugin kind"):
        reg.list("rewards") or reg.get("rewards", "x")


def _fake_plugin_module(name: str, reward_cls: type, hook_name: str = "dig_register_reward") -> types.ModuleType:
    module = types.ModuleType(name)

    def register_hook(register):
        register(f"{name}-reward", reward_cls, description=f"from {name}")

    register_hook.__name__ = hook_name
    setattr(module, hook_name, hookimpl(register_hook))
    sys.modules[name] = module
    return module


class _FakeDist:
    """Just enough of importlib.metadata.Distribution for pluggy's entry-point loader."""

    def __init__(self, project: str, ep_name: str, module: str):
        self.metadata = {"name": project}
        self.entry_points = [importlib.metadata.EntryPoint(name=ep_name, value=module, group="deepinterestgr")]

    @property
    def name(self):
        return self.metadata["name"]

    @property
    def version(self):
        return "1.0"

    @property
    def project_name(self):
        return self.metadata["name"]


@pytest.fixture
def fake_distributions(monkeypatch):
    dists: list[_FakeDist] = []
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: list(dists))
    yield dists
    for d in dists:
        sys.modules.pop(d.entry_points[0].value, None)


def test_entry_point_discovery_attributes_source(fake_distributions):
    _fake_plugin_module("fake_dig_plugin", HalfReward)
    fake_distributions.append(_FakeDist("fake-dig-plugin", "fake", "fake_dig_plugin"))
    reg = Registry.load(builtins=False)
    spec = reg.get("reward", "fake_dig_plugin-reward")
    assert spec.cls is HalfReward
    assert spec.source == "fake-dig-plugin"
    assert spec.description == "from fake_dig_plugin"


def test_blocked_plugin_is_not_loaded(fake_distributions, monkeypatch):
    _fake_plugin_module("blocked_dig_plugin", HalfReward)
    fake_distributions.append(_FakeDist("blocked-dig-plugin", "blockme", "blocked_dig_plugin"))
    monkeypatch.setenv(host_module.DISABLED_ENV, "other, blockme")
    reg = Registry.load(builtins=False)
    assert reg.list("reward") == []


def test_misspelled_hook_fails_at_load(fake_distributions):
    _fake_plugin_module("typo_dig_plugin", HalfReward, hook_name="dig_register_rewards")
    fake_distributions.append(_FakeDist("typo-dig-plugin", "typo", "typo_dig_plugin"))
    with pytest.raises(pluggy.PluginValidationError, match="dig_register_rewards"):
        Registry.load(builtins=False)


def test_third_party_cannot_take_a_builtin_name(fake_distributions, fresh_registry):
    builtin_rewards = fresh_registry.list("reward")
    if not builtin_rewards:
        pytest.skip("no built-in rewards registered yet")
    taken = builtin_rewards[0]
    module = types.ModuleType("squatter_dig_plugin")
    module.dig_register_reward = hookimpl(lambda register: register(taken, HalfReward))
    sys.modules["squatter_dig_plugin"] = module
    fake_distributions.append(_FakeDist("squatter", "squatter", "squatter_dig_plugin"))
    with pytest.raises(RegistryError, match=f"{taken!r} is already registered by deepinterestgr"):
        Registry.load()


def test_import_is_cheap_and_creates_no_manager():
    code = (
        "import sys, deepinterestgr.registry as r, deepinterestgr.registry.host as h; "
        "assert h._default is None; assert 'torch' not in sys.modules, 'registry import pulled in torch'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_kind_has_a_hook_and_contract():
    pm = Registry.new_manager(entry_points=False, builtins=False)
    for kind in KINDS:
        assert hasattr(pm.hook, f"dig_register_{kind}")
        assert isinstance(host_module._import_contract(kind), type)


def test_builtins_load_and_every_spec_is_valid(fresh_registry):
    builtins = [s for s in fresh_registry.specs() if s.source == "deepinterestgr"]
    assert {s.kind for s in builtins} == set(KINDS), "every kind ships at least one built-in plugin"
    for spec in builtins:
        assert spec.cls.__module__.startswith("deepinterestgr."), spec
        assert spec.description, f"{spec.kind}/{spec.name} has no description"
