"""`<run>/quantize/`: SID table, metrics.json, report.png and the stage manifest."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from deepinterestgr.artifacts import atomic_path, atomic_write_json, write_manifest
from deepinterestgr.quantize.metrics import (
    code_table_metrics,
    collapsed_levels,
    collision_rate,
    group_sizes,
    level_perplexity,
)
from deepinterestgr.quantize.sid import SIDTable, assign_sids

log = logging.getLogger(__name__)

STAGE = "quantize"
METRICS_FILE, REPORT_FILE = "metrics.json", "report.png"
#: default `min_perplexity_share`: a level below a tenth of its possible perplexity has collapsed
MIN_PERPLEXITY_SHARE = 0.1


def write_report(path: Path, codes: torch.Tensor, codebook_size: int, collapsed: list[int] = ()) -> None:
    """Code usage per level (codes sorted by frequency, perplexity in the title, red when the level collapsed) and
    the histogram of collision-group sizes."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    levels = codes.shape[1]
    perplexity = level_perplexity(codes, codebook_size)
    fig, axes = plt.subplots(1, levels + 1, figsize=(4 * (levels + 1), 3.2))
    for level in range(levels):
        counts = torch.bincount(codes[:, level], minlength=codebook_size).sort(descending=True).values
        ax = axes[level]
        ax.bar(range(codebook_size), counts.numpy(), width=1.0)
        title = f"level {level}: {int((counts > 0).sum())}/{codebook_size} codes, perplexity {perplexity[level]:.1f}"
        if level in collapsed:
            ax.set_title("COLLAPSED " + title, color="red")
        else:
            ax.set_title(title)
        ax.set_xlabel("code (by frequency)")
        ax.set_ylabel("items")
    sizes = group_sizes(codes)
    ax = axes[-1]
    ax.hist(sizes.numpy(), bins=range(1, int(sizes.max()) + 2), log=True, align="left")
    colliding = float(sizes[sizes > 1].sum()) / max(1, codes.shape[0])
    title = f"items per {levels}-code prefix ({colliding:.1%} collide)"
    if levels > 1:
        title += f"\n{levels - 1}-code prefix: {collision_rate(codes[:, :-1]):.1%} collide"
    ax.set_title(title)
    ax.set_xlabel("group size (1 = no collision)")
    ax.set_ylabel("prefixes")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def write_quantize_artifacts(out_dir: str | Path, codes: torch.Tensor, *, codebook_size: int,
                             record: dict | None = None, extra_files: list[str] = (), meta: dict | None = None,
                             min_perplexity_share: float = MIN_PERPLEXITY_SHARE) -> dict:
    """Assign SIDs (suffix only for colliding items) and write table, metrics, report and manifest. Returns metrics.

    `record` (`artifacts.stage_record`) goes into the manifest; without it the manifest vouches for the files only,
    and the stage is not current until one is added (`run_quantize` does after the module's fit).

    Levels whose perplexity is below `min_perplexity_share` of min(codebook size, items) are listed in
    `metrics["collapsed_levels"]`, logged as a warning and drawn in red in the report."""
    out_dir = Path(out_dir)
    codes = codes.long().cpu()
    table = assign_sids(codes, codebook_size=codebook_size, meta=dict(meta or {}))
    table.check_unique()
    metrics = code_table_metrics(codes, codebook_size)
    metrics |= {"num_sids_unique": int(torch.unique(table.full(), dim=0).shape[0]), "num_suffix": table.num_suffix,
                "codebook_size": codebook_size, "num_levels": table.num_levels, **(meta or {})}
    metrics["min_perplexity_share"] = min_perplexity_share
    metrics["collapsed_levels"] = collapsed = collapsed_levels(metrics, min_perplexity_share)
    if collapsed:
        log.warning("quantize: codebook collapse at level(s) %s: perplexity %s of at most %d (threshold %.0f%%); the "
                    "SIDs carry little information there. Check the quantizer's input for near-identical vectors "
                    "(e.g. a fusion head trained only through the quantizer), or use fewer codes per level",
                    collapsed, [round(metrics["perplexity"][level], 2) for level in collapsed],
                    min(codebook_size, metrics["num_items"]), 100 * min_perplexity_share)
    files = table.save(out_dir)
    atomic_write_json(out_dir / METRICS_FILE, metrics)
    write_report(out_dir / REPORT_FILE, codes, codebook_size, collapsed)
    # the SID table is reproducible under the same thread count only (see the evidence manifest)
    write_manifest(out_dir, STAGE, [*files, METRICS_FILE, REPORT_FILE, *extra_files], **(record or {}),
                   torch_num_threads=torch.get_num_threads())
    log.info("quantize: %d items, collision rate %.4f (prefixes %s), usage %s, perplexity %s -> %s",
             metrics["num_items"], metrics["collision_rate"], [round(c, 4) for c in metrics["prefix_collision_rate"]],
             metrics["usage"], [round(p, 1) for p in metrics["perplexity"]], out_dir)
    return metrics


def load_sid_table(run_dir: str | Path) -> SIDTable:
    """The SID table of a run (what the generator stage reads)."""
    return SIDTable.load(Path(run_dir) / STAGE)
