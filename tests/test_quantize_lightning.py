"""QuantizerModule + EmbeddingDataModule through the real CLI path (`run_lightning`) and the shipped config files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from deepinterestgr.artifacts import ArtifactError, verify_manifest
from deepinterestgr.cli.lightning import run_lightning
from deepinterestgr.quantize.datamodule import EmbeddingDataModule
from deepinterestgr.quantize.module import QuantizerModule
from deepinterestgr.quantize.sid import SIDTable
from deepinterestgr.quantize.stage import run_quantize

REPO = Path(__file__).resolve().parents[1]
CPU = [str(REPO / "configs/trainer/cpu.yaml"), str(REPO / "configs/trainer/quantize_cpu.yaml")]
RQVAE_CFG, RQKMEANS_CFG = (str(REPO / "configs/model/quantizer_rqvae.yaml"),
                           str(REPO / "configs/model/quantizer_rqkmeans.yaml"))
DATA_CFG = str(REPO / "configs/data/embeddings.yaml")
SMALL = ["--model.quantizer.init_args.codebook_size", "16", "--data.batch_size", "64",
         "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def make_run(root: Path, *, n: int = 200, d: int = 16, image_dim: int | None = None, seed: int = 0) -> Path:
    g = torch.Generator().manual_seed(seed)
    (root / "evidence").mkdir(parents=True, exist_ok=True)
    text = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=-1)
    save_file({"embeddings": text}, str(root / "evidence/text_embeddings.safetensors"))
    if image_dim:
        image = torch.randn(n, image_dim, generator=g)
        image[::7] = 0  # items without an image
        save_file({"features": image}, str(root / "evidence/image_features.safetensors"))
    return root


def fit_args(run: Path, model_cfg: str, *extra: str) -> list[str]:
    configs = [x for c in (*CPU, model_cfg, DATA_CFG) for x in ("-c", c)]
    return ["fit", *configs, "--data.run_dir", str(run), "--trainer.default_root_dir", str(run / "quantize"),
            *SMALL, *extra]


def check_artifacts(run: Path, n: int) -> dict:
    out = run / "quantize"
    verify_manifest(out, "quantize")
    table = SIDTable.load(out)
    assert table.num_items == n and table.num_levels == 3
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_sids_unique"] == n
    assert metrics["collision_rate"] == pytest.approx(table.collision_rate())
    assert (out / "report.png").stat().st_size > 1000
    return metrics


@pytest.mark.parametrize("model_cfg", [RQVAE_CFG, RQKMEANS_CFG], ids=["rqvae", "rqkmeans"])
def test_fast_dev_run_fit_writes_sid_artifacts(tmp_path, model_cfg):
    run = make_run(tmp_path / "run")
    cli = run_lightning(fit_args(run, model_cfg, "--trainer.fast_dev_run", "true"))
    assert cli.model.hparams.input_dim == 16 and cli.model.hparams.image_dim is None
    metrics = check_artifacts(run, 200)
    assert len(metrics["usage"]) == 3 and all(1 <= u <= 16 for u in metrics["usage"])


def test_bf16_mixed_fit(tmp_path):
    run = make_run(tmp_path / "run")
    run_lightning(fit_args(run, RQVAE_CFG, "--trainer.fast_dev_run", "true", "--data.use_image_features", "false",
                           "--trainer.precision", "bf16-mixed"))
    check_artifacts(run, 200)


def test_rqkmeans_stops_after_one_epoch(tmp_path):
    run = make_run(tmp_path / "run")
    run_lightning(fit_args(run, RQKMEANS_CFG, "--trainer.max_epochs", "5"))
    assert check_artifacts(run, 200)["epochs"] == 1


def test_image_fusion_trains_wv_wf_its_readout_and_the_quantizer_and_reloads_from_checkpoint(tmp_path):
    run = make_run(tmp_path / "run", image_dim=10)
    cli = run_lightning(fit_args(run, RQVAE_CFG, "--data.use_image_features", "true", "--trainer.max_epochs", "2"))
    model = cli.model
    assert model.hparams.image_dim == 10 and model.fusion is not None
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == ({"fusion.w_v.weight", "fusion.w_f.weight", "fusion.readout.weight"}
                         | {f"quantizer.{n}" for n, _ in model.quantizer.named_parameters()})
    assert model.fusion.w_v.weight.grad is not None  # the image branch learned from the input reconstruction
    check_artifacts(run, 200)

    # the checkpoint rebuilds the plugin from its class_path and the widths from the hyper-parameters
    loaded = QuantizerModule.load_from_checkpoint(run / "quantize/checkpoints/quantizer.ckpt")
    assert type(loaded.quantizer).__name__ == "RQVAE" and loaded.hparams.input_dim == 16
    dm = EmbeddingDataModule(run_dir=str(run), use_image_features=True)
    dm.setup("predict")
    loaded.eval()
    with torch.no_grad():
        codes = loaded.quantizer(loaded.fuse(dm.table())).codes
    assert torch.equal(codes, SIDTable.load(run / "quantize").codes)


def test_sids_deterministic_for_a_fixed_seed(tmp_path):
    tables = []
    for name in ("a", "b"):
        run = make_run(tmp_path / name)
        run_lightning(fit_args(run, RQVAE_CFG, "--trainer.max_epochs", "2"))
        tables.append(SIDTable.load(run / "quantize").full())
    assert torch.equal(*tables)


def test_run_quantize_skips_when_the_config_is_unchanged(tmp_path):
    from deepinterestgr.artifacts import is_current, read_manifest, sha256_file, write_manifest

    run = make_run(tmp_path / "run")
    write_manifest(run / "evidence", "evidence", ["text_embeddings.safetensors"])
    overrides = [*SMALL, "--trainer.max_epochs", "1"]
    first = run_quantize(str(run), configs=[*CPU, RQKMEANS_CFG, DATA_CFG], overrides=overrides)
    manifest = run / "quantize/manifest.json"
    stamp = manifest.stat().st_mtime_ns
    # the manifest records the resolved config, seed included, and the hashes of what the stage read
    recorded = read_manifest(run / "quantize")
    assert recorded["config"]["seed_everything"] == 42  # configs/trainer/cpu.yaml
    assert recorded["config"]["model"]["init_args"]["quantizer"]["init_args"]["codebook_size"] == 16
    assert recorded["inputs"] == {"evidence": sha256_file(run / "evidence/manifest.json"),
                                  "evidence/text_embeddings.safetensors":
                                      sha256_file(run / "evidence/text_embeddings.safetensors")}
    assert is_current(run / "quantize", "quantize", recorded["config"], recorded["inputs"])
    assert not is_current(run / "quantize", "quantize", {**recorded["config"], "seed_everything": 7},
                          recorded["inputs"])
    assert not is_current(run / "quantize", "quantize", recorded["config"], {**recorded["inputs"], "evidence": "0"})
    assert run_quantize(str(run), configs=[*CPU, RQKMEANS_CFG, DATA_CFG], overrides=overrides) == first
    assert manifest.stat().st_mtime_ns == stamp
    # another setting -> another record -> retrained
    run_quantize(str(run), configs=[*CPU, RQKMEANS_CFG, DATA_CFG],
                 overrides=[*overrides, "--model.quantizer.init_args.seed", "1"])
    assert manifest.stat().st_mtime_ns != stamp
    # another seed alone -> retrained, and recorded
    stamp = manifest.stat().st_mtime_ns
    run_quantize(str(run), configs=[*CPU, RQKMEANS_CFG, DATA_CFG],
                 overrides=[*overrides, "--model.quantizer.init_args.seed", "1", "--seed_everything", "7"])
    assert manifest.stat().st_mtime_ns != stamp and read_manifest(run / "quantize")["config"]["seed_everything"] == 7
    # a rewritten upstream manifest (the evidence stage reran) -> retrained
    stamp = manifest.stat().st_mtime_ns
    write_manifest(run / "evidence", "evidence", ["text_embeddings.safetensors"], summary={"rerun": True})
    run_quantize(str(run), configs=[*CPU, RQKMEANS_CFG, DATA_CFG],
                 overrides=[*overrides, "--model.quantizer.init_args.seed", "1", "--seed_everything", "7"])
    assert manifest.stat().st_mtime_ns != stamp


def test_plain_python_fit_without_the_cli(tmp_path):
    from lightning.pytorch import Trainer

    from deepinterestgr.artifacts import verify_manifest
    from deepinterestgr.quantize.rqkmeans import RQKMeans

    run = make_run(tmp_path / "run")
    model = QuantizerModule(quantizer=RQKMeans(codebook_size=16, balanced=True, distinct_last_level=True))
    dm = EmbeddingDataModule(run_dir=str(run), batch_size=64)
    trainer = Trainer(accelerator="cpu", max_epochs=3, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer.fit(model, datamodule=dm)
    metrics = check_artifacts(run, 200)
    assert metrics["collision_rate"] == 0.0  # 200 items, 16 x 16 prefixes, distinct last level
    # the manifest vouches for the files; with no resolved config to record, it makes no claim to be current
    manifest = verify_manifest(run / "quantize", "quantize")
    assert manifest["files"] and not {"config", "inputs", "config_hash"} & set(manifest)


def test_missing_or_bad_embeddings_name_the_file_and_the_fix(tmp_path):
    dm = EmbeddingDataModule(run_dir=str(tmp_path))
    with pytest.raises(ArtifactError, match=r"text_embeddings.safetensors: not found.*evidence"):
        dm.setup("fit")
    (tmp_path / "evidence").mkdir()
    bad = torch.randn(5, 4)
    bad[3, 1] = float("nan")
    save_file({"embeddings": bad}, str(tmp_path / "evidence/text_embeddings.safetensors"))
    with pytest.raises(ArtifactError, match=r"NaN/inf \(first item ids \[3\]\)"):
        EmbeddingDataModule(run_dir=str(tmp_path)).setup("fit")


def test_shipped_quantize_configs_parse():
    for model_cfg in (RQVAE_CFG, RQKMEANS_CFG):
        args = [x for c in (*CPU, model_cfg, DATA_CFG) for x in ("-c", c)]
        cli = run_lightning([*args, "--data.run_dir", "unused"], run=False)
        assert isinstance(cli.model, QuantizerModule) and isinstance(cli.datamodule, EmbeddingDataModule)


DDP_SCRIPT = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(1)
    from deepinterestgr.cli.lightning import run_lightning
    run_lightning(sys.argv[1:])
""")


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path):
    run = make_run(tmp_path / "run", n=256)
    script = tmp_path / "ddp_fit.py"
    script.write_text(DDP_SCRIPT)
    args = fit_args(run, RQVAE_CFG, "--trainer.max_epochs", "2")
    args[args.index(CPU[0])] = str(REPO / "configs/trainer/ddp_cpu.yaml")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, str(script), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    metrics = check_artifacts(run, 256)
    assert metrics["world_size"] == 2


def make_clustered_run(root: Path, *, n: int = 300, d: int = 128, image_dim: int = 512, clusters: int = 16) -> Path:
    """Items in `clusters` latent groups that both the text embedding and the (non-negative, CNN-like) image features
    show through noise: the shape of the synthetic catalog's evidence, where the CMSA fusion head used to collapse."""
    g = torch.Generator().manual_seed(0)
    label = torch.randint(clusters, (n,), generator=g)
    text_centres, image_centres = torch.randn(clusters, d, generator=g), torch.randn(clusters, image_dim, generator=g)
    text = torch.nn.functional.normalize(text_centres[label] + 0.7 * torch.randn(n, d, generator=g), dim=-1)
    image = torch.relu(image_centres[label] + 0.7 * torch.randn(n, image_dim, generator=g))
    (root / "evidence").mkdir(parents=True, exist_ok=True)
    save_file({"embeddings": text}, str(root / "evidence/text_embeddings.safetensors"))
    save_file({"features": image}, str(root / "evidence/image_features.safetensors"))
    return root


def fused_mean_cosine(run: Path) -> float:
    model = QuantizerModule.load_from_checkpoint(run / "quantize/checkpoints/quantizer.ckpt")
    dm = EmbeddingDataModule(run_dir=str(run), use_image_features=True)
    dm.setup("predict")
    with torch.no_grad():
        fused = model.fuse(dm.table())
    cos = fused @ fused.T
    return float(cos[~torch.eye(len(fused), dtype=torch.bool)].mean())


def test_cmsa_fusion_keeps_every_level_in_use_and_the_guard_flags_the_old_collapse(tmp_path, caplog):
    epochs = ["--data.use_image_features", "true", "--trainer.max_epochs", "60"]
    healthy = make_clustered_run(tmp_path / "inputs_objective")
    run_lightning(fit_args(healthy, RQVAE_CFG, *epochs))
    metrics = check_artifacts(healthy, 300)
    assert metrics["collapsed_levels"] == []
    assert all(share > 0.5 for share in metrics["perplexity_share"]), metrics["perplexity"]  # of 16 codes per level
    assert metrics["prefix_collision_rate"][1] < 0.97  # two codes already separate some items
    assert fused_mean_cosine(healthy) < 0.5

    # the objective before the fix (the head trained only through the quantizer's reconstruction of its own output)
    # collapses on the same data, and the guard says so in the log and in metrics.json
    collapsed = make_clustered_run(tmp_path / "quantizer_only")
    with caplog.at_level("WARNING", logger="deepinterestgr.quantize.artifacts"):
        run_lightning(fit_args(collapsed, RQVAE_CFG, *epochs, "--model.fusion_through_quantizer", "true",
                               "--model.fusion_input_weight", "0"))
    metrics = json.loads((collapsed / "quantize/metrics.json").read_text())
    assert 0 in metrics["collapsed_levels"] and metrics["perplexity"][0] < 1.6
    assert fused_mean_cosine(collapsed) > 0.99
    assert any("codebook collapse at level(s) [0" in r.getMessage() for r in caplog.records)
