"""SASRec (Kang & McAuley 2018) as a LightningModule: causal self-attention over item-id histories, full softmax.

Ids are shifted by one inside the model so 0 is padding; sequences are left-padded to `max_len`, so the last
position always holds the newest item and its output scores the next one. Training uses every position of each
user's training sequence (items[:-2]) as a next-item example; validation and test score the last position of the
valid/test history with Recall@K / NDCG@K over the whole catalog (history items not masked), and early stopping
selects on valid NDCG@10.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import NamedTuple

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, Dataset

from deepinterestgr.baselines.base import check_sequences
from deepinterestgr.baselines.evaluation import DEFAULT_KS
from deepinterestgr.generate.metrics import retrieval_metrics
from deepinterestgr.training import EpochBatchSampler

log = logging.getLogger(__name__)

PAD = 0
IGNORE = -100  # cross-entropy ignore_index for padded target positions
MONITOR = "valid/ndcg@10"


def left_pad(items: Sequence[int], length: int) -> torch.Tensor:
    """Shifted ids (item + 1) of the last `length` items, left-padded with PAD: [length] long."""
    items = list(items)[-length:]
    return torch.tensor([PAD] * (length - len(items)) + [i + 1 for i in items], dtype=torch.long)


class NextItemBatch(NamedTuple):
    """inputs [B, L] shifted ids (PAD = 0, left-padded); targets [B, L] item ids (training, IGNORE at padding)
    or [B] item ids (evaluation: the item after the last input position)."""

    inputs: torch.Tensor
    targets: torch.Tensor


class TrainSequences(Dataset):
    """One row per user: inputs seq[:-1] and next-item targets seq[1:], the last `max_len` positions."""

    def __init__(self, sequences: Sequence[Sequence[int]], *, max_len: int) -> None:
        self.sequences = [list(s) for s in sequences if len(s) >= 2]
        self.max_len = max_len

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, index: int) -> NextItemBatch:
        seq = self.sequences[index][-(self.max_len + 1) :]
        targets = torch.full((self.max_len,), IGNORE, dtype=torch.long)
        if len(seq) > 1:
            targets[self.max_len - len(seq) + 1 :] = torch.tensor(seq[1:], dtype=torch.long)
        return NextItemBatch(left_pad(seq[:-1], self.max_len), targets)


class EvalExamples(Dataset):
    """(history, target) pairs of one split; histories are cut to the last `max_len` items."""

    def __init__(self, histories: Sequence[Sequence[int]], targets: Sequence[int], *, max_len: int) -> None:
        if len(histories) != len(targets):
            raise ValueError(f"{len(histories)} histories but {len(targets)} targets")
        self.histories, self.targets, self.max_len = histories, targets, max_len

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> NextItemBatch:
        return NextItemBatch(left_pad(self.histories[index], self.max_len), torch.tensor(self.targets[index]))


def _collate(rows: list[NextItemBatch]) -> NextItemBatch:
    """Stack rows and drop the leading columns that are padding in every row (most histories are far shorter than
    max_len; positions count from the right, so a trimmed batch means the same as the padded one)."""
    inputs, targets = torch.stack([r.inputs for r in rows]), torch.stack([r.targets for r in rows])
    used = (inputs != PAD).any(0).nonzero()
    start = int(used[0]) if len(used) else inputs.shape[1] - 1
    return NextItemBatch(inputs[:, start:], targets[:, start:] if targets.ndim == 2 else targets)


class SASRec(L.LightningModule):
    """Item embeddings (tied with the output layer) + learned positions + `num_blocks` pre-norm causal blocks."""

    def __init__(
        self,
        *,
        num_items: int,
        max_len: int = 20,
        hidden_size: int = 64,
        num_blocks: int = 2,
        num_heads: int = 1,
        dropout: float = 0.3,
        lr: float = 2e-3,
        weight_decay: float = 0.0,
        ks: Sequence[int] = DEFAULT_KS,
    ) -> None:
        super().__init__()
        if num_items < 1 or max_len < 1:
            raise ValueError(f"num_items and max_len must be >= 1, got {num_items}, {max_len}")
        self.save_hyperparameters()
        self.num_items, self.max_len, self.ks = num_items, max_len, tuple(ks)
        self.item_embedding = nn.Embedding(num_items + 1, hidden_size, padding_idx=PAD)
        self.position_embedding = nn.Embedding(max_len, hidden_size)
        self.dropout = nn.Dropout(dropout)
        block = nn.TransformerEncoderLayer(
            hidden_size, num_heads, dim_feedforward=hidden_size, dropout=dropout, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(block, num_blocks, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(hidden_size)
        nn.init.normal_(self.item_embedding.weight, std=hidden_size**-0.5)
        with torch.no_grad():
            self.item_embedding.weight[PAD].zero_()
        self.valid_metrics = nn.ModuleDict(retrieval_metrics(self.ks))
        self.test_metrics = nn.ModuleDict(retrieval_metrics(self.ks))

    def attention_mask(self, inputs: torch.Tensor) -> torch.Tensor:
        """[B * heads, L, L] bool, True = blocked: future positions and padding keys; a position always sees itself
        (so the all-padding rows at the front never softmax over nothing)."""
        length = inputs.shape[1]
        future = torch.ones(length, length, dtype=torch.bool, device=inputs.device).triu(1)
        blocked = future[None] | (inputs == PAD)[:, None, :]
        blocked &= ~torch.eye(length, dtype=torch.bool, device=inputs.device)[None]
        return blocked.repeat_interleave(self.hparams.num_heads, dim=0)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Hidden states [B, L, hidden] of left-padded shifted ids `inputs` [B, L <= max_len]; the newest (last)
        position always gets position embedding max_len - 1."""
        length = inputs.shape[1]
        if length > self.max_len:
            raise ValueError(f"inputs hold {length} positions but this SASRec was built for max_len={self.max_len}")
        positions = torch.arange(self.max_len - length, self.max_len, device=inputs.device)
        x = self.item_embedding(inputs) * self.hparams.hidden_size**0.5 + self.position_embedding(positions)[None]
        x = self.dropout(x) * (inputs != PAD).unsqueeze(-1)
        return self.final_norm(self.blocks(x, mask=self.attention_mask(inputs)))

    def item_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores [..., num_items] of every catalog item (tied output embeddings, PAD row excluded)."""
        return hidden @ self.item_embedding.weight[1:].T

    def training_step(self, batch: NextItemBatch, batch_idx: int) -> torch.Tensor:
        real = batch.targets != IGNORE  # the full softmax is the cost: score only positions with a next item
        logits = self.item_logits(self(batch.inputs)[real])
        loss = nn.functional.cross_entropy(logits, batch.targets[real])
        self.log("train/loss", loss, prog_bar=True, batch_size=batch.inputs.shape[0])
        return loss

    @torch.no_grad()
    def top_k(self, inputs: torch.Tensor, k: int) -> torch.Tensor:
        """Top-k item ids [B, k] after the last (newest) position of `inputs` [B, L]."""
        return self.item_logits(self(inputs)[:, -1]).topk(k, dim=-1).indices

    def _evaluate(self, batch: NextItemBatch, metrics: nn.ModuleDict, split: str) -> None:
        top = self.top_k(batch.inputs, min(max(self.ks), self.num_items))  # a tiny catalog ranks all its items
        for name, metric in metrics.items():
            metric.update(top, batch.targets)
            self.log(f"{split}/{name}", metric, on_step=False, on_epoch=True, prog_bar=name == "ndcg@10")

    def validation_step(self, batch: NextItemBatch, batch_idx: int) -> None:
        self._evaluate(batch, self.valid_metrics, "valid")

    def on_validation_epoch_end(self) -> None:
        # progress for background runs without a progress bar (compute() does not reset the logged metrics)
        if self.trainer.state.fn == "fit" and not self.trainer.sanity_checking:
            log.info("epoch %d valid %s", self.current_epoch,
                     {name: round(float(m.compute()), 4) for name, m in self.valid_metrics.items()})

    def test_step(self, batch: NextItemBatch, batch_idx: int) -> None:
        self._evaluate(batch, self.test_metrics, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)


class SASRecResult(NamedTuple):
    valid: dict[str, float]
    test: dict[str, float]
    best_checkpoint: str
    epochs: int  # epochs trained
    stopped_by: str  # "early stopping", "time limit" or "max_epochs"


def fit_sasrec(
    *,
    train_sequences: Sequence[Sequence[int]],
    valid: tuple[Sequence[Sequence[int]], Sequence[int]],
    test: tuple[Sequence[Sequence[int]], Sequence[int]],
    num_items: int,
    out_dir: str | Path,
    seed: int = 42,
    max_epochs: int = 50,
    patience: int = 5,
    batch_size: int = 256,
    eval_batch_size: int = 1024,
    max_steps: int = -1,
    max_minutes: float | None = None,
    enable_progress_bar: bool = False,
    **model_kwargs,
) -> SASRecResult:
    """Train on `train_sequences`, early-stop on valid NDCG@10, then score the best checkpoint on valid and test.

    `valid`/`test` are (histories, targets). Checkpoints and TensorBoard logs go under `out_dir`. `max_minutes`
    stops training gracefully after that much wall time (the best checkpoint so far is then scored), so a time box
    on a shared machine still yields a result.
    """
    for what, seqs in (("SASRec training", train_sequences), ("SASRec valid", valid[0]), ("SASRec test", test[0])):
        check_sequences(seqs, num_items, what=what)
    L.seed_everything(seed, workers=True, verbose=False)
    model = SASRec(num_items=num_items, **model_kwargs)
    max_len = model.max_len
    train_set = TrainSequences(train_sequences, max_len=max_len)
    # length-bucketed batches (shuffled at the batch level): Beauty histories average ~7 items, so a batch padded to
    # its longest member (up to max_len 50) would spend most of the encoder on padding
    lengths = torch.tensor([min(len(s) - 1, max_len) for s in train_set.sequences])
    train_loader = DataLoader(
        train_set, batch_sampler=EpochBatchSampler(len(train_set), batch_size=batch_size, seed=seed, lengths=lengths),
        collate_fn=_collate,
    )
    valid_loader = DataLoader(EvalExamples(*valid, max_len=max_len), batch_size=eval_batch_size, collate_fn=_collate)
    test_loader = DataLoader(EvalExamples(*test, max_len=max_len), batch_size=eval_batch_size, collate_fn=_collate)
    out_dir = Path(out_dir)
    early_stop = EarlyStopping(monitor=MONITOR, mode="max", patience=patience)
    # a rerun overwrites best.ckpt instead of leaving an older run's file beside best-v1.ckpt
    checkpoint = ModelCheckpoint(dirpath=out_dir / "checkpoints", filename="best", monitor=MONITOR, mode="max",
                                 save_top_k=1, enable_version_counter=False)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=max_epochs,
        max_steps=max_steps,
        max_time=None if max_minutes is None else timedelta(minutes=max_minutes),
        callbacks=[early_stop, checkpoint],
        logger=L.pytorch.loggers.TensorBoardLogger(out_dir, name="tensorboard"),
        enable_progress_bar=enable_progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=True,
    )
    trainer.fit(model, train_loader, valid_loader)
    best = checkpoint.best_model_path
    if not best:
        raise RuntimeError(f"SASRec produced no checkpoint under {out_dir / 'checkpoints'} (did training run?)")
    log.info("SASRec best checkpoint %s (valid %s = %.4f)", best, MONITOR, float(checkpoint.best_model_score))
    valid_metrics = trainer.validate(model, valid_loader, ckpt_path=best, verbose=False)[0]
    test_metrics = trainer.test(model, test_loader, ckpt_path=best, verbose=False)[0]
    return SASRecResult(
        valid={k.split("/", 1)[1]: float(v) for k, v in valid_metrics.items()},
        test={k.split("/", 1)[1]: float(v) for k, v in test_metrics.items()},
        best_checkpoint=str(best),
        epochs=trainer.current_epoch,
        stopped_by=_stop_reason(early_stop, trainer, max_epochs),
    )


def _stop_reason(early_stop: EarlyStopping, trainer: L.Trainer, max_epochs: int) -> str:
    if early_stop.stopped_epoch:
        return "early stopping"
    return "max_epochs" if trainer.current_epoch >= max_epochs else "time limit"


def sasrec_top_k(model: SASRec, histories: Sequence[Sequence[int]], *, k: int, batch_size: int = 1024,
                 exclude_history: bool = False) -> torch.Tensor:
    """Top-k item ids [U, k] of a trained SASRec for arbitrary histories (oldest first); with `exclude_history`, the
    items of the (last max_len) history are never recommended."""
    check_sequences(histories, model.num_items, what="SASRec histories")
    model.eval()
    out = []
    for b in range(0, len(histories), batch_size):
        inputs = torch.stack([left_pad(h, model.max_len) for h in histories[b : b + batch_size]]).to(model.device)
        if not exclude_history:
            out.append(model.top_k(inputs, k).cpu())
            continue
        with torch.no_grad():
            logits = model.item_logits(model(inputs)[:, -1])
        seen = torch.zeros_like(logits, dtype=torch.bool)
        rows, cols = (inputs != PAD).nonzero(as_tuple=True)
        seen[rows, inputs[rows, cols] - 1] = True
        out.append(logits.masked_fill(seen, float("-inf")).topk(k, dim=-1).indices.cpu())
    return torch.cat(out) if out else torch.empty(0, k, dtype=torch.long)
