"""GeneratorModule: teacher-forced training of a SID generator; constrained beam search for valid/test metrics.

The generator's vocabulary size and SID length come from the datamodule's SID tokenizer (`configure_model`), so a
config names only the architecture (`generator: {class_path: T5SIDGenerator, init_args: {...}}`). Checkpoints carry
the SID table (`on_save_checkpoint`), so `GeneratorModule.load_from_checkpoint(path)` rebuilds the sized model and
its trie without the run directory.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import EarlyStopping

from deepinterestgr.generate.base import Generator
from deepinterestgr.generate.data import SequenceDataModule  # noqa: F401  (importing this module lets the CLI name it)
from deepinterestgr.generate.prior import CooccurrencePrior, train_sequences
from deepinterestgr.generate.ranker import (
    RANKING_KEY,
    Ranker,
    best_and_last_checkpoints,
    sid_table_hash,
    user_configured_checkpoint,
)
from deepinterestgr.generate.tokenizer import PAD, SIDTokenizer
from deepinterestgr.generate.trie import SIDTrie
from deepinterestgr.init_args import save_plugin_hparams
from deepinterestgr.training import Seeded, StepSeed

log = logging.getLogger(__name__)

CHECKPOINT_TOKENIZER_KEY = "sid_tokenizer"
#: the fitted item-to-item prior of a hybrid ranking (`prior`), so that a loaded checkpoint ranks as it was tested
CHECKPOINT_PRIOR_KEY = "item_prior"


class GeneratorModule(Seeded, LightningModule):
    def __init__(
        self,
        *,
        generator: Generator,
        lr: float = 2e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 500,
        schedule: str = "inverse_sqrt",
        min_lr_ratio: float = 0.05,
        label_smoothing: float = 0.0,
        renormalize: bool = False,
        item_loss_weight: float = 0.0,
        rerank_weight: float = 0.0,
        exclude_history: bool = False,
        beam_size: int = 20,
        dense_candidates: int = 0,
        prior: CooccurrencePrior | None = None,
        prior_weight: float = 0.0,
        prior_candidates: int = 0,
        ks: tuple[int, ...] = (5, 10),
        monitor: str = "val/ndcg@10",
        early_stopping_patience: int = 5,
        dump_test_results: bool = False,
    ) -> None:
        """
        Args:
            generator: the SID generator plugin (`T5SIDGenerator`, `DecoderOnlySIDGenerator`, ...); sized from the SID
                table at fit time.
            lr, weight_decay: AdamW; no decay on norms, biases and 1-d parameters.
            warmup_steps, schedule, min_lr_ratio: linear warmup then inverse_sqrt, cosine or constant; the LR never
                falls below lr * min_lr_ratio.
            label_smoothing: of the per-token cross-entropy (not with renormalize).
            renormalize: each step's softmax runs over the tokens that continue the prefix to a catalog SID, in the
                loss and in beam search / sampling / GRPO (as transformers' `renormalize_logits=True`); otherwise over
                the whole vocabulary (TIGER, `prefix_allowed_tokens_fn`).
            item_loss_weight: weight of a full-catalog softmax loss on the generator's item-level scores (user vector ·
                item vector, `T5SIDGenerator(item_scores=True)`), added to the SID loss: item vectors are tied with the
                history input, so SASRec-style item memory trains both ends. 0 = SID loss only.
            rerank_weight: at validation/test, beam candidates are re-ranked by beam score + rerank_weight x item
                log-probability (`deepinterestgr.generate.rerank`); 0 = the beam's own order. Select it on valid
                (`benchmarks/bench_beauty_quality.py` sweeps it on one beam search).
            exclude_history: at validation/test, drop the user's history items from the ranked list (they become
                padding at its end): a no-repeat rule, for catalogs where a target is (almost) never a history item
                (5-core Amazon: never). Select it on valid.
            beam_size: constrained beam width for validation and test.
            dense_candidates: at test (and when served), join the beam's candidates with the top-M items by
                item-level score that the beam missed, each scored by the generator's own SID log-probability
                (LIGER's union of generative and dense retrieval; needs item-level scores). 0 = the beam's candidates
                only. Validation (checkpoint selection) ranks the beam's candidates alone. Select M on valid
                (`benchmarks/bench_beauty_quality.py --dense`).
            prior, prior_weight: a **hybrid** ranking: at test (and when served) each candidate's score gains
                prior_weight x log p_prior(item | history) of an item-to-item count model (`CooccurrencePrior`, the
                co-occurrence floor as a distribution), fitted at setup on the training targets and saved in the
                checkpoint. Validation (checkpoint selection) ranks without it. 0 = the generator alone. Select
                prior_weight on valid (`benchmarks/bench_beauty_quality.py --prior-weights`).
            prior_candidates: with the prior, the candidates are also joined by its top-M items outside the user's
                history that the beam missed, each scored by the generator's own SID log-probability (as dense
                candidates). 0 = none.
            ks: the K of Recall@K / NDCG@K.
            monitor, early_stopping_patience: metric for the best checkpoint and early stopping (0 = no stopping).
            dump_test_results: write per-user top-K items and scores to `<run>/generate/results_test.jsonl`.
        """
        super().__init__()
        if schedule not in ("inverse_sqrt", "cosine", "constant"):
            raise ValueError(f"schedule must be inverse_sqrt, cosine or constant; got {schedule!r}")
        if renormalize and label_smoothing:
            raise ValueError("label_smoothing would spread mass onto tokens that renormalize=True excludes; set one")
        if (item_loss_weight or rerank_weight) and not getattr(generator, "has_item_scores", False):
            raise ValueError(f"item_loss_weight / rerank_weight need a generator with item-level scores; "
                             f"{type(generator).__name__} has none (T5SIDGenerator: set item_scores: true)")
        if item_loss_weight < 0 or rerank_weight < 0:
            raise ValueError("item_loss_weight and rerank_weight must be >= 0, "
                             f"got {item_loss_weight}, {rerank_weight}")
        if dense_candidates and not getattr(generator, "has_item_scores", False):
            raise ValueError(f"dense_candidates needs a generator with item-level scores; "
                             f"{type(generator).__name__} has none (T5SIDGenerator: set item_scores: true)")
        if (prior_weight or prior_candidates) and prior is None:
            raise ValueError(f"prior_weight {prior_weight} / prior_candidates {prior_candidates} need an item prior: "
                             "set model.init_args.prior (configs/model/cooccurrence_prior.yaml) or both to 0")
        self.ranker = Ranker(renormalize=renormalize, beam_size=beam_size, rerank_weight=rerank_weight,
                             exclude_history=exclude_history, ks=tuple(ks), dense_candidates=dense_candidates,
                             prior_weight=prior_weight, prior_candidates=prior_candidates)
        self.ranker.prior = prior
        # the generator stays in hparams (its class_path + init_args when built by the CLI) so that
        # load_from_checkpoint can rebuild it; its weights are in the state dict. Evaluation knobs are left out:
        # `test --ckpt_path` re-applies checkpoint hparams over the command line, and these must follow the command.
        # The prior is fitted data, not a setting: it travels as its own checkpoint entry (CHECKPOINT_PRIOR_KEY).
        save_plugin_hparams(self, "generator",  # checkpoints hold configs, never pickled objects
                            ignore=("beam_size", "rerank_weight", "exclude_history", "dense_candidates", "prior",
                                    "prior_weight", "prior_candidates", "dump_test_results"))
        self.generator = generator
        self.dump_test_results = dump_test_results
        self.tokenizer: SIDTokenizer | None = None
        #: the ranking options a loaded checkpoint was evaluated with (None for a fresh module or an old checkpoint)
        self.recorded_ranking: dict | None = None

    # ----------------------------------------------------------------------------------------------- sizing
    def set_tokenizer(self, tokenizer: SIDTokenizer) -> None:
        """Attach the SID tokenizer and build the generator's vocabulary-sized layers from it."""
        self.tokenizer = tokenizer
        self.ranker.set_tokenizer(tokenizer)
        self.generator.build(vocab_size=tokenizer.vocab_size, sid_length=tokenizer.sid_length)

    def configure_model(self) -> None:
        if self.tokenizer is not None or self._trainer is None:
            # outside a Trainer (load_from_checkpoint) the checkpoint's tokenizer builds it in on_load_checkpoint
            return
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None or getattr(dm, "tokenizer", None) is None:
            raise RuntimeError("GeneratorModule needs a datamodule with a SID tokenizer (SequenceDataModule)")
        self.set_tokenizer(dm.tokenizer)

    def setup(self, stage: str) -> None:
        prior = self.ranker.prior
        if prior is None or prior.fitted or self._trainer is None:
            return
        dm = getattr(self.trainer, "datamodule", None)
        split, tokenizer = getattr(dm, "split", None), getattr(dm, "tokenizer", None)
        if split is None or tokenizer is None:
            raise RuntimeError("fitting the item prior needs a set-up SequenceDataModule (its split and SID table)")
        # every user's items[:-2], the data every row of the benchmark tables is fitted on
        prior.fit(train_sequences(split.items, split.starts, split.lengths, num_items=tokenizer.num_items),
                  num_items=tokenizer.num_items)
        log.info("fitted the item prior %s on %d users' training sequences", prior.config(), len(split.users))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_TOKENIZER_KEY] = self.tokenizer.state()
        checkpoint["sid_table_sha256"] = sid_table_hash(self.tokenizer)
        # the ranking this generator was evaluated with: a policy started from it ranks the same way by default
        checkpoint[RANKING_KEY] = self.ranker.options()
        if self.ranker.prior is not None and self.ranker.prior.fitted:
            checkpoint[CHECKPOINT_PRIOR_KEY] = self.ranker.prior.state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self.tokenizer is None and CHECKPOINT_TOKENIZER_KEY in checkpoint:
            self.set_tokenizer(SIDTokenizer.from_state(checkpoint[CHECKPOINT_TOKENIZER_KEY]))
        self.recorded_ranking = checkpoint.get(RANKING_KEY)
        if CHECKPOINT_PRIOR_KEY in checkpoint:
            self.ranker.prior = CooccurrencePrior.from_state(checkpoint[CHECKPOINT_PRIOR_KEY])

    @property
    def trie(self) -> SIDTrie:
        return self.ranker.trie(self.device)

    def use_recorded_ranking(self) -> "GeneratorModule":
        """Rank as the loaded checkpoint was evaluated (its beam, re-ranking weight, no-repeat rule). Not applied by
        `load_from_checkpoint` itself: under `dig test --ckpt_path` the command line's options must win."""
        for key in ("beam_size", "rerank_weight", "exclude_history", "dense_candidates", "prior_weight",
                    "prior_candidates"):
            if self.recorded_ranking and key in self.recorded_ranking:
                setattr(self, key, self.recorded_ranking[key])
        return self

    # evaluation knobs live in the ranker; these read and set them there
    beam_size = property(lambda self: self.ranker.beam_size, lambda self, v: setattr(self.ranker, "beam_size", int(v)))
    rerank_weight = property(lambda self: self.ranker.rerank_weight,
                             lambda self, v: setattr(self.ranker, "rerank_weight", float(v)))
    exclude_history = property(lambda self: self.ranker.exclude_history,
                               lambda self, v: setattr(self.ranker, "exclude_history", bool(v)))
    dense_candidates = property(lambda self: self.ranker.dense_candidates,
                                lambda self, v: setattr(self.ranker, "dense_candidates", int(v)))
    prior_weight = property(lambda self: self.ranker.prior_weight,
                            lambda self, v: setattr(self.ranker, "prior_weight", float(v)))
    prior_candidates = property(lambda self: self.ranker.prior_candidates,
                                lambda self, v: setattr(self.ranker, "prior_candidates", int(v)))

    # ----------------------------------------------------------------------------------------------- training
    def forward(self, history: torch.Tensor, history_mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.generator(history, history_mask, target)

    @property
    def item_tokens(self) -> torch.Tensor:
        """SID tokens [N, S] of every catalog item, on the module's device."""
        return self.ranker.item_tokens(self.device)

    def _losses(self, batch: dict) -> dict[str, torch.Tensor]:
        """{"loss": total, "sid_loss": ..., "item_loss": ... (with item_loss_weight)}."""
        if "position_targets" in batch:  # every row of each window predicts its next item (causal generators)
            logits, users, (b, t) = self.generator.teacher_forced_positions(
                batch["history"], batch["history_mask"], batch["position_targets"])
            target, target_item = batch["position_targets"][b, t], batch["position_target_items"][b, t]
        else:
            logits, users = self.generator.teacher_forced(batch["history"], batch["history_mask"], batch["target"])
            target, target_item = batch["target"], batch["target_item"]
        logits = logits.float()
        if self.hparams.renormalize:
            # catalog-normalised targets: each step's softmax runs over the tokens that continue the target's prefix to
            # a catalog SID, so the model spends no capacity on memorising which SIDs exist (the trie knows)
            logits = logits.masked_fill(~self.trie.path_masks(target), torch.finfo(logits.dtype).min)
        sid_loss = F.cross_entropy(logits.flatten(0, 1), target.flatten(), label_smoothing=self.hparams.label_smoothing)
        if not self.hparams.item_loss_weight:
            return {"loss": sid_loss}
        item_logits = users.float() @ self.generator.item_vectors(self.item_tokens).float().T
        item_loss = F.cross_entropy(item_logits, target_item)
        return {"loss": sid_loss + self.hparams.item_loss_weight * item_loss, "sid_loss": sid_loss,
                "item_loss": item_loss}

    def _loss(self, batch: dict) -> torch.Tensor:
        return self._losses(batch)["loss"]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        losses = self._losses(batch)
        n = len(batch["history"])
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=n)
        for name in ("sid_loss", "item_loss"):
            if name in losses:
                self.log(f"train/{name}", losses[name], batch_size=n)
        return losses["loss"]

    # ----------------------------------------------------------------------------------------------- evaluation
    def generate(self, history: torch.Tensor, history_mask: torch.Tensor, beam_size: int | None = None,
                 rerank_weight: float | None = None, exclude_history: bool | None = None,
                 dense_candidates: int | None = None, prior_weight: float | None = None,
                 prior_candidates: int | None = None):
        """The ranker's constrained beam search (SearchResult: tokens [B,K,S], scores [B,K], items [B,K]), joined by
        dense candidates, re-ranked by item-level scores and without history items as configured (arguments override
        the module's options)."""
        return self.ranker.rank(self.generator, history, history_mask, beam_size=beam_size,
                                rerank_weight=rerank_weight, exclude_history=exclude_history,
                                dense_candidates=dense_candidates, prior_weight=prior_weight,
                                prior_candidates=prior_candidates)

    def history_items(self, history: torch.Tensor, history_mask: torch.Tensor) -> torch.Tensor:
        """Item ids [B, H] of the history rows (-1 for padding and user-token rows)."""
        return self.ranker.history_items(history, history_mask)

    @torch.no_grad()
    def item_log_probs(self, history: torch.Tensor, history_mask: torch.Tensor) -> torch.Tensor:
        """Item-level log-probabilities [B, N] over the whole catalog (generators with item-level scores)."""
        return self.ranker.item_log_probs(self.generator, history, history_mask)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        # targets outside the SID table (SequenceDataModule(unknown_items="drop")) have no SID to score a loss on;
        # they still count as misses in the ranking metrics
        known = batch["target"][:, 0] != PAD
        if bool(known.all()):
            self.log("val/loss", self._loss(batch), batch_size=len(known), sync_dist=True)
        elif bool(known.any()):
            self.log("val/loss", self._loss({k: v[known] for k, v in batch.items()}), batch_size=int(known.sum()),
                     sync_dist=True)
        # checkpoint selection on the beam's own candidates: dense candidates roughly double a search's cost, which a
        # time-capped fit would pay at every validation (they apply at test, in `collect_candidates` and serving)
        # and without the item prior: selection measures the generator, not the hybrid
        self.ranker.update("val", self.generate(batch["history"], batch["history_mask"], dense_candidates=0,
                                                prior_weight=0.0, prior_candidates=0), batch["target_item"])

    def on_validation_epoch_end(self) -> None:
        self.ranker.log_validation(self, f"epoch {self.current_epoch} step {self.global_step}")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        result = self.generate(batch["history"], batch["history_mask"])
        self.ranker.update("test", result, batch["target_item"])
        if self.dump_test_results:
            self.ranker.record_test_rows(batch, result,
                                         getattr(getattr(self.trainer, "datamodule", None), "split", None))

    def on_test_epoch_end(self) -> None:
        values = self.ranker.compute("test", self.trainer.strategy if self._trainer else None)
        self.log_dict({k: v for k, v in values.items() if k != "test/num_users"})
        out_dir = self._output_dir()
        if out_dir is not None:
            self.ranker.write_test_outputs(
                out_dir, values, num_users=len(self.trainer.datamodule.split.examples["test"]), extra={},
                is_global_zero=self.trainer.is_global_zero,
                rank_suffix=f".rank{self.global_rank}" if self.trainer.world_size > 1 else "")
            log.info("wrote %s", out_dir / "metrics_test.json")
        self.ranker.test_rows = []

    def _output_dir(self) -> Path | None:
        dm = getattr(self.trainer, "datamodule", None)
        run_dir = getattr(dm, "run_dir", None)
        return Path(run_dir) / "generate" if run_dir is not None else None

    # ----------------------------------------------------------------------------------------------- optimisation
    def configure_optimizers(self):
        hp = self.hparams
        decay, no_decay = [], []
        for name, p in self.generator.named_parameters():
            (no_decay if p.ndim < 2 or "layer_norm" in name or name.endswith("bias") else decay).append(p)
        # fused: one kernel over all parameters; the per-parameter loop is ~6x slower on CPU for the large
        # identity table (65,536 x 128: 0.157 -> 0.026 s per step measured on Beauty, 1 thread)
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": hp.weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0}], lr=hp.lr, fused=True)
        total = max(1, int(self.trainer.estimated_stepping_batches)) if hp.schedule == "cosine" else 0
        warmup = max(1, hp.warmup_steps)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            if hp.schedule == "inverse_sqrt":
                return max(hp.min_lr_ratio, math.sqrt(warmup / (step + 1)))
            if hp.schedule == "cosine":
                progress = min(1.0, (step - warmup) / max(1, total - warmup))
                return hp.min_lr_ratio + (1 - hp.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
            return 1.0

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_callbacks(self):
        """Best + last checkpoints on the validation metric and early stopping (unless the trainer config has its own),
        and per-step reseeding for exact resume."""
        callbacks = list(self.trainer.callbacks) if self._trainer is not None else []
        out = [StepSeed()]  # dropout draws depend on (seed, step) only: a resumed fit equals an uninterrupted one
        if (self._trainer is not None and self.trainer.checkpoint_callback is not None
                and not user_configured_checkpoint(self.trainer)):
            out_dir = self._output_dir()
            if out_dir is not None:
                out.extend(best_and_last_checkpoints(out_dir / "checkpoints", self.hparams.monitor))
        if self.hparams.early_stopping_patience > 0 and not any(isinstance(c, EarlyStopping) for c in callbacks):
            out.append(EarlyStopping(monitor=self.hparams.monitor, mode="max",
                                     patience=self.hparams.early_stopping_patience))
        return out
