"""Catalogs without item text (the paper's Sports and Instruments): attribute ids read by the P5 reader, the
attribute-svd evidence source fused before quantization, and released SIDs (LETTER's index.json) imported as the
quantize stage's artifacts. The contract check of every attribute_source runs in tests/test_evidence_contracts.py."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from deepinterestgr.artifacts import ArtifactError, verify_manifest
from deepinterestgr.data.prepare import prepare_dataset
from deepinterestgr.data.readers.base import DataFormatError
from deepinterestgr.data.schema import Item
from deepinterestgr.evidence.attributes import AttributeSVD
from deepinterestgr.evidence.collaborative import CooccurrenceSVD
from deepinterestgr.evidence.stage import run_evidence
from deepinterestgr.quantize.datamodule import EmbeddingDataModule
from deepinterestgr.quantize.precomputed import import_sids
from deepinterestgr.quantize.sid import NO_SUFFIX, SIDTable

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------ P5 attributes
def write_p5(folder: Path, attributes: dict | str | None) -> Path:
    """Six users over items 1..6 (1-based P5 ids), no item file, optionally an item2attributes file."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["1 1 2 3 4", "2 2 3 4 5", "3 3 4 5 6", "4 1 3 5 6", "5 2 4 6 1", "6 6 5 4 3"]
    (folder / "Cat.txt").write_text("\n".join(lines) + "\n")
    if attributes is not None:
        text = attributes if isinstance(attributes, str) else json.dumps(attributes)
        (folder / "Cat_item2attributes.json").write_text(text)
    return folder


def prepare(tmp_path: Path, root: Path, **reader_args) -> tuple[dict, list[dict]]:
    run = tmp_path / "run"
    stats = prepare_dataset(str(run), reader="p5", data_root=str(root), category="Cat", kcore=0,
                            reader_args=reader_args)
    rows = [json.loads(line) for line in (run / "data" / "catalog.jsonl").read_text().splitlines()]
    return stats, rows


def test_the_p5_reader_fills_attributes_by_p5_id_and_counts_items_without_them(tmp_path):
    root = write_p5(tmp_path / "raw", {"1": [7, 2], "2": [7, 2, 2], "3": [9], "5": ["x"], "6": [9, 2]})
    stats, rows = prepare(tmp_path, root, attribute_file="Cat_item2attributes.json")
    by_source = {r["source_id"]: r.get("attributes") for r in rows}
    assert by_source == {"1": ["7", "2"], "2": ["7", "2"], "3": ["9"], "4": None, "5": ["x"], "6": ["9", "2"]}
    assert stats["skips"]["by_reason"]["no_attributes"] == 1
    assert stats["text_coverage"]["attributes"] == {"items": 5, "of": 6, "fraction": round(5 / 6, 6)}


def test_without_the_option_attributes_stay_out_of_the_catalog_bytes(tmp_path):
    root = write_p5(tmp_path / "raw", {"1": [7]})
    stats, rows = prepare(tmp_path, root)
    assert all("attributes" not in r for r in rows) and "attributes" not in stats["text_coverage"]
    assert Item(0, "a").to_json() == {"item_id": 0, "source_id": "a", "title": "", "description": "", "brand": "",
                                      "categories": [], "images": []}
    assert Item.from_json(Item(0, "a", attributes=["3"]).to_json()).attributes == ["3"]


def test_a_malformed_attribute_entry_is_an_error_in_strict_mode_and_a_counted_skip_otherwise(tmp_path):
    root = write_p5(tmp_path / "raw", {"1": [7], "2": "brand 7"})
    with pytest.raises(DataFormatError, match=r"Cat_item2attributes.json \(item 2\).*list of attribute ids"):
        prepare_dataset(str(tmp_path / "strict"), reader="p5", data_root=str(root), category="Cat", kcore=0,
                        strict=True, reader_args={"attribute_file": "Cat_item2attributes.json"})
    stats, rows = prepare(tmp_path, root, attribute_file="Cat_item2attributes.json")
    assert stats["skips"]["by_reason"]["corrupt_record"] == 1
    assert {r["source_id"]: r.get("attributes") for r in rows}["2"] is None
    with pytest.raises(DataFormatError, match="attribute file not found"):
        prepare(tmp_path / "other", root, attribute_file="missing.json")


# ------------------------------------------------------------------------------------------------ attribute-svd
def test_items_sharing_a_rare_attribute_are_closer_than_items_sharing_a_common_one():
    # every item holds "cat:all"; items 0 and 1 also share the rare brand "b:1"; item 2 only the common category
    attributes = [["cat:all", "b:1"], ["cat:all", "b:1"], ["cat:all", "cat:x"], ["cat:all", "b:2"],
                  ["cat:all", "cat:x", "b:2"], []]
    emb = AttributeSVD(dim=4).embed(attributes)
    assert emb.shape == (6, 4) and emb[5].abs().sum() == 0
    cos = torch.nn.functional.cosine_similarity
    assert cos(emb[0], emb[1], dim=0) > 0.99
    assert cos(emb[0], emb[1], dim=0) > cos(emb[0], emb[2], dim=0) + 0.3
    with pytest.raises(ValueError, match="weighting"):
        AttributeSVD(weighting="bm25")


def test_the_evidence_stage_writes_attribute_embeddings_and_quantize_fuses_them(tmp_path):
    root = write_p5(tmp_path / "raw", {str(i): [i % 2, 10 + i % 3] for i in range(1, 7)})
    prepare(tmp_path, root, attribute_file="Cat_item2attributes.json")
    run = tmp_path / "run"
    summary = run_evidence(str(run), collaborative=CooccurrenceSVD(dim=3), attributes=AttributeSVD(dim=2))
    ev = run / "evidence"
    manifest = verify_manifest(ev, "evidence")
    assert {"collab_embeddings.safetensors", "attribute_embeddings.safetensors"} <= set(manifest["files"])
    assert summary["attributes"]["distinct_attributes"] == 5 and summary["attributes"]["items_without_attributes"] == 0
    attr = load_file(ev / "attribute_embeddings.safetensors")["embeddings"]
    assert attr.shape == (6, 2)

    dm = EmbeddingDataModule(run_dir=str(run), use_collaborative=True, use_attributes=True, attribute_weight=0.5)
    dm.setup("fit")
    x = dm.table()["text"]
    assert x.shape == (6, 5)
    assert torch.allclose(x[:, 3:].norm(dim=1), torch.full((6,), 0.5), atol=1e-5)
    assert [p.name for p in dm.input_files] == ["collab_embeddings.safetensors", "attribute_embeddings.safetensors"]
    alone = EmbeddingDataModule(run_dir=str(run), use_attributes=True, attribute_weight=0.5)
    alone.setup("fit")  # one part alone: unit rows, the weight scales nothing
    assert torch.allclose(alone.table()["text"].norm(dim=1), torch.ones(6), atol=1e-5)
    with pytest.raises(ArtifactError, match="set data.use_collaborative: true"):
        EmbeddingDataModule(run_dir=str(run)).setup("fit")

    # an evidence run without the role does not leave a stale attribute file behind
    run_evidence(str(run), collaborative=CooccurrenceSVD(dim=3))
    assert not (ev / "attribute_embeddings.safetensors").exists()


def test_a_catalog_without_any_embedding_source_is_refused(tmp_path):
    prepare(tmp_path, write_p5(tmp_path / "raw", None))
    with pytest.raises(ValueError, match="all null"):
        run_evidence(str(tmp_path / "run"), text_encoder=None, intent_miner=None, quality_judge=None)


# ------------------------------------------------------------------------------------------------ released SIDs
def letter_run(tmp_path: Path, index: dict | str) -> tuple[Path, Path]:
    """A LETTER-format run of 6 items (source ids "0".."5") and an index file beside it."""
    raw = tmp_path / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    users = {str(u): [(u + k) % 6 for k in range(4)] for u in range(6)}
    (raw / "Cat.inter.json").write_text(json.dumps(users))
    path = raw / "Cat.index.json"
    path.write_text(index if isinstance(index, str) else json.dumps(index))
    run = tmp_path / "run"
    prepare_dataset(str(run), reader="letter", data_root=str(raw), category="Cat", kcore=0)
    return run, path


def tokens(*codes: int) -> list[str]:
    return [f"<{chr(ord('a') + i)}_{c}>" for i, c in enumerate(codes)]


def test_released_sids_become_the_sid_table_with_suffixes_only_for_collisions(tmp_path):
    index = {str(i): tokens(i % 3, i, 7) for i in range(6)} | {"1": tokens(0, 0, 7), "99": tokens(1, 1, 1)}
    run, path = letter_run(tmp_path, index)
    metrics = import_sids(str(run), str(path), codebook_size=16)
    table = SIDTable.load(run / "quantize")
    assert table.codebook_size == 16 and table.num_levels == 3
    assert table.codes.tolist() == [[0, 0, 7], [0, 0, 7], [2, 2, 7], [0, 3, 7], [1, 4, 7], [2, 5, 7]]
    assert table.suffix.tolist() == [0, 1] + [NO_SUFFIX] * 4, "only the two colliding items get a suffix"
    assert metrics["num_sids_unique"] == 6
    record = json.loads((run / "quantize" / "import.json").read_text())
    assert record["unused_entries"] == 1 and record["levels"] == 3
    verify_manifest(run / "quantize", "quantize")
    stamp = (run / "quantize" / "sid_table.safetensors").stat().st_mtime_ns
    import_sids(str(run), str(path), codebook_size=16)  # same file, same catalog: nothing rewritten
    assert (run / "quantize" / "sid_table.safetensors").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("index,message", [
    ({str(i): tokens(1, 2) for i in range(5)}, r"1 catalog items have no released SID \(e.g. key '5'\)"),
    ({str(i): tokens(1, 2) for i in range(5)} | {"5": ["<b_1>", "<a_2>"]}, r"entry '5', token 1 is '<b_1>'"),
    ({str(i): tokens(1, 2) for i in range(5)} | {"5": tokens(1, 2, 3)}, r"entry '5' has 3 codes"),
    ({str(i): tokens(1, 2) for i in range(5)} | {"5": "<a_1><b_2>"}, r"entry '5' must be a non-empty list"),
    ('{"0": ["<a_1>"],', r"Cat.index.json:1:\d+: not JSON"),
])
def test_a_bad_released_file_names_the_entry_and_the_fix(tmp_path, index, message):
    run, path = letter_run(tmp_path, index)
    with pytest.raises(ArtifactError, match=message):
        import_sids(str(run), str(path))


def test_a_code_beyond_the_codebook_is_refused(tmp_path):
    run, path = letter_run(tmp_path, {str(i): tokens(i, 300) for i in range(6)})
    with pytest.raises(ArtifactError, match="code 300 does not fit codebook_size 256"):
        import_sids(str(run), str(path), codebook_size=256)


def test_the_pipeline_imports_released_sids_instead_of_training_a_quantizer(tmp_path, capsys):
    from deepinterestgr.pipeline import run_pipeline

    index = {str(i): tokens(i % 2, i) for i in range(6)}
    _, path = letter_run(tmp_path, index)
    run = tmp_path / "piped"
    data = {"reader": "letter", "data_root": str(tmp_path), "dataset": "raw", "category": "Cat", "kcore": 0}
    evidence = {"collaborative": {"class_path": "CooccurrenceSVD", "init_args": {"dim": 2}}}
    run_pipeline(str(run), data=data, evidence=evidence, sids={"sids_file": "raw/Cat.index.json"},
                 data_root=str(tmp_path))
    assert SIDTable.load(run / "quantize").codes.tolist() == [[i % 2, i] for i in range(6)]
    run_pipeline(str(run), data=data, evidence=evidence, sids={"sids_file": "raw/Cat.index.json"},
                 data_root=str(tmp_path))
    assert "[quantize] up to date (skipped)" in capsys.readouterr().out
    with pytest.raises(ValueError, match="not both"):
        from deepinterestgr.pipeline import TrainStage

        run_pipeline(str(run), data=data, evidence=evidence, sids={"sids_file": str(path)},
                     quantize=TrainStage(configs=[]))


def test_items_add_refuses_attribute_sids_it_cannot_extend(tmp_path, monkeypatch):
    """`dig items add` places new items in attribute-fused SIDs (tests/test_items_add.py) only through the run's own
    attribute source: without one recorded, or with a source lacking `embed_new`, it refuses and says what to do."""
    from deepinterestgr.evidence.contracts import AttributeSource
    from deepinterestgr.serve.items import _new_attribute_embeddings

    new = [Item(-1, "n1", attributes=["b:1"])]
    with pytest.raises(ArtifactError, match="names no attribute source"):
        _new_attribute_embeddings(tmp_path, {"attributes": None}, [Item(0, "a", attributes=["b:1"])], new)
    monkeypatch.setattr(AttributeSVD, "embed_new", AttributeSource.embed_new)
    settings = {"attributes": {"class_path": "AttributeSVD", "init_args": {"dim": 2}}}
    with pytest.raises(ArtifactError, match="AttributeSVD cannot embed items added.*rebuild the SIDs"):
        _new_attribute_embeddings(tmp_path, settings, [Item(0, "a", attributes=["b:1"])], new)


# ------------------------------------------------------------------------------------------------ real data
def test_letters_instruments_sids_cover_the_instruments_catalog(shared_data, tmp_path):
    run = tmp_path / "instruments"
    stats = prepare_dataset(str(run), reader="letter", data_root=str(shared_data), dataset="Instruments",
                            category="Instruments", strict=True)
    assert (stats["users"], stats["items"], stats["interactions"]) == (24_772, 9_922, 206_153)
    metrics = import_sids(str(run), str(shared_data / "Instruments" / "Instruments.index.json"), codebook_size=256)
    assert metrics["num_levels"] == 4 and metrics["num_items"] == 9_922
    assert metrics["num_unique_prefixes"] == 9_897  # SOURCE.md: 9,897 distinct 4-code SIDs
    assert SIDTable.load(run / "quantize").num_suffix == metrics["num_suffix"] > 0


def test_sports_items_get_their_attribute_ids(shared_data, tmp_path):
    stats = prepare_dataset(str(tmp_path / "sports"), reader="p5", data_root=str(shared_data), dataset="Sports",
                            category="Sports_and_Outdoors", strict=True,
                            reader_args={"attribute_file": "Sports_and_Outdoors_item2attributes.json"})
    assert (stats["users"], stats["items"], stats["interactions"]) == (35_598, 18_357, 296_337)
    assert stats["text_coverage"]["attributes"]["items"] == 18_357
    read = json.loads((shared_data / "Sports" / "Sports_and_Outdoors_item2attributes.json").read_text())
    first = json.loads((tmp_path / "sports" / "data" / "catalog.jsonl").read_text().splitlines()[0])
    assert first["attributes"] == [str(a) for a in dict.fromkeys(read[first["source_id"]])]


# ------------------------------------------------------------------------------------------------ the benchmark
def _bench():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_paper_datasets",
                                                  REPO / "benchmarks" / "bench_paper_datasets.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_the_benchmark_table_keeps_other_datasets_and_marks_unpublished_cells(tmp_path):
    bench = _bench()
    for dataset in bench.DATASETS.values():
        for experiment, _ in dataset["sids"].values():
            assert (REPO / experiment).exists(), experiment
    metrics = {"recall@5": 0.1, "ndcg@5": 0.05, "recall@10": 0.2, "ndcg@10": 0.08}
    rows = [bench.row("instruments", "cooccurrence", "w", split, metrics, seeds=[], fit_s=3)
            for split in ("valid", "test")]
    beauty = tmp_path / "beauty.json"
    beauty.write_text(json.dumps({"rows": [{**rows[1], "dataset": "x", "method": "sasrec"},
                                           {**rows[1], "method": "generator"}],
                                  "published_test": {"TIGER (paper)": [0.1, 0.2, 0.3, 0.4]}}))
    published = {"Instruments": {"LC-Rec": (None, None, None, .09)}}
    table = bench.markdown_table({"rows": rows, "published_test": published}, beauty=beauty)
    lines = table.splitlines()
    assert "| Beauty | sasrec | w | - | 0.1000 | 0.0500 | 0.2000 | 0.0800 | - | 3 |" in lines
    assert not any("| generator |" in line for line in lines), "only the Beauty floors and seed means are shown"
    assert "| Instruments | cooccurrence | w | - | 0.1000 | 0.0500 | 0.2000 | 0.0800 | 0.0800 | 3 |" in lines
    assert "| Instruments | LC-Rec | published | | - | - | - | 0.0900 | | |" in lines
    assert "| Beauty | TIGER (paper) | published | | 0.1000 | 0.2000 | 0.3000 | 0.4000 | | |" in lines


def test_the_benchmark_keeps_rows_it_did_not_recompute():
    """Rerunning one floor (e.g. a longer SASRec) must not drop generator rows whose fits are gone, while a
    recomputed row replaces its old one and a bootstrap against a refitted generator goes with it."""
    bench = _bench()
    m = {"recall@5": 0.1, "ndcg@5": 0.05, "recall@10": 0.2, "ndcg@10": 0.08}

    def rows(dataset, method, variant, value):
        return [bench.row(dataset, method, variant, split, {**m, "ndcg@10": value}, seeds=[42], fit_s=1)
                for split in ("valid", "test")]

    old = {"rows": rows("sports", "cooccurrence", "w", .03) + rows("sports", "sasrec", "2x64", .009)
           + rows("sports", "generator", "t5-items, collab SIDs (beam 50, rerank w=4)", .016)
           + rows("sports", "generator", "t5-items, attr SIDs (beam 50, rerank w=4)", .014)
           + rows("instruments", "cooccurrence", "w", .08),
           "generator_sweeps": {"Sports/collab": {}, "Sports/attr": {}},
           "bootstrap": [{"dataset": "Sports", "a": "generator, collab SIDs", "b": "cooccurrence"},
                         {"dataset": "Sports", "a": "generator, attr SIDs", "b": "cooccurrence"},
                         {"dataset": "Sports", "a": "generator, collab SIDs", "b": "generator, attr SIDs"}]}
    new = rows("sports", "cooccurrence", "w", .03) + rows("sports", "sasrec", "2x64", .02)
    out, sweeps, boot = bench.carry_over(old, new, {}, [])
    test = {(r["dataset"], r["method"], r["variant"]): r["ndcg@10"] for r in out if r["split"] == "test"}
    assert test[("Sports", "sasrec", "2x64")] == .02, "the recomputed SASRec row replaces the old one"
    assert len(out) == len(old["rows"]) and len(boot) == 3 and set(sweeps) == {"Sports/collab", "Sports/attr"}
    assert [r["dataset"] for r in out][:2] == ["Instruments", "Instruments"], "datasets keep their table order"
    refit = rows("sports", "generator", "t5-items, collab SIDs (beam 50, rerank w=8)", .02)
    out, _, boot = bench.carry_over(old, refit, {"Sports/collab": {}}, [])
    assert sum(r["method"] == "generator" for r in out) == 4, "the refitted source's rows replace its old ones"
    assert boot == [old["bootstrap"][1]], "only the bootstrap that does not involve the refitted generator stays"


def test_generator_seeds_get_their_own_runs_rows_and_a_mean_only_on_one_sid_table(tmp_path):
    bench = _bench()
    args = argparse.Namespace(work=tmp_path)
    assert bench.generator_run(args, "sports", "collab", 42).name == "t5-items-collab", "seed 42 keeps its old run"
    assert bench.generator_run(args, "sports", "collab", 2333).name == "t5-items-collab-seed2333"
    assert not bench.generator_dir(args, "sports", "attr-collab", 6666).exists(), "looking for a fit makes no run"
    args.sids = None
    assert bench.selected_sources(args, "sports") == list(bench.DATASETS["sports"]["sids"])
    args.sids = ["collab"]
    assert bench.selected_sources(args, "sports") == ["collab"]
    assert bench.seed_of("generator, " + bench.source_label("collab", 2333)) == 2333
    assert bench.seed_of("generator, " + bench.source_label("collab", 42)) == 42

    def rows(source, seed, value):
        label = f"t5-items, {bench.source_label(source, seed)} (beam 50, rerank w=1)"
        return [bench.row("instruments", "generator", label, split,
                          {"recall@5": .1, "ndcg@5": .05, "recall@10": .2, "ndcg@10": value + (split == "valid")},
                          seeds=[seed], fit_s=100 * seed) for split in ("valid", "test")]

    all_rows = rows("collab", 42, .08) + rows("collab", 2333, .09) + rows("collab", 6666, .10) + rows("letter", 42, .07)
    sweeps = {"Instruments/collab": {"sid_table_sha256": "a"}, "Instruments/collab/seed2333": {"sid_table_sha256": "a"},
              "Instruments/collab/seed6666": {"sid_table_sha256": "a"}, "Instruments/letter": {"sid_table_sha256": "b"}}
    means = bench.seed_mean_rows(all_rows, sweeps)
    assert [(r["dataset"], r["split"]) for r in means] == [("Instruments", "valid"), ("Instruments", "test")], \
        "one source has seeds; the single-seed source gets no mean"
    test = means[1]
    assert test["method"] == "generator, mean over seeds" and test["seeds"] == [42, 2333, 6666]
    assert test["ndcg@10"] == pytest.approx(.09) and test["std"]["ndcg@10"] == pytest.approx(.01, abs=1e-4)
    assert test["variant"].split(" (")[0] == "t5-items, collab SIDs"
    sweeps["Instruments/collab/seed6666"] = {"sid_table_sha256": "rebuilt"}
    assert bench.seed_mean_rows(all_rows, sweeps) == [], "seeds on different SID tables are not averaged"
    ordered = bench.table_order(means + all_rows)
    assert [r["method"] for r in ordered][-2:] == ["generator, mean over seeds"] * 2


def test_an_unfinished_generator_fit_resumes_from_its_last_checkpoint_and_counts_its_time(tmp_path):
    bench = _bench()
    run = tmp_path / "t5-items-collab-seed2333"
    assert bench.resume_point(run, 2333) is None, "a fresh run starts from scratch"
    (run / "generate" / "checkpoints").mkdir(parents=True)
    torch.save({"global_step": 3605, "callbacks": {
        "Timer": {"time_elapsed": {"train": 1400.4, "validate": 20.2, "test": 0}}, "StepSeed": {"seed": 2333}}},
        run / "generate" / "checkpoints" / "last.ckpt")
    resumed = bench.resume_point(run, 2333)
    assert resumed == {"checkpoint": str(run / "generate" / "checkpoints" / "last.ckpt"), "step": 3605,
                       "earlier_s": 1421}
    with pytest.raises(SystemExit, match="under seed 2333, not 6666"):
        bench.resume_point(run, 6666)


def test_per_user_ranks_outlive_the_runs_and_give_the_seed_mean_its_bootstrap(tmp_path):
    """The ranks file keeps what a bootstrap needs once run directories are gone; a seed-mean row gets its paired
    bootstrap against co-occurrence only from ranks that agree with every seed's row."""
    from deepinterestgr.generate.evaluation import ndcg_per_user

    bench = _bench()
    g = torch.Generator().manual_seed(0)
    users = 400
    ranks = {name: torch.randint(-1, 14, (users,), generator=g) for name in
             ["generator, collab SIDs", "generator, collab SIDs, seed 2333", bench.FLOOR]}
    path = bench.ranks_file(tmp_path / "paper_datasets.json")
    assert path.name == "paper_datasets_test_ranks.jsonl"
    bench.save_ranks(path, {"Instruments": {n: bench.top10(r) for n, r in ranks.items()}})
    loaded = bench.load_ranks(path)
    assert len(path.read_text().splitlines()) == 3, "one line per generator or floor"
    assert all(min(r) >= -1 and max(r) <= 9 for r in loaded["Instruments"].values()), "only the top 10 is kept"
    ndcg = {n: float(ndcg_per_user(r).mean()) for n, r in ranks.items()}
    assert float(ndcg_per_user(torch.tensor(loaded["Instruments"][bench.FLOOR])).mean()) == pytest.approx(
        ndcg[bench.FLOOR]), "dropping ranks past 10 leaves N@10 as it was"

    def test_row(method, variant, value, seeds):
        return bench.row("instruments", method, variant, "test", {"recall@5": 0, "ndcg@5": 0, "recall@10": 0,
                                                                   "ndcg@10": value}, seeds=seeds, fit_s=1)

    rows = [test_row(bench.FLOOR, "weights selected on valid", ndcg[bench.FLOOR], []),
            test_row("generator", "t5-items, collab SIDs (beam 50, rerank w=1)", ndcg["generator, collab SIDs"], [42]),
            test_row("generator", "t5-items, collab SIDs, seed 2333 (beam 50, rerank w=1)",
                     ndcg["generator, collab SIDs, seed 2333"], [2333]),
            test_row(bench.SEED_MEAN, "t5-items, collab SIDs (selected on valid per seed)", 0.0, [42, 2333])]
    (boot,) = bench.seed_mean_bootstraps(rows, loaded)
    expected = (ndcg["generator, collab SIDs"] + ndcg["generator, collab SIDs, seed 2333"]) / 2 - ndcg[bench.FLOOR]
    assert boot["a"] == "generator, collab SIDs, mean over seeds 42, 2333" and boot["b"] == bench.FLOOR
    assert boot["seeds"] == [42, 2333] and boot["users"] == users
    assert boot["mean_diff"] == pytest.approx(expected, abs=1e-6)
    assert boot["ci95"][0] <= boot["mean_diff"] <= boot["ci95"][1]

    assert boot["of_seeds"] == [42, 2333]

    refitted = [*rows[:2], {**rows[2], "ndcg@10": rows[2]["ndcg@10"] + 0.01}, rows[3]]
    assert bench.seed_mean_bootstraps(refitted, loaded) == [], "ranks of another fit than the row's are not used"

    # a third seed; the first seed's ranks lost: the two that remain still give a bootstrap, and it says whose
    third = torch.randint(-1, 14, (users,), generator=g)
    loaded["Instruments"]["generator, collab SIDs, seed 6666"] = bench.top10(third)
    rows = [*rows[:3], test_row("generator", "t5-items, collab SIDs, seed 6666 (beam 50, rerank w=1)",
                                float(ndcg_per_user(third).mean()), [6666]),
            test_row(bench.SEED_MEAN, "t5-items, collab SIDs (selected on valid per seed)", 0.0, [42, 2333, 6666])]
    del loaded["Instruments"]["generator, collab SIDs"]
    (boot,) = bench.seed_mean_bootstraps(rows, loaded)
    assert boot["seeds"] == [2333, 6666] and boot["of_seeds"] == [42, 2333, 6666]
    assert boot["a"] == ("generator, collab SIDs, mean over seeds 2333, 6666 "
                         "(of 42, 2333, 6666: per-user ranks of seed 42 lost)")
    assert boot["mean_diff"] == pytest.approx(
        (ndcg["generator, collab SIDs, seed 2333"] + float(ndcg_per_user(third).mean())) / 2 - ndcg[bench.FLOOR],
        abs=1e-6)
    del loaded["Instruments"]["generator, collab SIDs, seed 6666"]
    assert bench.seed_mean_bootstraps(rows, loaded) == [], "one seed with ranks is no seed mean"


def test_a_killed_benchmark_takes_its_fit_with_it(tmp_path):
    """`kill <benchmark pid>` must not leave the fit the benchmark started training on the cores as an orphan; a
    failing fit still fails the benchmark."""
    import os
    import signal
    import subprocess
    import sys
    import time

    beauty = _bench().beauty
    with pytest.raises(subprocess.CalledProcessError) as failed:
        beauty.run_passing_sigterm([sys.executable, "-c", "raise SystemExit(3)"], env=dict(os.environ))
    assert failed.value.returncode == 3

    pidfile = tmp_path / "child.pid"
    child = (f"import os, pathlib, time; pathlib.Path({str(pidfile)!r}).write_text(str(os.getpid()) + '\\n'); "
             "time.sleep(300)")
    wrapper = (f"import os, sys; sys.path.insert(0, {str(REPO / 'benchmarks')!r}); import bench_beauty_quality as b; "
               f"b.run_passing_sigterm([sys.executable, '-c', {child!r}], env=dict(os.environ))")
    proc = subprocess.Popen([sys.executable, "-c", wrapper], env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not (pidfile.exists() and pidfile.read_text().endswith("\n")):
        assert proc.poll() is None and time.monotonic() < deadline, "the benchmark did not start its child"
        time.sleep(0.1)
    child_pid = int(pidfile.read_text())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    with pytest.raises(ProcessLookupError):
        os.kill(child_pid, 0)  # terminated and reaped by the benchmark before it exited
