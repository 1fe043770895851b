"""Collaborative item embeddings: the cooccurrence-svd source, the evidence stage's `collaborative` role (training
interactions only), and the quantize input fusion text ⊕ collaborative (configs/data/embeddings_collab.yaml).
The contract check of every registered collaborative_source runs in tests/test_evidence_contracts.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from deepinterestgr.artifacts import (
    ArtifactError,
    atomic_write_jsonl,
    read_jsonl,
    read_manifest,
    verify_manifest,
    write_manifest,
)
from deepinterestgr.evidence.collaborative import CooccurrenceSVD, training_sequences
from deepinterestgr.evidence.stage import run_evidence
from deepinterestgr.evidence.text_encoders import PackagedMiniLMEncoder
from deepinterestgr.quantize.datamodule import EmbeddingDataModule

REPO = Path(__file__).resolve().parents[1]
COLLAB_ONLY = dict(collaborative=CooccurrenceSVD(dim=8))


def cosine(emb: torch.Tensor, a: int, b: int) -> float:
    return float(torch.nn.functional.cosine_similarity(emb[a], emb[b], dim=0))


@pytest.mark.parametrize("weighting", ["ppmi", "degree"])
def test_items_that_always_co_occur_are_closer_than_items_that_never_do(weighting):
    # two communities joined by a few bridging users; every user of the first buys items 0 and 1 together, item 9
    # belongs to the second and never meets item 0
    g = torch.Generator().manual_seed(0)
    first, second = list(range(2, 8)), list(range(9, 16))

    def pick(pool: list[int], n: int) -> list[int]:
        return [pool[int(i)] for i in torch.randint(len(pool), (n,), generator=g)]

    seqs = []
    for u in range(60):
        seq = pick(first, 2) + [0, 1] + pick(first, 2) if u % 2 == 0 else pick(second, 4)
        seqs.append(pick(first, 2) + pick(second, 2) if u % 10 == 3 else seq)
    assert not any(0 in s and 9 in s for s in seqs)
    emb = CooccurrenceSVD(dim=4, window=2, weighting=weighting).embed(seqs, 17)
    assert emb.shape == (17, 4) and emb.dtype == torch.float32
    assert emb[8].abs().sum() == 0 and emb[16].abs().sum() == 0, "items never seen get zero rows"
    assert torch.allclose(emb[:8].norm(dim=1), torch.ones(8), atol=1e-5)
    assert cosine(emb, 0, 1) > 0.9
    assert cosine(emb, 0, 1) > cosine(emb, 0, 9) + 0.5


def test_svd_is_deterministic_and_leaves_the_global_rng_alone():
    seqs = [[0, 1, 2, 3], [1, 2, 4], [3, 4, 0, 5]]
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = CooccurrenceSVD(dim=3, seed=7).embed(seqs, 6)
    assert torch.equal(torch.rand(3), before), "the SVD must not consume the caller's random stream"
    assert torch.equal(a, CooccurrenceSVD(dim=3, seed=7).embed(seqs, 6))


def test_bad_settings_are_refused():
    for kwargs in ({"dim": 0}, {"window": 0}, {"weighting": "tfidf"}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            CooccurrenceSVD(**kwargs)


# ------------------------------------------------------------------------------------------------ evidence stage
@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A tiny synthetic catalog (data stage only, no images), copied by every test below."""
    from deepinterestgr.data.prepare import prepare_dataset

    run = tmp_path_factory.mktemp("prepared")
    prepare_dataset(str(run), reader="synthetic", kcore=0, min_interactions=3,
                    reader_args={"num_items": 60, "num_users": 80, "render_images": False})
    return run / "data"


def new_run(tmp_path: Path, data: Path, name: str = "run") -> Path:
    shutil.copytree(data, tmp_path / name / "data")
    return tmp_path / name


def rewrite_sequences(run: Path, edit) -> None:
    """Apply `edit(rows)` to data/sequences.jsonl and re-sign the data manifest (as `dig data prepare` would)."""
    data = run / "data"
    rows = list(read_jsonl(data / "sequences.jsonl"))
    edit(rows)
    atomic_write_jsonl(data / "sequences.jsonl", rows)
    manifest = read_manifest(data)
    write_manifest(data, "data", list(manifest["files"]),
                   **{k: v for k, v in manifest.items() if k not in ("stage", "schema_version", "files")})


def collab(run: Path) -> bytes:
    return (run / "evidence" / "collab_embeddings.safetensors").read_bytes()


def test_valid_and_test_targets_change_nothing(prepared, tmp_path):
    run = new_run(tmp_path, prepared)
    run_evidence(str(run), **COLLAB_ONLY)
    before = collab(run)
    num_items = len(list(read_jsonl(run / "data" / "catalog.jsonl")))

    def move_targets(rows):  # user 0's valid and test targets become other items
        items = rows[0]["items"]
        items[-2], items[-1] = (items[-2] + 7) % num_items, (items[-1] + 13) % num_items

    rewrite_sequences(run, move_targets)
    run_evidence(str(run), **COLLAB_ONLY)
    assert collab(run) == before, "the valid/test targets leaked into the collaborative embeddings"

    def move_a_training_item(rows):  # positive control: the test is able to see a change
        rows[0]["items"][0] = (rows[0]["items"][0] + 5) % num_items

    rewrite_sequences(run, move_a_training_item)
    run_evidence(str(run), **COLLAB_ONLY)
    assert collab(run) != before


def test_training_sequences_drop_the_last_two_items():
    from deepinterestgr.data.schema import UserSequence

    assert training_sequences([UserSequence("u", [4, 5, 6, 7]), UserSequence("v", [1, 2, 3])]) == [[4, 5], [1]]


def test_stage_writes_text_and_collaborative_embeddings_in_the_manifest(prepared, tmp_path):
    run = new_run(tmp_path, prepared)
    summary = run_evidence(str(run), text_encoder=PackagedMiniLMEncoder(),
                           collaborative=CooccurrenceSVD(dim=16, window=2))
    ev = run / "evidence"
    manifest = verify_manifest(ev, "evidence")
    assert {"text_embeddings.safetensors", "collab_embeddings.safetensors"} <= set(manifest["files"])
    assert manifest["plugins"]["collaborative"]["describe"]["dim"] == 16
    assert manifest["sequences_sha256"]
    emb = load_file(ev / "collab_embeddings.safetensors")["embeddings"]
    text = load_file(ev / "text_embeddings.safetensors")["embeddings"]
    assert emb.shape == (text.shape[0], 16) and emb.dtype == torch.float32
    stats = summary["collaborative"]
    assert stats["zero_rows"] == int((emb.abs().sum(dim=1) == 0).sum()) < emb.shape[0]
    assert manifest["summary"]["collaborative"] == stats

    # text_encoder null: collaborative alone, and the previous run's text embeddings do not linger
    run_evidence(str(run), **COLLAB_ONLY)
    manifest = verify_manifest(ev, "evidence")
    assert "text_embeddings.safetensors" not in manifest["files"] and not (ev / "text_embeddings.safetensors").exists()
    assert "collab_embeddings.safetensors" in manifest["files"]


def test_stage_refuses_no_embeddings_and_short_users(prepared, tmp_path):
    run = new_run(tmp_path, prepared)
    with pytest.raises(ValueError, match="all null"):
        run_evidence(str(run), **{**COLLAB_ONLY, "collaborative": None})
    rewrite_sequences(run, lambda rows: rows[3].update(items=rows[3]["items"][:2],
                                                       timestamps=rows[3]["timestamps"][:2]))
    with pytest.raises(ArtifactError, match=r"sequences.jsonl: .*>= 3 interactions.*min_interactions"):
        run_evidence(str(run), **COLLAB_ONLY)


# ------------------------------------------------------------------------------------------------ quantize input
def write_evidence(run: Path, *, text: torch.Tensor | None, collab: torch.Tensor) -> Path:
    (run / "evidence").mkdir(parents=True, exist_ok=True)
    if text is not None:
        save_file({"embeddings": text}, str(run / "evidence/text_embeddings.safetensors"))
    save_file({"embeddings": collab}, str(run / "evidence/collab_embeddings.safetensors"))
    return run


def test_datamodule_fuses_normalised_text_and_weighted_collaborative(tmp_path):
    g = torch.Generator().manual_seed(0)
    collab = torch.randn(6, 4, generator=g) * 3
    collab[2] = 0  # an item without collaborative signal
    run = write_evidence(tmp_path / "run", text=torch.randn(6, 5, generator=g) * 2, collab=collab)
    dm = EmbeddingDataModule(run_dir=str(run), use_collaborative=True, collaborative_weight=0.5)
    dm.setup("fit")
    x = dm.table()["text"]
    assert x.shape == (6, 9) and dm.text_dim == 9 and dm.num_items == 6
    assert torch.allclose(x[:, :5].norm(dim=1), torch.ones(6), atol=1e-5)
    norms = x[:, 5:].norm(dim=1)
    assert norms[2] == 0 and torch.allclose(norms[[0, 1, 3, 4, 5]], torch.full((5,), 0.5), atol=1e-5)
    assert [p.name for p in dm.input_files] == ["text_embeddings.safetensors", "collab_embeddings.safetensors"]

    plain = EmbeddingDataModule(run_dir=str(run))
    plain.setup("fit")
    assert plain.text_dim == 5 and [p.name for p in plain.input_files] == ["text_embeddings.safetensors"]

    (run / "evidence/text_embeddings.safetensors").unlink()  # collaborative alone
    with pytest.raises(ArtifactError, match="set data.use_collaborative: true"):
        EmbeddingDataModule(run_dir=str(run)).setup("fit")
    alone = EmbeddingDataModule(run_dir=str(run), use_collaborative=True)
    alone.setup("fit")
    assert alone.text_dim == 4 and [p.name for p in alone.input_files] == ["collab_embeddings.safetensors"]
    assert torch.allclose(alone.table()["text"][0].norm(), torch.tensor(1.0))


def test_datamodule_errors_name_the_file(tmp_path):
    run = write_evidence(tmp_path / "run", text=torch.randn(6, 5), collab=torch.randn(5, 4))
    with pytest.raises(ArtifactError, match=r"collab_embeddings.safetensors: 5 rows but text_embeddings"):
        EmbeddingDataModule(run_dir=str(run), use_collaborative=True).setup("fit")
    (run / "evidence/collab_embeddings.safetensors").unlink()
    with pytest.raises(ArtifactError, match=r"collab_embeddings.safetensors: not found.*evidence"):
        EmbeddingDataModule(run_dir=str(run), use_collaborative=True).setup("fit")
    with pytest.raises(ValueError, match="collaborative_weight"):
        EmbeddingDataModule(run_dir=str(run), use_collaborative=True, collaborative_weight=-1.0)


def test_collab_config_fits_a_quantizer_through_the_stage(tmp_path):
    from deepinterestgr.quantize.sid import SIDTable
    from deepinterestgr.quantize.stage import run_quantize

    configs = [str(REPO / c) for c in ("configs/trainer/cpu.yaml", "configs/trainer/quantize_cpu.yaml",
                                       "configs/model/quantizer_rqkmeans.yaml", "configs/data/embeddings_collab.yaml")]
    g = torch.Generator().manual_seed(0)
    run = write_evidence(tmp_path / "run", text=torch.randn(120, 8, generator=g),
                         collab=torch.randn(120, 6, generator=g))
    small = ["--model.quantizer.init_args.codebook_size", "8", "--data.batch_size", "64",
             "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    metrics = run_quantize(str(run), configs=configs, overrides=small)
    assert SIDTable.load(run / "quantize").num_items == 120 and metrics["num_sids_unique"] == 120
    manifest = json.loads((run / "quantize" / "manifest.json").read_text())
    stamp = (run / "quantize" / "manifest.json").stat().st_mtime_ns
    run_quantize(str(run), configs=configs, overrides=small)  # same inputs: up to date
    assert (run / "quantize" / "manifest.json").stat().st_mtime_ns == stamp
    save_file({"embeddings": torch.randn(120, 6, generator=g)}, str(run / "evidence/collab_embeddings.safetensors"))
    run_quantize(str(run), configs=configs, overrides=small)  # new collaborative embeddings: retrained
    assert json.loads((run / "quantize" / "manifest.json").read_text())["config_hash"] != manifest["config_hash"]
