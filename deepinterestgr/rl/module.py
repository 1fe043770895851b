"""PolicyModule: GRPO fine-tuning of a trained SID generator with pluggable rewards.

For every training example (a user history and its next item) the policy proposes a group of G catalog SIDs
(constrained beam search, as MiniOneRec, or constrained sampling), a `Reward` scores them against the target,
advantages are standardised within the group, and the clipped GRPO surrogate minus beta * KL to the frozen
initial generator is maximised (`deepinterestgr.rl.grpo`). Groups are built and scored inside one process, so
under DDP each rank owns whole groups and only gradients and logged statistics cross ranks.

The policy and its reference are loaded in `configure_model` from the generator checkpoint `init_checkpoint`
(a path, or a path inside the datamodule's run directory), after the datamodule has read the SID table, so a config
can be parsed and the module built before the generator stage has run. Validation and test rank with the same
`Ranker` as the generator (its beam width, item-level re-ranking weight and no-repeat rule, unless set here);
`test` writes `<run>/rl/metrics_test.json`.

Each generated batch is optimised `ppo_epochs` times (GRPO's mu): the log-probs of the policy that generated the
candidates are kept, so from the second epoch on the ratio pi/pi_old moves and the clip acts. A policy checkpoint is
self-contained: it embeds the generator's architecture config, the SID tokenizer and the SID table's hash.
"""

from __future__ import annotations

import copy
import logging
import pickle
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import OptimizerCallable, instantiate_module
from safetensors.torch import load_file

from deepinterestgr.artifacts import MANIFEST, ArtifactError, read_jsonl, read_manifest, sha256_file
from deepinterestgr.generate.base import Generator
from deepinterestgr.generate.module import GeneratorModule
from deepinterestgr.generate.ranker import (
    Ranker,
    best_and_last_checkpoints,
    check_ranking_options,
    sid_table_hash,
    user_configured_checkpoint,
)
from deepinterestgr.generate.search import SearchResult, constrained_beam_search, constrained_sample, sid_log_probs
from deepinterestgr.generate.tokenizer import SIDTokenizer
from deepinterestgr.generate.trie import SIDTrie
from deepinterestgr.init_args import save_plugin_hparams
from deepinterestgr.rl.grpo import group_advantages, grpo_loss
from deepinterestgr.rl.rewards.base import Reward, RewardBatch
from deepinterestgr.rl.rewards.composite import CompositeReward
from deepinterestgr.training import Seeded, StepSeed

log = logging.getLogger(__name__)

CANDIDATE_MODES = ("beam", "sample", "mixed")
QUALITY_FILE = "evidence/quality.safetensors"
CHECKPOINT_INIT_KEY = "policy_init_checkpoint"
#: the generator a policy checkpoint embeds: GeneratorModule hparams, SID tokenizer state, SID table hash, ranking
CHECKPOINT_GENERATOR_KEY = "policy_generator"
#: extras the policy knows how to provide to rewards that declare `requires = ("extras.<key>", ...)`
KNOWN_EXTRAS = ("item_categories",)


class PolicyModule(Seeded, LightningModule):
    def __init__(
        self,
        *,
        reward: Reward,
        init_checkpoint: str = "generate/checkpoints/best.ckpt",
        optimizer: OptimizerCallable | None = None,
        lr: float = 1e-5,
        group_size: int = 8,
        candidates: str = "beam",
        temperature: float = 1.0,
        clip_eps: float = 0.2,
        beta: float = 0.001,
        ppo_epochs: int = 1,
        scale_advantages: bool = True,
        beam_size: int | None = None,
        rerank_weight: float | None = None,
        exclude_history: bool | None = None,
        ks: tuple[int, ...] = (5, 10),
        monitor: str = "val/ndcg@10",
        quality_file: str = QUALITY_FILE,
        disable_dropout: bool = True,
    ) -> None:
        """
        reward:          scores each group ([B, G] rewards), e.g. `CompositeReward` with the paper's weights
        init_checkpoint: generator checkpoint (GeneratorModule) to start from and to use as the KL reference;
                         absolute, or relative to the run directory (then to the working directory)
        optimizer:       optimiser factory over the policy's parameters; default AdamW(lr=lr)
        group_size:      G candidates per user (GRPO group)
        candidates:      "beam" (top-G constrained beam search, ranked: the rank reward needs this) or
                         "sample" (G constrained samples at `temperature`) or "mixed" (the top G/2 of the beam
                         and G - G/2 samples: exploitation and exploration in one group)
        clip_eps, beta:  GRPO ratio clip and KL coefficient (k3 estimator)
        ppo_epochs:      optimiser steps per generated batch (GRPO's mu); trainer.max_steps counts optimiser steps
        scale_advantages: divide each group's centred rewards by their std (GRPO, default). False keeps them
                         unscaled (Dr. GRPO): needed for QARM's bonus to matter with the exact-match reward alone,
                         since a per-group factor (1 + alpha * q_target) cancels in the std (see `group_advantages`)
        beam_size, rerank_weight, exclude_history:
                         evaluation ranking; None = as the generator checkpoint was evaluated (its `Ranker` options)
        ks:              the K of Recall/NDCG@K
        quality_file:    item quality q_i (safetensors, key "quality"), relative to the run directory
        disable_dropout: keep the policy in eval mode while it trains, so its log-probs (and the KL to the
                         dropout-free reference) are those of the policy that generated the candidates
        """
        super().__init__()
        if candidates not in CANDIDATE_MODES:
            raise ValueError(f"candidates must be one of {CANDIDATE_MODES}, got {candidates!r}")
        if group_size < 2:
            raise ValueError(f"group_size must be >= 2 (advantages are relative within a group), got {group_size}")
        if temperature <= 0 or clip_eps <= 0 or beta < 0:
            raise ValueError(f"need temperature > 0, clip_eps > 0, beta >= 0; got {temperature}, {clip_eps}, {beta}")
        if not isinstance(reward, Reward):
            raise TypeError(f"reward must be a deepinterestgr Reward, got {type(reward).__name__}")
        if candidates != "beam" and "ranks" in reward.requires:
            raise ValueError(f"{type(reward).__name__} needs beam ranks; use candidates='beam'")
        if ppo_epochs < 1:
            raise ValueError(f"ppo_epochs must be >= 1, got {ppo_epochs}")
        check_ranking_options(beam_size or max(ks), tuple(ks), rerank_weight)
        # the reward keeps its class_path config in hparams so load_from_checkpoint rebuilds it (weights_only)
        save_plugin_hparams(self, "reward")
        self.reward = reward
        self.optimizer_factory = optimizer
        self.policy: Generator | None = None
        self.reference: Generator | None = None
        self.tokenizer: SIDTokenizer | None = None
        self.init_checkpoint_path: Path | None = None
        self.renormalize = False  # set from the generator checkpoint by load_policy
        self.reward_extras: dict[str, Any] = {}
        self.item_quality: torch.Tensor | None = None
        self._generator_hparams: dict | None = None
        # the options are completed from the generator checkpoint in `adopt_generator`
        self.ranker = Ranker(beam_size=beam_size or max(ks), rerank_weight=rerank_weight or 0.0,
                             exclude_history=bool(exclude_history), ks=tuple(ks))
        # several optimiser steps per generated batch (ppo_epochs > 1) need the loop in training_step. With one,
        # Lightning optimises: a fit resumed mid-epoch then checkpoints at the very steps of an uninterrupted one
        # (under manual optimisation the resumed fit's validation, hence its last.ckpt, shifted by a step)
        self.automatic_optimization = ppo_epochs == 1

    # ----------------------------------------------------------------------------------------------- loading
    def _run_dir(self) -> Path | None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        run_dir = getattr(dm, "run_dir", None)
        return Path(run_dir) if run_dir is not None else None

    def resolve_init_checkpoint(self, run_dir: Path | None) -> Path:
        path = Path(self.hparams.init_checkpoint)
        # a relative path means the run's own checkpoint first; the working directory only as a fallback
        candidates = [path] if path.is_absolute() else [*([run_dir / path] if run_dir is not None else []), path]
        for candidate in candidates:
            if candidate.is_file():
                return candidate.resolve()
        tried = ", ".join(str(c) for c in candidates)
        raise ArtifactError(
            f"generator checkpoint not found (tried {tried}). Train the generator first (`dig fit` with a "
            "GeneratorModule config, or the pipeline's `generate` stage), or set --model.init_checkpoint."
        )

    def load_policy(self, checkpoint: str | Path, *, tokenizer: SIDTokenizer | None = None) -> None:
        """Policy and frozen reference from a GeneratorModule checkpoint; checks it matches the run's SID table."""
        # weights_only: a checkpoint is a file users pass around; never unpickle code from it. Fits through the CLI
        # (`dig fit`, the pipeline) store the generator as its class_path config, which loads this way.
        try:
            generator_module = GeneratorModule.load_from_checkpoint(str(checkpoint), map_location="cpu",
                                                                    weights_only=True)
        except pickle.UnpicklingError as e:
            raise ArtifactError(
                f"{checkpoint}: holds pickled Python objects, which are not loaded (weights_only=True: unpickling can "
                "run arbitrary code). GeneratorModule checkpoints written by this project store their generator as a "
                "class_path config; retrain with `dig fit` / the pipeline, or re-save the checkpoint from trusted code."
            ) from e
        loaded = generator_module.tokenizer
        if loaded is None:
            raise ArtifactError(f"{checkpoint}: no SID tokenizer in this checkpoint; "
                                "is it a GeneratorModule checkpoint?")
        if tokenizer is not None and not (
            torch.equal(loaded.table.codes, tokenizer.table.codes)
            and torch.equal(loaded.table.suffix, tokenizer.table.suffix)
            and loaded.num_user_buckets == tokenizer.num_user_buckets
        ):
            raise ArtifactError(
                f"{checkpoint}: the generator was trained on a different SID table (or user buckets) than this run's "
                "`quantize` stage produced. Retrain the generator on this run, "
                "or point init_checkpoint at the right one."
            )
        self.adopt_generator(generator_module.generator, dict(generator_module.hparams), loaded,
                             generator_module.recorded_ranking)
        self.init_checkpoint_path = Path(checkpoint)
        log.info("policy initialised from %s (%d parameters)", checkpoint,
                 sum(p.numel() for p in self.policy.parameters()))

    def adopt_generator(self, generator: Generator, generator_hparams: dict, tokenizer: SIDTokenizer,
                        ranking: dict | None) -> None:
        """Policy = `generator`, reference = a frozen copy; ranking options not set on this module follow the
        generator's (`ranking`, as its checkpoint recorded them)."""
        self.tokenizer = tokenizer
        # scores are normalised as the generator was trained: over the vocabulary, or over catalog continuations
        self.renormalize = bool(generator_hparams.get("renormalize", False))
        self.policy = generator
        self.reference = copy.deepcopy(self.policy).requires_grad_(False).eval()
        self._generator_hparams = generator_hparams
        recorded = ranking or {}
        hp = self.hparams
        beam = hp.beam_size or int(recorded.get("beam_size", 20))
        weight = hp.rerank_weight if hp.rerank_weight is not None else float(recorded.get("rerank_weight", 0.0))
        exclude = hp.exclude_history if hp.exclude_history is not None else bool(recorded.get("exclude_history", False))
        check_ranking_options(beam, tuple(hp.ks), weight)
        self.ranker.renormalize, self.ranker.beam_size = self.renormalize, beam
        self.ranker.rerank_weight, self.ranker.exclude_history = weight, exclude
        # the candidate set follows the generator's (beam + its dense candidates): the policy ranks as it did
        self.ranker.dense_candidates = int(recorded.get("dense_candidates", 0))
        if recorded.get("prior_weight") or recorded.get("prior_candidates"):
            # the policy is measured against the generator alone: a hybrid's count prior would blur what RL adds
            log.warning("the generator was evaluated as a hybrid (item prior weight %s, %s prior candidates); the "
                        "policy ranks without the prior, so compare it with the generator's prior-free figures",
                        recorded.get("prior_weight", 0.0), recorded.get("prior_candidates", 0))
        self.ranker.set_tokenizer(tokenizer)

    def load_reward_inputs(self, run_dir: Path) -> None:
        """Item quality (QARM) and reward extras from the run directory, failing early when a reward needs one."""
        required = set(self.reward.requires)
        quality_path = run_dir / self.hparams.quality_file
        if quality_path.is_file():
            check_against_manifest(quality_path)
            try:
                tensors = load_file(str(quality_path))
                quality = tensors.get("quality")
            except Exception as e:  # safetensors raises its own error types for truncated or foreign files
                raise ArtifactError(f"{quality_path}: unreadable ({e}); rerun the `evidence` stage") from e
            if quality is None or quality.shape != (self.tokenizer.num_items,):
                raise ArtifactError(
                    f"{quality_path}: expected key 'quality' of shape [{self.tokenizer.num_items}] (one q_i per item); "
                    "rerun the `evidence` stage on this run's catalog"
                )
            # q_i scales the exact-match bonus: NaN would poison every reward of the batch, > 1 would outweigh the match
            bad = ~torch.isfinite(quality.float()) | (quality < 0) | (quality > 1)
            if bad.any():
                first = bad.nonzero().squeeze(1)[:5].tolist()
                raise ArtifactError(
                    f"{quality_path}: {int(bad.sum())} item qualities are not finite values in [0, 1] (first item ids "
                    f"{first}); rerun the `evidence` stage"
                )
            self.item_quality = quality.float()
            known = tensors.get("known")
            if known is not None and not bool(known.all()):
                log.warning("%s: %d of %d items have unknown quality (their judgment failed); QARM credits them the "
                            "judged mean the evidence stage filled in", quality_path, int((~known).sum()), len(known))
        elif "item_quality" in required:
            raise ArtifactError(
                f"{quality_path} not found, but the reward {type(self.reward).__name__} uses item quality (QARM). "
                "Run the `evidence` stage with a quality judge, or drop the qarm term from the reward."
            )
        for need in sorted(required):
            if not need.startswith("extras."):
                continue
            key = need.removeprefix("extras.")
            if key == "item_categories":
                self.reward_extras[key] = read_item_categories(run_dir / "data" / "catalog.jsonl",
                                                               self.tokenizer.num_items)
            else:
                raise ValueError(
                    f"{type(self.reward).__name__} needs extras[{key!r}], which the policy cannot provide "
                    f"(it provides {list(KNOWN_EXTRAS)})"
                )

    def configure_model(self) -> None:
        if self.policy is not None or self._trainer is None:
            # no trainer: `load_from_checkpoint`, where `on_load_checkpoint` rebuilds from the recorded init path
            return
        run_dir = self._run_dir()
        dm = self.trainer.datamodule if self._trainer is not None else None
        self.load_policy(self.resolve_init_checkpoint(run_dir), tokenizer=getattr(dm, "tokenizer", None))
        if run_dir is not None:
            self.load_reward_inputs(run_dir)
        elif set(self.reward.requires) - {"ranks"}:
            raise ValueError(
                f"{type(self.reward).__name__} needs {sorted(set(self.reward.requires) - {'ranks'})} from a run "
                "directory, but the datamodule has no `run_dir`"
            )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # provenance only: loading never needs the generator checkpoint, whose path may have moved
        checkpoint[CHECKPOINT_INIT_KEY] = str(self.init_checkpoint_path) if self.init_checkpoint_path else None
        checkpoint[CHECKPOINT_GENERATOR_KEY] = {
            "hparams": {k: v for k, v in self._generator_hparams.items() if k != "_instantiator"},
            "tokenizer": self.tokenizer.state(), "sid_table_sha256": sid_table_hash(self.tokenizer),
            "ranking": self.ranker.options(),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # PolicyModule.load_from_checkpoint (or a resumed fit): rebuild the architecture from the embedded generator
        # config; the policy's and the reference's weights then come from this checkpoint's state dict
        saved = checkpoint.get(CHECKPOINT_GENERATOR_KEY)
        if saved is None:
            if self.policy is None and checkpoint.get(CHECKPOINT_INIT_KEY):
                self.load_policy(checkpoint[CHECKPOINT_INIT_KEY])  # written before policies embedded their generator
            return
        if self.tokenizer is not None:  # built from the run's data: the checkpoint must be for this SID table
            ours = sid_table_hash(self.tokenizer)
            if saved["sid_table_sha256"] != ours:
                raise ArtifactError(
                    f"this policy checkpoint was trained on SID table {saved['sid_table_sha256'][:16]}..., "
                    f"but the run's SID table is {ours[:16]}... (the quantize stage changed since). "
                    "Retrain the generator and the policy on this run.")
            return
        tokenizer = SIDTokenizer.from_state(saved["tokenizer"])
        if sid_table_hash(tokenizer) != saved["sid_table_sha256"]:
            raise ArtifactError("policy checkpoint: its embedded SID table does not match its recorded hash "
                                f"{saved['sid_table_sha256'][:16]}... (corrupt or edited checkpoint)")
        generator_module = instantiate_module(GeneratorModule, dict(saved["hparams"]))
        generator_module.set_tokenizer(tokenizer)
        self.adopt_generator(generator_module.generator, dict(saved["hparams"]), tokenizer, saved.get("ranking"))
        self.init_checkpoint_path = (Path(checkpoint[CHECKPOINT_INIT_KEY]) if checkpoint.get(CHECKPOINT_INIT_KEY)
                                     else None)

    def _set_generator_modes(self) -> None:
        # Set on every step: Lightning restores per-module training flags around validation by assigning them
        # directly, so an override of `train()` is not enough. Eval mode only switches dropout off here (SID
        # generators have no batch norm); gradients flow as usual. With dropout on, the policy's log-probs are
        # those of a random sub-network: the KL to the reference read 0.24 on the very first step (equal weights).
        self.reference.eval()
        if self.hparams.disable_dropout:
            self.policy.eval()

    @property
    def trie(self) -> SIDTrie:
        return self.ranker.trie(self.device)

    # ----------------------------------------------------------------------------------------------- GRPO
    @torch.no_grad()
    def propose(self, history: torch.Tensor, history_mask: torch.Tensor) -> tuple[SearchResult, torch.Tensor | None]:
        """G candidates per user from the current policy (no dropout) and their beam ranks ([B, G] or None)."""
        was_training = self.policy.training
        self.policy.eval()
        try:
            g, mode = self.hparams.group_size, self.hparams.candidates
            n_beam = g if mode == "beam" else g // 2 if mode == "mixed" else 0
            parts = []
            if n_beam:
                parts.append(constrained_beam_search(self.policy, self.trie, history, history_mask, beam_size=n_beam,
                                                     renormalize=self.renormalize))
            if n_beam < g:
                parts.append(constrained_sample(self.policy, self.trie, history, history_mask, num_samples=g - n_beam,
                                                temperature=self.hparams.temperature, renormalize=self.renormalize))
            result = parts[0] if len(parts) == 1 else SearchResult(*(torch.cat(f, dim=1) for f in zip(*parts)))
            ranks = torch.arange(g, device=history.device).expand(history.shape[0], g) if mode == "beam" else None
        finally:
            self.policy.train(was_training)
        return result, ranks

    def reward_batch(self, result: SearchResult, ranks: torch.Tensor | None, batch: dict) -> RewardBatch:
        quality = self.item_quality.to(self.device) if self.item_quality is not None else None
        return RewardBatch(
            generated=self.tokenizer.tokens_to_codes(result.tokens),
            target=self.tokenizer.tokens_to_codes(batch["target"]),
            generated_items=result.items,
            target_items=batch["target_item"],
            num_levels=self.tokenizer.num_levels,
            ranks=ranks,
            item_quality=quality,
            extras=self.reward_extras,
        )

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self._set_generator_modes()
        history, history_mask = batch["history"], batch["history_mask"]
        b, g = history.shape[0], self.hparams.group_size
        result, ranks = self.propose(history, history_mask)
        reward_batch = self.reward_batch(result, ranks, batch)
        rewards = self.reward(reward_batch).to(self.device)
        # padding beams (only when fewer than G catalog SIDs exist) are no candidates: no advantage, no loss
        real = result.items >= 0
        advantages = group_advantages(rewards, mask=real, scale=self.hparams.scale_advantages)

        tokens = result.tokens.flatten(0, 1)  # [B*G, S]
        history_g = history.repeat_interleave(g, dim=0)
        mask_g = history_mask.repeat_interleave(g, dim=0)
        token_mask = real.flatten()[:, None].expand_as(tokens)
        with torch.no_grad():
            ref_log_probs = sid_log_probs(self.reference, self.trie, history_g, mask_g, tokens,
                                          renormalize=self.renormalize)
        old_log_probs, outs = None, []
        for _ in range(self.hparams.ppo_epochs):
            log_probs = sid_log_probs(self.policy, self.trie, history_g, mask_g, tokens, renormalize=self.renormalize)
            if old_log_probs is None:  # no update yet: these are the log-probs of the policy that generated them
                old_log_probs = log_probs.detach()
            out = grpo_loss(log_probs, old_log_probs, ref_log_probs, advantages.flatten(),
                            clip_eps=self.hparams.clip_eps, beta=self.hparams.beta, mask=token_mask)
            outs.append(out)
            if self.automatic_optimization:
                break  # Lightning steps on the returned loss
            optimizer = self.optimizers()
            optimizer.zero_grad()
            self.manual_backward(out.loss)
            optimizer.step()

        real_groups = real.sum(dim=1) >= 2
        zero_advantage = (((advantages.abs().sum(dim=1) == 0) & real_groups).float().sum()
                          / real_groups.sum().clamp(min=1))
        stats = {
            "train/loss": outs[0].loss.detach(),
            "train/reward_mean": rewards.mean(),
            "train/reward_group_std": rewards.std(dim=1).mean(),
            "train/exact_rate": reward_batch.exact.float().mean(),
            "train/group_hit_rate": reward_batch.exact.any(dim=1).float().mean(),
            "train/zero_advantage_fraction": zero_advantage,
            "train/kl": outs[0].kl,
            # the clip acts only once the policy moved away from the one that generated the batch (epochs 2..mu)
            "train/clip_fraction": torch.stack([o.clip_fraction for o in outs]).mean(),
        }
        if isinstance(self.reward, CompositeReward):
            for name, value in self.reward.components(reward_batch).items():
                stats[f"train/reward_{name}"] = value.float().mean()
        # sync_dist: every rank scored its own groups; the logged statistics are the mean over ranks
        self.log_dict(stats, batch_size=b, sync_dist=True)
        self.log("train/reward", rewards.mean(), batch_size=b, prog_bar=True, sync_dist=True)
        return outs[-1].loss if self.automatic_optimization else outs[-1].loss.detach()

    # ----------------------------------------------------------------------------------------------- evaluation
    def generate(self, history: torch.Tensor, history_mask: torch.Tensor, beam_size: int | None = None,
                 dense_candidates: int | None = None) -> SearchResult:
        """The generator's ranking (beam, dense candidates, re-ranking, no-repeat rule) with the policy's weights."""
        return self.ranker.rank(self.policy, history, history_mask, beam_size=beam_size,
                                dense_candidates=dense_candidates)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        # checkpoint selection on the beam's own candidates, as the generator's (dense candidates at test only)
        self.ranker.update("val", self.generate(batch["history"], batch["history_mask"], dense_candidates=0),
                           batch["target_item"])

    def on_validation_epoch_end(self) -> None:
        self.ranker.log_validation(self, f"rl step {self.global_step}")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self.ranker.update("test", self.generate(batch["history"], batch["history_mask"]), batch["target_item"])

    def on_test_epoch_end(self) -> None:
        values = self.ranker.compute("test", self.trainer.strategy)
        self.log_dict({k: v for k, v in values.items() if k != "test/num_users"})
        run_dir = self._run_dir()
        if run_dir is not None:
            dm = self.trainer.datamodule
            split = getattr(dm, "split", None)
            self.ranker.write_test_outputs(
                run_dir / "rl", values, num_users=len(split.examples["test"]) if split is not None else None,
                is_global_zero=self.trainer.is_global_zero, extra={
                    "reward": self.reward.init_config(),  # class_path + init_args: which reward produced these numbers
                    "group_size": self.hparams.group_size,
                    "candidates": self.hparams.candidates,
                    "ppo_epochs": self.hparams.ppo_epochs,
                    "init_checkpoint": str(self.init_checkpoint_path),
                    "global_step": self.global_step,
                })
            log.info("wrote %s", run_dir / "rl" / "metrics_test.json")

    # ----------------------------------------------------------------------------------------------- optimisation
    def configure_optimizers(self):
        params = [p for p in self.policy.parameters() if p.requires_grad]
        if self.optimizer_factory is not None:
            return self.optimizer_factory(params)
        return torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=0.0)

    def configure_callbacks(self):
        """Best (on the validation metric) and last checkpoints in <run>/rl/checkpoints, unless the config has its own;
        per-step reseeding so that sampled candidates and dropout of a resumed fit equal an uninterrupted one."""
        if self._trainer is None or self.trainer.checkpoint_callback is None:
            return [StepSeed()]
        if user_configured_checkpoint(self.trainer):
            return [StepSeed()]
        run_dir = self._run_dir()
        if run_dir is None:
            return [StepSeed()]
        return [StepSeed(), *best_and_last_checkpoints(run_dir / "rl" / "checkpoints", self.hparams.monitor)]


def check_against_manifest(path: Path) -> None:
    """If the stage's manifest lists `path`, its hash must match (a truncated or edited artifact fails here)."""
    manifest_path = path.parent / MANIFEST
    if not manifest_path.is_file():
        return
    entry = read_manifest(path.parent, path.parent.name).get("files", {}).get(path.name)  # names a corrupt one
    if entry is not None and sha256_file(path) != entry.get("sha256"):
        raise ArtifactError(f"{path}: content does not match {manifest_path} (truncated or edited). Rerun that stage.")


def read_item_categories(path: Path, num_items: int) -> list[set[str]]:
    """Per item id, the set of its catalog categories (`extras["item_categories"]` for category rewards)."""
    categories: list[set[str]] = [set() for _ in range(num_items)]
    for lineno, row in enumerate(read_jsonl(path, stage="data"), 1):
        item_id = row.get("item_id")
        if not isinstance(item_id, int) or not 0 <= item_id < num_items:
            raise ArtifactError(f"{path}:{lineno}: item_id {item_id!r} is not in 0..{num_items - 1}; "
                                "rerun the `data` stage")
        categories[item_id] = set(row.get("categories") or [])
    return categories
