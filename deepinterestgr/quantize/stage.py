"""Plain-Python entry point of the quantize stage, for the `dig` CLI and the pipeline."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from deepinterestgr.artifacts import input_manifests, is_current, record_stage, sha256_file
from deepinterestgr.config_files import PACKAGE_CONFIGS
from deepinterestgr.quantize.artifacts import METRICS_FILE, STAGE
from deepinterestgr.training import resumable_checkpoint

log = logging.getLogger(__name__)

CONFIG_DIR = PACKAGE_CONFIGS
#: trainer / model / data fragments, composed in this order
DEFAULT_CONFIGS = (
    CONFIG_DIR / "trainer" / "cpu.yaml",
    CONFIG_DIR / "trainer" / "quantize_cpu.yaml",
    CONFIG_DIR / "model" / "quantizer_rqvae.yaml",
    CONFIG_DIR / "data" / "embeddings.yaml",
)


def run_quantize(run_dir: str, configs: list[str] | None = None, overrides: list[str] | None = None, *,
                 fresh: bool = False) -> dict:
    """Train the quantizer on `<run>/evidence` embeddings and write `<run>/quantize/`; returns its metrics.

    `configs`: LightningCLI config fragments (default: trainer/cpu + trainer/quantize_cpu + model/quantizer_rqvae +
    data/embeddings);
    `overrides`: extra CLI arguments such as `["--model.quantizer.init_args.num_levels", "4"]`.
    Skipped (metrics returned from disk) when `<run>/quantize/manifest.json` verifies and records the same resolved
    config and inputs (`is_current`); an interrupted fit of the same ones resumes from
    `<run>/quantize/checkpoints/last.ckpt`; `fresh` starts over.
    """
    from deepinterestgr.lightning_configs import resolved_config, run_lightning

    out_dir = Path(run_dir) / STAGE
    args: list[str] = []
    for c in configs or [str(p) for p in DEFAULT_CONFIGS]:
        args += ["-c", str(c)]
    args += ["--data.run_dir", str(run_dir)]
    overrides = list(overrides or [])
    if not any(o.startswith("--trainer.default_root_dir") for o in overrides):
        args += ["--trainer.default_root_dir", str(out_dir)]
    args += overrides
    # parse and instantiate without running, so the stage record can be checked before any training
    cli = run_lightning(args, run=False)
    cli.datamodule.setup("fit")
    config = resolved_config(cli)
    # the evidence manifest, and the files read by content too: embeddings put in place by hand have no manifest
    inputs = {**input_manifests(run_dir, ["evidence"]),
              **{f"evidence/{p.name}": sha256_file(p) for p in cli.datamodule.input_files if p.exists()}}
    if not fresh and is_current(out_dir, STAGE, config, inputs):
        log.info("quantize: %s is up to date, skipping", out_dir)
        return json.loads((out_dir / METRICS_FILE).read_text(encoding="utf-8"))
    # an interrupted fit of this very record continues from its last epoch; any other checkpoint is moved aside
    last = resumable_checkpoint(out_dir, config, inputs, fresh=fresh)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=str(last) if last else None)
    if not (out_dir / "manifest.json").exists():
        raise RuntimeError(f"quantize: training finished but {out_dir} has no manifest (write_artifacts off?)")
    if cli.trainer.is_global_zero:
        # the module's on_fit_end wrote the artifacts and their manifest; this records what made them
        record_stage(out_dir, STAGE, config, inputs)
    return json.loads((out_dir / METRICS_FILE).read_text(encoding="utf-8"))
