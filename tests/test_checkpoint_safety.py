"""Checkpoints load without unpickling code: modules built in plain Python (not only through the CLI) store their
plugins as class_path configs, every checkpoint loads with `torch.load(weights_only=True)`, and the RL stage refuses
a generator checkpoint that would need `weights_only=False`."""

from __future__ import annotations

import warnings

import pytest
import torch
from lightning.pytorch import Trainer

from deepinterestgr.artifacts import ArtifactError
from deepinterestgr.generate.data import SequenceDataModule
from deepinterestgr.generate.module import GeneratorModule
from deepinterestgr.generate.t5 import T5SIDGenerator
from deepinterestgr.generate.testing import write_tiny_run
from deepinterestgr.quantize.module import QuantizerModule
from deepinterestgr.quantize.rqvae import RQVAE
from deepinterestgr.rl.module import PolicyModule
from deepinterestgr.rl.rewards import CompositeReward, ExactMatchReward, PrefixReward

TINY_T5 = dict(d_model=16, num_layers=1, num_decoder_layers=1, num_heads=2, d_kv=8, d_ff=32, dropout=0.0)


def _trainer(**kw) -> Trainer:
    return Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, **kw)


def test_plugin_objects_are_stored_as_configs():
    module = GeneratorModule(generator=T5SIDGenerator(**TINY_T5, max_positions=12))
    config = module.hparams["generator"]
    assert config == {"class_path": "deepinterestgr.generate.t5.T5SIDGenerator",
                      "init_args": {**TINY_T5, "max_positions": 12, "item_buckets": 0, "item_scores": False,
                                    "causal": False, "fast_dropout": False, "vocab_size": None, "sid_length": None}}
    reward = CompositeReward(terms={"exact": ExactMatchReward(), "prefix": PrefixReward()},
                             weights={"exact": 1.0, "prefix": 0.2})
    policy = PolicyModule(init_checkpoint="x.ckpt", reward=reward)
    assert policy.hparams["reward"]["class_path"] == "deepinterestgr.rl.rewards.composite.CompositeReward"
    assert policy.hparams["reward"]["init_args"]["weights"] == {"exact": 1.0, "prefix": 0.2}
    quantizer = QuantizerModule(quantizer=RQVAE(hidden_dims=[8], latent_dim=4, num_levels=2, codebook_size=4))
    assert quantizer.hparams["quantizer"]["init_args"]["codebook_size"] == 4


def test_modules_keep_plugins_as_configs_without_lightnings_ignore_advice():
    """Lightning's "is an instance of `nn.Module` and is already saved" warning would advise dropping the plugin from
    hparams, which load_from_checkpoint needs: it is silenced for the plugin names only, and the hparams keep them."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        generator = GeneratorModule(generator=T5SIDGenerator(**TINY_T5, max_positions=12), beam_size=17)
        quantizer = QuantizerModule(quantizer=RQVAE(hidden_dims=[8], latent_dim=4, num_levels=2, codebook_size=4))
    assert not [w for w in caught if "already saved during checkpointing" in str(w.message)]
    assert generator.hparams["generator"]["class_path"] == "deepinterestgr.generate.t5.T5SIDGenerator"
    assert "beam_size" not in generator.hparams  # evaluation knobs follow the command line, not the checkpoint
    assert quantizer.hparams["quantizer"]["class_path"] == "deepinterestgr.quantize.rqvae.RQVAE"
    assert quantizer.hparams["image_proj_dim"] == 128  # the caller's other arguments are still recorded


def test_plain_python_generator_checkpoint_loads_weights_only_and_rebuilds(tmp_path):
    run = write_tiny_run(tmp_path / "run", num_items=30, num_users=16)
    module = GeneratorModule(generator=T5SIDGenerator(**TINY_T5), lr=0.01, warmup_steps=1, beam_size=10,
                             early_stopping_patience=0)
    trainer = _trainer(max_steps=2, limit_val_batches=0)
    trainer.fit(module, datamodule=SequenceDataModule(str(run), batch_size=8))
    path = tmp_path / "gen.ckpt"
    trainer.save_checkpoint(path)

    raw = torch.load(path, map_location="cpu", weights_only=True)  # raises if anything would be unpickled
    assert raw["hyper_parameters"]["generator"]["class_path"].endswith("T5SIDGenerator")
    loaded = GeneratorModule.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    assert type(loaded.generator) is T5SIDGenerator
    for name, tensor in module.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name

    policy = PolicyModule(init_checkpoint=str(path), reward=CompositeReward(terms={"exact": ExactMatchReward()}))
    policy.load_policy(path)
    assert torch.equal(next(policy.policy.parameters()), next(module.generator.parameters()))


def test_policy_refuses_a_checkpoint_that_needs_unpickling(tmp_path):
    run = write_tiny_run(tmp_path / "run", num_items=30, num_users=16)
    module = GeneratorModule(generator=T5SIDGenerator(**TINY_T5), early_stopping_patience=0)
    trainer = _trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(module, datamodule=SequenceDataModule(str(run), batch_size=8))
    path = tmp_path / "pickled.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"]["generator"] = module.generator  # what an older or foreign writer would store
    torch.save(checkpoint, path)
    policy = PolicyModule(init_checkpoint=str(path), reward=CompositeReward(terms={"exact": ExactMatchReward()}))
    with pytest.raises(ArtifactError, match=r"pickled.ckpt: holds pickled Python objects.*weights_only=True"):
        policy.load_policy(path)


def test_init_args_are_those_of_the_outermost_constructor():
    from deepinterestgr.init_args import RecordsInitArgs

    class Parent(RecordsInitArgs):
        def __init__(self, *, alpha: float = 1.0, **extra) -> None:
            self.alpha = alpha

    class Inherits(Parent):  # no __init__ of its own: the parent's signature is the one called
        pass

    class Narrows(Parent):
        def __init__(self, *, beta: int = 3) -> None:
            super().__init__(alpha=2.0)
            self.beta = beta

    assert Inherits(alpha=0.3).init_config()["init_args"] == {"alpha": 0.3}
    assert Narrows(beta=5).init_config()["init_args"] == {"beta": 5}
    assert Parent(alpha=0.5, gamma=7).init_config()["init_args"] == {"alpha": 0.5, "gamma": 7}
    assert Inherits().init_config()["class_path"].endswith("Inherits")
