"""`dig items add`: new items get SIDs from the trained quantizer without retraining; versions are whole or absent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from deepinterestgr.artifacts import ArtifactError, atomic_write_jsonl, read_jsonl
from deepinterestgr.quantize.sid import NO_SUFFIX, SIDTable, assign_sids
from deepinterestgr.serve.items import add_items, place
from deepinterestgr.serve.versions import load_current, pointer_path

REPO = Path(__file__).resolve().parents[1]
TOPICS = {"nail polish": ["red", "pink", "glitter", "matte"], "face cream": ["night", "day", "spf 30", "retinol"],
          "shampoo": ["dry hair", "curly hair", "anti dandruff", "volume"],
          "perfume": ["floral", "citrus", "oud", "musk"]}


def _rows(prefix: str, n: int, offset: int = 0) -> list[dict]:
    topics = list(TOPICS.items())
    rows = []
    for k in range(n):
        topic, variants = topics[(k + offset) % len(topics)]
        rows.append({"source_id": f"{prefix}{k:04d}", "title": f"{variants[k % 4]} {topic} no. {k + offset}",
                     "categories": [f"Beauty > {topic.title()}"]})
    return rows


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A run with text evidence (packaged MiniLM) and a residual k-means quantizer (8 codes x 3 levels)."""
    from deepinterestgr.evidence.stage import run_evidence
    from deepinterestgr.evidence.text_encoders import PackagedMiniLMEncoder
    from deepinterestgr.quantize.stage import run_quantize

    run = tmp_path_factory.mktemp("items") / "run"
    atomic_write_jsonl(run / "data" / "catalog.jsonl", ({"item_id": i, **r} for i, r in enumerate(_rows("A", 64))))
    atomic_write_jsonl(run / "data" / "sequences.jsonl",
                       ({"user": f"u{u}", "items": [(u + j) % 64 for j in range(5)]} for u in range(20)))
    run_evidence(str(run), text_encoder=PackagedMiniLMEncoder(), batch_size=32)
    configs = [str(REPO / c) for c in ("configs/trainer/cpu.yaml", "configs/trainer/quantize_cpu.yaml",
                                       "configs/model/quantizer_rqkmeans.yaml", "configs/data/embeddings.yaml")]
    run_quantize(str(run), configs=configs, overrides=[
        "--model.quantizer.init_args.codebook_size", "8", "--data.batch_size", "64",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"])
    return run


def test_new_items_get_unique_sids_old_ones_keep_theirs_and_bad_rows_are_counted_and_kept(trained_run, tmp_path):
    run = trained_run
    before = SIDTable.load(run / "quantize")
    new = _rows("N", 5, offset=1)
    lines = [json.dumps(r) for r in new[:3]] + [
        "{not json",
        json.dumps({"source_id": "A0003", "title": "a duplicate of a catalog item"}),
        json.dumps({"source_id": "N9999", "title": 5}),
        json.dumps({"source_id": "N9998", "colour": "red"}),
        json.dumps(new[3]),
    ]
    path = tmp_path / "new.jsonl"
    path.write_text("\n".join(lines) + "\n")

    summary = add_items(str(run), str(path))

    assert summary["version"] == 1 and summary["added"] == 4 and summary["num_items"] == 68
    assert summary["skipped"] == 4 and sum(summary["skipped_by_reason"].values()) == 4
    version = load_current(run, before)
    assert version.version == 1 and version.trained_items == 64 and version.num_items == 68
    assert torch.equal(version.table.full()[:64], before.full()), "old items must keep their SIDs"
    version.table.check_unique()
    assert [it.source_id for it in version.catalog[64:]] == ["N0000", "N0001", "N0002", "N0003"]
    assert [it.item_id for it in version.catalog[64:]] == [64, 65, 66, 67]
    skipped = list(read_jsonl(version.path / "skipped.jsonl"))
    assert [s["line"] for s in skipped] == [4, 5, 6, 7]
    assert "already in the catalog" in skipped[1]["reason"] and "title must be a string" in skipped[2]["reason"]
    assert (version.path / "evidence" / "text_embeddings.safetensors").exists()

    # a second add builds on the first; an item already added is a duplicate now
    path.write_text(json.dumps(new[4]) + "\n" + json.dumps(new[0]) + "\n")
    summary = add_items(str(run), str(path))
    assert summary["version"] == 2 and summary["added"] == 1 and summary["skipped"] == 1
    assert json.loads(pointer_path(run).read_text())["dir"] == "v0002"
    assert load_current(run, before).num_items == 69


def test_new_item_codes_are_the_quantizers_own(trained_run, tmp_path):
    """An item identical to a catalog item gets that item's first L-1 codes and, the last code being taken, another
    last code (distinct_last_level), never a duplicate SID."""
    from safetensors.torch import load_file

    run = trained_run
    catalog = [json.loads(x) for x in (run / "data" / "catalog.jsonl").read_text().splitlines()]
    twin = {k: v for k, v in catalog[10].items() if k != "item_id"} | {"source_id": "TWIN"}
    path = tmp_path / "twin.jsonl"
    path.write_text(json.dumps(twin) + "\n")
    add_items(str(run), str(path))
    version = load_current(run, SIDTable.load(run / "quantize"))
    base = load_file(str(run / "evidence" / "text_embeddings.safetensors"))["embeddings"][10]
    added = load_file(str(version.path / "evidence" / "text_embeddings.safetensors"))["embeddings"][0]
    assert torch.allclose(base, added, atol=1e-5), "the same text must embed the same way (same plugin, same args)"
    original, new = version.table.full()[10], version.table.full()[-1]
    assert torch.equal(new[:2], original[:2]) and new[2] != original[2] and new[3] == NO_SUFFIX


def test_placement_takes_the_nearest_free_last_code_then_a_suffix_within_the_vocabulary():
    table = assign_sids(torch.tensor([[0, 0, 0], [0, 0, 1], [1, 0, 0]]), codebook_size=2)
    prefix = torch.tensor([[0, 0], [0, 0], [1, 0]])
    dist = torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    codes, suffix, problems = place(table, prefix, dist, distinct=True, suffix_capacity=0)
    full = ("codes [0, 0, 0] are taken and the generator's vocabulary has 0 suffix tokens; retrain (quantize + "
            "generate) to add it")
    assert problems == [full, full, None]
    assert codes[2].tolist() == [1, 0, 1] and suffix[2] == NO_SUFFIX  # prefix (1, 0) had code 1 free
    codes, suffix, problems = place(table, prefix, dist, distinct=True, suffix_capacity=2)
    assert problems == [None, None, None]
    assert suffix[:2].tolist() == [0, 1] and codes[:2].tolist() == [[0, 0, 0], [0, 0, 0]]


def test_missing_inputs_name_the_file(trained_run, tmp_path):
    with pytest.raises(ArtifactError, match="new.jsonl: file not found"):
        add_items(str(trained_run), str(tmp_path / "new.jsonl"))
    bare = tmp_path / "bare"
    (tmp_path / "x.jsonl").write_text(json.dumps({"source_id": "Z1", "title": "z"}) + "\n")
    SIDTable.load(trained_run / "quantize").save(bare / "quantize")
    atomic_write_jsonl(bare / "data" / "catalog.jsonl", [])
    with pytest.raises(ArtifactError, match="catalog.jsonl: 0 items but the model's SID table has 64"):
        add_items(str(bare), str(tmp_path / "new.jsonl").replace("new.jsonl", "x.jsonl"))
    atomic_write_jsonl(bare / "data" / "catalog.jsonl", read_jsonl(trained_run / "data" / "catalog.jsonl"))
    with pytest.raises(ArtifactError, match="quantizer.ckpt"):
        add_items(str(bare), str(tmp_path / "x.jsonl"))


def test_the_cli_runs_items_add(trained_run, tmp_path, capsys):
    from deepinterestgr.cli.main import main

    path = tmp_path / "cli.jsonl"
    path.write_text(json.dumps({"source_id": "CLI1", "title": "citrus perfume travel size"}) + "\n")
    assert main(["items", "add", "--run-dir", str(trained_run), "--items", str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["added"] == 1 and out["skipped"] == 0


def test_items_without_text_are_placed_through_the_runs_attribute_svd(tmp_path):
    """A Sports-like run (attribute ids + co-occurrence, no text): new items' attribute vectors are folded into the
    trained catalog's attribute space, so a new item with a catalog item's attributes gets that item's vector."""
    from safetensors.torch import load_file

    from deepinterestgr.data.prepare import prepare_dataset
    from deepinterestgr.evidence.attributes import AttributeSVD
    from deepinterestgr.evidence.collaborative import CooccurrenceSVD
    from deepinterestgr.evidence.stage import run_evidence
    from deepinterestgr.quantize.stage import run_quantize

    # a P5-format catalog (1-based item ids, no item text) with brand + category attribute ids
    raw, run = tmp_path / "raw", tmp_path / "run"
    raw.mkdir()
    brands, cats = [f"b{i}" for i in range(8)], [f"c{i}" for i in range(4)]
    (raw / "Cat.txt").write_text("".join(f"{u + 1} " + " ".join(str((u + 3 * j) % 48 + 1) for j in range(5)) + "\n"
                                         for u in range(48)))
    (raw / "Cat_item2attributes.json").write_text(json.dumps(
        {str(i + 1): [brands[i % 8], cats[i % 4], cats[(i // 4) % 4]] for i in range(48)}))
    prepare_dataset(str(run), reader="p5", data_root=str(raw), category="Cat", kcore=0,
                    reader_args={"attribute_file": "Cat_item2attributes.json"})
    catalog = [json.loads(x) for x in (run / "data" / "catalog.jsonl").read_text().splitlines()]
    five = next(r for r in catalog if r["source_id"] == "6")  # P5 item 6 = the sixth item above
    run_evidence(str(run), collaborative=CooccurrenceSVD(dim=4), attributes=AttributeSVD(dim=6))
    configs = [str(REPO / c) for c in ("configs/trainer/cpu.yaml", "configs/trainer/quantize_cpu.yaml",
                                       "configs/model/quantizer_rqkmeans.yaml",
                                       "configs/data/embeddings_attributes_collab.yaml")]
    run_quantize(str(run), configs=configs, overrides=[
        "--model.quantizer.init_args.codebook_size", "8", "--data.batch_size", "48",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"])
    before = SIDTable.load(run / "quantize")
    twin = {"source_id": "NEW-TWIN", "attributes": five["attributes"]}
    stranger = {"source_id": "NEW-STRANGER", "attributes": ["brand never seen"]}
    path = tmp_path / "new.jsonl"
    path.write_text(json.dumps(twin) + "\n" + json.dumps(stranger) + "\n")

    summary = add_items(str(run), str(path))

    assert summary["added"] == 2 and summary["skipped"] == 0
    version = load_current(run, before)
    assert torch.equal(version.table.full()[:48], before.full()) and version.num_items == 50
    version.table.check_unique()
    base = load_file(str(run / "evidence" / "attribute_embeddings.safetensors"))["embeddings"]
    added = load_file(str(version.path / "evidence" / "attribute_embeddings.safetensors"))["embeddings"]
    assert torch.allclose(added[0], base[five["item_id"]], atol=1e-4), "the twin lands on its item's attribute vector"
    assert added[1].abs().sum() == 0, "attribute ids the catalog never held carry no signal"
    assert not (version.path / "evidence" / "text_embeddings.safetensors").exists()
