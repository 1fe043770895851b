"""QuantizerModule: trains any quantizer plugin (and the CMSA fusion head) with Lightning, then writes the SID table.

Input widths come from the datamodule in `setup` and are stored in the hyper-parameters, so `load_from_checkpoint`
rebuilds the same shapes. The quantizer stays a constructor argument typed by its contract (its class_path is kept in
the checkpoint). Gradient-free quantizers (`trainable = False`) are fitted on the whole table in `on_fit_start` and
run a single epoch.
"""

from __future__ import annotations

import logging
import time

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import OptimizerCallable

from deepinterestgr.init_args import save_plugin_hparams
from deepinterestgr.quantize.artifacts import write_quantize_artifacts
from deepinterestgr.quantize.base import Quantizer
from deepinterestgr.quantize.datamodule import EmbeddingDataModule
from deepinterestgr.quantize.fusion import CMSAFusion
from deepinterestgr.quantize.metrics import code_table_metrics
from deepinterestgr.training import Seeded, StepSeed

__all__ = ["EmbeddingDataModule", "QuantizerModule"]

log = logging.getLogger(__name__)


class QuantizerModule(Seeded, LightningModule):
    """Item vectors -> L codes per item.

    Args (keyword-only):
        quantizer: any registered `Quantizer` (e.g. `class_path: RQVAE`).
        optimizer: optimiser factory (default AdamW, lr 1e-3); unused for gradient-free quantizers.
        image_proj_dim: width of W_v's output when image features are used (CMSA fusion).
        fusion_input_weight: weight of the fusion head's own objective, reconstructing the text and image inputs
            from the fused vector (`CMSAFusion.input_reconstruction_loss`); 0 turns it off.
        fusion_through_quantizer: let the quantizer's loss train W_v/W_f too. Off by default: that loss is
            minimised by a constant fused vector, and the head collapses onto it (see `deepinterestgr.quantize.fusion`).
        min_perplexity_share: a level whose code perplexity is below this share of min(codebook size, items) is
            flagged as collapsed (warning, `metrics.json` `collapsed_levels`, red title in `report.png`).
        refresh_every_n_epochs: how often the whole table is re-encoded to log usage / collisions and to call
            `quantizer.refresh` (dead-code restarts).
        write_artifacts: at the end of `fit`, write `<run>/quantize/` (SID table, metrics, report, manifest).
        input_dim, image_dim: derived from the data in `setup`; set only by checkpoints.
    """

    def __init__(
        self,
        *,
        quantizer: Quantizer,
        optimizer: OptimizerCallable | None = None,
        image_proj_dim: int = 128,
        fusion_input_weight: float = 1.0,
        fusion_through_quantizer: bool = False,
        min_perplexity_share: float = 0.1,
        refresh_every_n_epochs: int = 1,
        write_artifacts: bool = True,
        input_dim: int | None = None,
        image_dim: int | None = None,
    ) -> None:
        super().__init__()
        save_plugin_hparams(self, "quantizer")  # checkpoints hold configs, never pickled objects
        self.quantizer = quantizer
        self.optimizer_factory = optimizer
        self.fusion: CMSAFusion | None = None
        self._fit_started: float | None = None
        if input_dim is not None:
            self._build(input_dim, image_dim)

    # ----------------------------------------------------------------------------------------------- building
    def _build(self, input_dim: int, image_dim: int | None) -> None:
        if image_dim is not None and self.fusion is None:
            self.fusion = CMSAFusion(text_dim=input_dim, image_dim=image_dim,
                                     image_proj_dim=self.hparams.image_proj_dim)
            if not self.quantizer.trainable:
                log.warning("%s is gradient-free: the CMSA fusion head (W_v, W_f) gets no training signal and "
                            "keeps its init (text passes through, image features add a fixed random projection)",
                            type(self.quantizer).__name__)
        self.quantizer.build(self.fusion.out_dim if self.fusion is not None else input_dim)

    def setup(self, stage: str) -> None:
        dm = self._datamodule()
        dm.setup(stage)
        text_dim, image_dim = dm.text_dim, dm.image_dim
        if self.hparams.input_dim is None:
            self.hparams.input_dim, self.hparams.image_dim = text_dim, image_dim
            self._build(text_dim, image_dim)
        elif (self.hparams.input_dim, self.hparams.image_dim) != (text_dim, image_dim):
            raise ValueError(
                f"this quantizer was built for text width {self.hparams.input_dim} / "
                f"image width {self.hparams.image_dim} but {dm.run_dir} has {text_dim} / {image_dim}; "
                "train a new quantizer for these embeddings"
            )

    def _datamodule(self) -> EmbeddingDataModule:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if not isinstance(dm, EmbeddingDataModule):
            raise TypeError("QuantizerModule needs an EmbeddingDataModule (trainer.fit(model, datamodule=...)); "
                            f"got {type(dm).__name__}")
        return dm

    # ----------------------------------------------------------------------------------------------- forward
    def fuse(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Quantizer input [B, D]: the text embedding, or the CMSA fusion of text and image features."""
        if self.fusion is None:
            return batch["text"]
        if "image" not in batch:
            raise ValueError("this quantizer was trained with image features; set data.use_image_features: true")
        return self.fusion(batch["text"], batch["image"])

    def forward(self, batch: dict[str, torch.Tensor]):
        return self.quantizer(self.fuse(batch))

    def _training_loss(self, batch: dict[str, torch.Tensor]):
        """Quantizer output and the training loss: the quantizer's own, plus the fusion head's input reconstruction."""
        if self.fusion is None:
            out = self.quantizer(batch["text"])
            return out, out.loss, {}
        fused = self.fuse(batch)
        out = self.quantizer(fused if self.hparams.fusion_through_quantizer else fused.detach())
        extra = {}
        loss = out.loss
        if self.hparams.fusion_input_weight:
            recon = self.fusion.input_reconstruction_loss(batch["text"], batch["image"], fused)
            loss = loss + self.hparams.fusion_input_weight * recon
            extra["fusion_input_recon"] = recon.detach()
        return out, loss, extra

    @torch.no_grad()
    def encode_table(self) -> torch.Tensor:
        """Codes [N, L] of every item, encoded at once in eval mode (balanced assignments see the whole table)."""
        was_training = self.training
        self.eval()
        table = {k: v.to(self.device) for k, v in self._datamodule().table().items()}
        codes = self.quantizer(self.fuse(table)).codes.cpu()
        self.train(was_training)
        return codes

    # ----------------------------------------------------------------------------------------------- training
    def on_fit_start(self) -> None:
        self._fit_started = time.perf_counter()
        if not bool(getattr(self.quantizer, "initialized", torch.tensor(False))):
            # k-means init (RQ-VAE) or the whole fit (RQ-KMeans) on the full table: same data and seed on every rank
            with torch.no_grad():
                table = {k: v.to(self.device) for k, v in self._datamodule().table().items()}
                self.quantizer.fit(self.fuse(table))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int):
        out, loss, extra = self._training_loss(batch)
        bs = batch["text"].shape[0]
        for name, value in {**out.metrics, **extra}.items():
            self.log(f"train/{name}", value, on_step=False, on_epoch=True, batch_size=bs, sync_dist=True)
        if not self.quantizer.trainable:
            return None
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=bs, sync_dist=True)
        return loss

    def on_train_epoch_end(self) -> None:
        # gradient-free quantizers were fitted in on_fit_start: one epoch of metrics is all there is
        last_epoch = not self.quantizer.trainable or (
            self.trainer.max_epochs is not None and self.current_epoch + 1 >= self.trainer.max_epochs)
        if (self.current_epoch + 1) % max(1, self.hparams.refresh_every_n_epochs) and not last_epoch:
            return
        if self.quantizer.trainable and not last_epoch:
            with torch.no_grad():
                table = {k: v.to(self.device) for k, v in self._datamodule().table().items()}
                for name, value in self.quantizer.refresh(self.fuse(table)).items():
                    self.log(f"quantize/{name}", value, rank_zero_only=True)
        stats = code_table_metrics(self.encode_table(), self.quantizer.codebook_size)
        self.log("quantize/collision_rate", stats["collision_rate"], prog_bar=True)
        for level, (used, ppl) in enumerate(zip(stats["usage"], stats["perplexity"])):
            self.log(f"quantize/usage_l{level}", float(used))
            self.log(f"quantize/perplexity_l{level}", ppl)
        if not self.quantizer.trainable:
            self.trainer.should_stop = True

    def configure_optimizers(self):
        if not self.quantizer.trainable:
            return None
        params = [p for p in self.parameters() if p.requires_grad]
        if self.optimizer_factory is None:
            return torch.optim.AdamW(params, lr=1e-3)
        return self.optimizer_factory(params)

    def configure_callbacks(self):
        """Per-step reseeding, and `<run>/quantize/checkpoints/last.ckpt` every epoch so an interrupted fit resumes
        (`run_quantize` continues from it when the config is unchanged) -- unless the config brings its own."""
        out = [StepSeed()]
        if self._trainer is None or self.trainer.checkpoint_callback is None or not self.hparams.write_artifacts:
            return out
        if any(isinstance(c, ModelCheckpoint) and (c.monitor or c.dirpath) for c in self.trainer.callbacks):
            return out
        dm = getattr(self.trainer, "datamodule", None)
        if isinstance(dm, EmbeddingDataModule):
            # no monitor + top-1: the newest epoch overwrites `last.ckpt` (Lightning's save_last needs a top-k save)
            out.append(ModelCheckpoint(dirpath=dm.run_dir / "quantize" / "checkpoints", filename="last", save_top_k=1,
                                       enable_version_counter=False))
        return out

    # ----------------------------------------------------------------------------------------------- artifacts
    def on_fit_end(self) -> None:
        if not self.hparams.write_artifacts or self.trainer.sanity_checking:
            return
        dm = self._datamodule()
        out_dir = dm.run_dir / "quantize"
        codes = self.encode_table()  # every rank: identical weights, identical codes
        ckpt = "checkpoints/quantizer.ckpt"
        self.trainer.save_checkpoint(out_dir / ckpt)
        if self.trainer.is_global_zero:
            seconds = time.perf_counter() - self._fit_started if self._fit_started else None
            write_quantize_artifacts(
                out_dir, codes, codebook_size=self.quantizer.codebook_size,
                extra_files=[ckpt],
                min_perplexity_share=self.hparams.min_perplexity_share,
                meta={"quantizer": type(self.quantizer).__name__, "fit_seconds": seconds,
                      "epochs": self.current_epoch, "world_size": self.trainer.world_size},
            )
        self.trainer.strategy.barrier("quantize_artifacts")
