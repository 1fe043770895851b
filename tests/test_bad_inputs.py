"""One table of malformed inputs across every stage (issue #8), each with its documented outcome.

A case either raises an error of the stated type whose message names the file (and line where there is one) and
the fix, or, where the stage is lenient, counts the bad record as a skip and keeps everything else. The per-stage
test files hold the finer cases; this table is the cross-stage inventory the reliability note quotes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from deepinterestgr.artifacts import ArtifactError, atomic_write_jsonl, verify_manifest, write_manifest
from deepinterestgr.data.readers.base import DataFormatError
from deepinterestgr.data.testing import copy_dataset, gzip_files, replace_line
from deepinterestgr.registry import create, get_registry
from deepinterestgr.registry.host import RegistryError

FIXTURES = Path(__file__).parent / "fixtures" / "data"


# ------------------------------------------------------------------------------------------------ outcomes
@dataclass
class Raises:
    """The action raises `error` and its message matches every pattern (file, line, fix)."""

    error: type[BaseException]
    patterns: list[str]


@dataclass
class Counted:
    """The action returns normally; `count(result)` is the number of counted skips and `kept(result)` checks
    that everything else survived."""

    count: Callable[[Any], int]
    expected: int
    kept: Callable[[Any], bool]


@dataclass
class Case:
    id: str
    make: Callable[[Path], Callable[[], Any]]  # builds the bad input under tmp_path, returns the action to run
    outcome: Raises | Counted


# ------------------------------------------------------------------------------------------------ helpers
def copy_fixture(folder: str, tmp: Path, *, gz: bool = False) -> Path:
    root = copy_dataset(FIXTURES / folder, tmp / folder)
    if folder == "letter":  # stored under another name so that no *.inter.json file sits in the repository
        (root / "Mini.inter.fixture").rename(root / "Mini.inter.json")
    if gz:
        gzip_files(root)
    return root


def read(reader: str, root: Path, *, strict: bool, **kwargs) -> Callable[[], Any]:
    return lambda: create("dataset_reader", reader, strict=strict, **kwargs).read(root)


def skips(reason: str) -> Callable[[Any], int]:
    return lambda raw: raw.skips.counts[reason]


def catalog_run(tmp: Path, *, n: int = 6, manifest: bool = False) -> Path:
    """`<run>/data/catalog.jsonl` with n dense items (+ the data manifest when asked)."""
    from deepinterestgr.data.schema import Item

    run = tmp / "run"
    rows = [Item(k, f"s{k}", f"Item {k}", "Crème for the skin").to_json() for k in range(n)]
    atomic_write_jsonl(run / "data" / "catalog.jsonl", rows)
    if manifest:
        write_manifest(run / "data", "data", ["catalog.jsonl"])
    return run


def load_catalog_action(run: Path) -> Callable[[], Any]:
    from deepinterestgr.evidence.stage import load_catalog_items

    return lambda: load_catalog_items(run)


def evidence_run(tmp: Path, text: torch.Tensor | None = None, image: torch.Tensor | None = None) -> Path:
    """`<run>/evidence/` holding text embeddings (+ image features) and their manifest."""
    run = tmp / "run"
    ev = run / "evidence"
    ev.mkdir(parents=True)
    if text is None:
        text = torch.nn.functional.normalize(torch.randn(12, 16, generator=torch.Generator().manual_seed(0)), dim=-1)
    save_file({"embeddings": text}, str(ev / "text_embeddings.safetensors"))
    files = ["text_embeddings.safetensors"]
    if image is not None:
        save_file({"features": image, "mask": torch.ones(image.shape[0], dtype=torch.uint8)},
                  str(ev / "image_features.safetensors"))
        files.append("image_features.safetensors")
    write_manifest(ev, "evidence", files)
    return run


def embedding_setup(run: Path, **kwargs) -> Callable[[], Any]:
    from deepinterestgr.quantize.datamodule import EmbeddingDataModule

    def action():
        dm = EmbeddingDataModule(run_dir=str(run), **kwargs)
        dm.setup("fit")
        return dm

    return action


def fit_quantizer(run: Path, *, input_dim: int, image_dim: int | None = None, use_image: bool = False):
    """A quantizer module restored with the widths of another run (what `load_from_checkpoint` gives), fit on `run`."""
    from lightning.pytorch import Trainer

    from deepinterestgr.quantize.datamodule import EmbeddingDataModule
    from deepinterestgr.quantize.module import QuantizerModule
    from deepinterestgr.quantize.testing import small_kwargs

    def action():
        cls = get_registry().get("quantizer", "rqvae").cls
        model = QuantizerModule(quantizer=cls(**small_kwargs(cls)), input_dim=input_dim, image_dim=image_dim,
                                write_artifacts=False, image_proj_dim=8)
        trainer = Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(run))
        trainer.fit(model, datamodule=EmbeddingDataModule(run_dir=str(run), batch_size=4, use_image_features=use_image))

    return action


def sequences_run(tmp: Path, lines: list[str] | bytes, *, num_items: int = 10, strict: bool = False):
    """A run with a valid SID table of `num_items` items and the given sequences.jsonl; the action sets up the
    generator's datamodule."""
    from deepinterestgr.generate.data import SequenceDataModule
    from deepinterestgr.generate.testing import random_sid_table

    run = tmp / "run"
    (run / "data").mkdir(parents=True)
    random_sid_table(num_items=num_items, codebook_size=4).save(run / "quantize")
    data = lines if isinstance(lines, bytes) else "".join(line + "\n" for line in lines).encode()
    (run / "data" / "sequences.jsonl").write_bytes(data)

    def action():
        dm = SequenceDataModule(run_dir=str(run), strict=strict)
        dm.setup("fit")
        return dm

    return action


GOOD_USERS = ['{"user": "a", "items": [0, 1, 2, 3]}', '{"user": "b", "items": [4, 5, 6]}']
SEQ = r"sequences\.jsonl"


def duplicate_sid_table(tmp: Path):
    from deepinterestgr.quantize.sid import SIDTable

    # items 1 and 3 share every code and neither has a suffix: a table not built by assign_sids
    return SIDTable(torch.tensor([[0, 1], [2, 3], [1, 1], [2, 3]]), torch.full((4,), -1), 4)


def saved_duplicate_sid_table(tmp: Path):
    from deepinterestgr.quantize.sid import SIDTable

    duplicate_sid_table(tmp).save(tmp / "quantize")
    return lambda: SIDTable.load(tmp / "quantize")


def saved_out_of_range_sid_table(tmp: Path):
    from deepinterestgr.quantize.sid import SIDTable, assign_sids

    assign_sids(torch.tensor([[0, 1], [2, 3], [1, 7]]), codebook_size=4).save(tmp / "quantize")
    return lambda: SIDTable.load(tmp / "quantize")


def tokenizer_over_duplicates(tmp: Path):
    from deepinterestgr.generate.tokenizer import SIDTokenizer

    table = duplicate_sid_table(tmp)
    return lambda: SIDTokenizer(table)


def truncated(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# ----------------------------------------------------------------------------------------------- the cases
def _truncated_gzip(tmp: Path, strict: bool):
    root = copy_fixture("amazon2014", tmp, gz=True)
    truncated(root / "reviews_Mini_5.json.gz", keep=0.8)
    return read("amazon2014", root, strict=strict)


def _invalid_utf8_line(tmp: Path, strict: bool):
    root = copy_fixture("p5", tmp)
    replace_line(root / "Mini.txt", 3, b"3 3 \xff\xfe 5\n")
    return read("p5", root, strict=strict)


def _timestamp_as_word(tmp: Path, strict: bool):
    root = copy_fixture("amazon2018", tmp)
    row = json.loads((root / "Mini_5.json").read_text().splitlines()[1])
    replace_line(root / "Mini_5.json", 2, json.dumps({**row, "unixReviewTime": "five"}).encode() + b"\n")
    return read("amazon2018", root, strict=strict)


def _rating_as_word(tmp: Path):
    root = copy_fixture("amazon2018", tmp)
    row = json.loads((root / "Mini_5.json").read_text().splitlines()[1])
    replace_line(root / "Mini_5.json", 2, json.dumps({**row, "overall": "five"}).encode() + b"\n")
    return read("amazon2018", root, strict=True)


def _letter_items_as_string(tmp: Path, strict: bool):
    root = copy_fixture("letter", tmp)
    doc = json.loads((root / "Mini.inter.json").read_text())
    doc["1"] = "0 1 2 3"
    (root / "Mini.inter.json").write_text(json.dumps(doc))
    return read("letter", root, strict=strict)


def _kcore_leaves_short_users(tmp: Path, strict: bool):
    """min_interactions=2 keeps LETTER user "3" with 2 items; leave-one-out needs 3 (one train, valid, test)."""
    from deepinterestgr.data.prepare import prepare_dataset
    from deepinterestgr.generate.data import SequenceDataModule
    from deepinterestgr.generate.testing import random_sid_table

    root = copy_fixture("letter", tmp)
    run = tmp / "run"
    stats = prepare_dataset(str(run), reader="letter", data_root=str(root), kcore=0, min_interactions=2)
    random_sid_table(num_items=stats["items"], codebook_size=4).save(run / "quantize")

    def action():
        dm = SequenceDataModule(run_dir=str(run), strict=strict)
        dm.setup("fit")
        return dm

    return action


def _nan_embeddings(tmp: Path, value: float):
    text = torch.nn.functional.normalize(torch.randn(12, 16), dim=-1)
    text[5, 3] = value
    return embedding_setup(evidence_run(tmp, text))


def _truncated_embeddings_manifest(tmp: Path):
    run = evidence_run(tmp)
    truncated(run / "evidence" / "text_embeddings.safetensors")
    return lambda: verify_manifest(run / "evidence")


def _truncated_embeddings_load(tmp: Path):
    run = evidence_run(tmp)
    truncated(run / "evidence" / "text_embeddings.safetensors")
    return embedding_setup(run)


def _image_rows_mismatch(tmp: Path):
    return embedding_setup(evidence_run(tmp, image=torch.randn(11, 8)), use_image_features=True)


def _quantizer_text_width_mismatch(tmp: Path):
    return fit_quantizer(evidence_run(tmp), input_dim=32)


def _fusion_image_width_mismatch(tmp: Path):
    return fit_quantizer(evidence_run(tmp, image=torch.randn(12, 8)), input_dim=16, image_dim=5, use_image=True)


def _unknown_plugin_in_evidence_config(tmp: Path):
    """`dig pipeline` with an evidence YAML naming a misspelt miner: fails before any evidence work, with the
    close match (the data stage before it reads the small LETTER fixture)."""
    from deepinterestgr.pipeline import run_pipeline

    root = copy_fixture("letter", tmp)
    config = tmp / "evidence.yaml"
    config.write_text("text_encoder: {class_path: PackagedMiniLMEncoder}\nintent_miner: {class_path: ZeroShotMinr}\n")
    data = {"reader": "letter", "data_root": str(root), "kcore": 0, "min_interactions": 1}
    return lambda: run_pipeline(str(tmp / "run"), data=data, evidence=str(config))


def _unknown_option_in_evidence_config(tmp: Path):
    """A misspelt option key (not a plugin name) in the pipeline's evidence YAML."""
    from deepinterestgr.pipeline import run_pipeline

    root = copy_fixture("letter", tmp)
    config = tmp / "evidence.yaml"
    config.write_text("text_encodr: {class_path: PackagedMiniLMEncoder}\n")
    data = {"reader": "letter", "data_root": str(root), "kcore": 0, "min_interactions": 1}
    return lambda: run_pipeline(str(tmp / "run"), data=data, evidence=str(config))


def _unknown_plugin_in_registry(tmp: Path):
    return lambda: create("quantizer", "rq-vea")


def _torn_last_catalog_line(tmp: Path):
    run = catalog_run(tmp)
    path = run / "data" / "catalog.jsonl"
    path.write_bytes(path.read_bytes()[:-25])
    return load_catalog_action(run)


def _catalog_edited_after_manifest(tmp: Path):
    run = catalog_run(tmp, manifest=True)
    truncated(run / "data" / "catalog.jsonl", keep=0.9)
    return load_catalog_action(run)


def _catalog_invalid_utf8(tmp: Path):
    run = catalog_run(tmp)
    replace_line(run / "data" / "catalog.jsonl", 3, b'{"item_id": 2, "source_id": "s\xe9"}\n')
    return load_catalog_action(run)


def _catalog_wrong_types(tmp: Path):
    run = catalog_run(tmp)
    replace_line(run / "data" / "catalog.jsonl", 4, b'{"item_id": 3, "source_id": "s3", "title": 5}\n')
    return load_catalog_action(run)


def _catalog_id_as_string(tmp: Path):
    run = catalog_run(tmp)
    replace_line(run / "data" / "catalog.jsonl", 2, b'{"item_id": "1", "source_id": "s1"}\n')
    return load_catalog_action(run)


def _manifest_corrupt(tmp: Path, content: bytes | None):
    run = catalog_run(tmp, manifest=True)
    manifest = run / "data" / "manifest.json"
    if content is None:
        truncated(manifest)
    else:
        manifest.write_bytes(content)
    return load_catalog_action(run)


def rl_quality(tmp: Path, quality: torch.Tensor, *, cut: bool = False):
    """The policy's loading of q_i (`PolicyModule.load_reward_inputs`) for a QARM reward over 3 items, without
    building a policy: the method reads only these attributes."""
    from types import SimpleNamespace

    from deepinterestgr.rl.module import PolicyModule

    path = tmp / "evidence" / "quality.safetensors"
    path.parent.mkdir(parents=True)
    save_file({"quality": quality}, str(path))
    if cut:
        truncated(path)
    policy = SimpleNamespace(reward=SimpleNamespace(requires=("item_quality",)), reward_extras={},
                             hparams=SimpleNamespace(quality_file="evidence/quality.safetensors"),
                             tokenizer=SimpleNamespace(num_items=3))
    return lambda: PolicyModule.load_reward_inputs(policy, tmp)


def _rl_quality_corrupt_manifest(tmp: Path):
    action = rl_quality(tmp, torch.rand(3))
    (tmp / "evidence" / "manifest.json").write_text('{"stage": "evidence", "files": {"quality.safe')
    return action


def _torn_cache_line(tmp: Path):
    """A writer killed mid-line can cut a multi-byte character in half: the line is torn, the rest is kept."""
    from deepinterestgr.evidence.cache import BranchCache

    (tmp / "cache" / "text").mkdir(parents=True)
    whole = json.dumps({"entries": {"k1": "crème", "k2": "brûlée"}}, ensure_ascii=False).encode() + b"\n"
    cut = json.dumps({"entries": {"k3": "crème brûlée"}}, ensure_ascii=False).encode()
    (tmp / "cache" / "text" / "host-1-dead.jsonl").write_bytes(whole + cut[: cut.index("è".encode()) + 1])
    return lambda: BranchCache(tmp / "cache", "text")


CASES = [
    # --- readers: strict raises naming file:line and the fix; lenient counts the skip and keeps the rest
    Case("reader-truncated-gzip-strict", lambda t: _truncated_gzip(t, True),
         Raises(DataFormatError, [r"reviews_Mini_5\.json\.gz:\d+", r"\[truncated_gzip\]", "Download the file again"])),
    Case("reader-truncated-gzip-lenient", lambda t: _truncated_gzip(t, False),
         Counted(skips("truncated_gzip"), 1, lambda raw: 0 < len(raw.interactions) < 12)),
    Case("reader-invalid-utf8-strict", lambda t: _invalid_utf8_line(t, True),
         Raises(DataFormatError, [r"Mini\.txt:3", r"not valid UTF-8", r"\[invalid_utf8\]", "without `strict`"])),
    Case("reader-invalid-utf8-lenient", lambda t: _invalid_utf8_line(t, False),
         Counted(skips("invalid_utf8"), 1, lambda raw: {x.user for x in raw.interactions} == {"1", "2", "4"})),
    Case("reader-timestamp-five-strict", lambda t: _timestamp_as_word(t, True),
         Raises(DataFormatError, [r"Mini_5\.json:2", "unixReviewTime", r"\[missing_field\]"])),
    Case("reader-timestamp-five-lenient", lambda t: _timestamp_as_word(t, False),
         Counted(skips("missing_field"), 1, lambda raw: len(raw.interactions) == 11)),
    # ratings are not read by any reader: a wrong-typed rating neither drops nor corrupts the review
    Case("reader-rating-five-ignored", _rating_as_word,
         Counted(lambda raw: raw.skips.total, 0, lambda raw: len(raw.interactions) == 12)),
    Case("reader-items-as-string-strict", lambda t: _letter_items_as_string(t, True),
         Raises(DataFormatError, [r"Mini\.inter\.json \(user '1'\)", "list of non-negative integer",
                                  r"\[corrupt_record\]"])),
    Case("reader-items-as-string-lenient", lambda t: _letter_items_as_string(t, False),
         Counted(skips("corrupt_record"), 1, lambda raw: {x.user for x in raw.interactions} == {"0", "2", "3"})),
    # --- data artifacts read by later stages
    Case("catalog-torn-last-line", _torn_last_catalog_line,
         Raises(ArtifactError, [r"catalog\.jsonl:6: invalid JSON", "Rerun the `data` stage"])),
    Case("catalog-edited-after-manifest", _catalog_edited_after_manifest,
         Raises(ArtifactError, [r"catalog\.jsonl: content does not match its manifest", r"dig data prepare"])),
    Case("catalog-invalid-utf8", _catalog_invalid_utf8,
         Raises(ArtifactError, [r"catalog\.jsonl:3: not valid UTF-8", "Rerun the `data` stage"])),
    Case("catalog-title-is-a-number", _catalog_wrong_types,
         Raises(ArtifactError, [r"catalog\.jsonl:4: not an Item \(title must be a string, got 5\)",
                                "Rerun the `data`"])),
    Case("catalog-item-id-is-a-string", _catalog_id_as_string,
         Raises(ArtifactError, [r"catalog\.jsonl:2: item_id '1', expected 1", "Rerun the `data` stage"])),
    Case("manifest-truncated", lambda t: _manifest_corrupt(t, None),
         Raises(ArtifactError, [r"data/manifest\.json: corrupt manifest", "Rerun the `data` stage"])),
    Case("manifest-not-an-object", lambda t: _manifest_corrupt(t, b"[]\n"),
         Raises(ArtifactError, [r"data/manifest\.json: corrupt manifest", "Rerun the `data` stage"])),
    Case("manifest-without-files", lambda t: _manifest_corrupt(t, b'{"stage": "data", "schema_version": 1}'),
         Raises(ArtifactError, [r"data/manifest\.json: corrupt manifest", "Rerun the `data` stage"])),
    # --- evidence
    Case("config-unknown-plugin-evidence", _unknown_plugin_in_evidence_config,
         Raises(RegistryError, [r"evidence\.yaml: intent_miner: no IntentMiner class named 'ZeroShotMinr'",
                                "Did you mean 'ZeroShotIntentMiner'"])),
    Case("config-unknown-option-evidence", _unknown_option_in_evidence_config,
         Raises(ValueError, [r"evidence\.yaml: unknown option 'text_encodr' for run_evidence",
                             "Did you mean 'text_encoder'"])),
    Case("config-unknown-plugin-registry", _unknown_plugin_in_registry,
         Raises(RegistryError, ["no quantizer plugin named 'rq-vea'", "Did you mean 'rq-vae'"])),
    Case("evidence-cache-torn-multibyte-line", _torn_cache_line,
         Counted(lambda cache: cache.torn_lines, 1, lambda cache: len(cache) == 2 and cache.get("k2") == "brûlée")),
    # --- quantize inputs
    Case("embeddings-nan", lambda t: _nan_embeddings(t, float("nan")),
         Raises(ArtifactError, [r"text_embeddings\.safetensors: 1 rows .* NaN/inf \(first item ids \[5\]\)",
                                "Rerun the `evidence` stage"])),
    Case("embeddings-inf", lambda t: _nan_embeddings(t, float("-inf")),
         Raises(ArtifactError, [r"text_embeddings\.safetensors: .*NaN/inf \(first item ids \[5\]\)", "evidence"])),
    Case("embeddings-truncated-manifest", _truncated_embeddings_manifest,
         Raises(ArtifactError, [r"text_embeddings\.safetensors: content does not match its manifest",
                                "Rerun the `evidence` stage"])),
    Case("embeddings-truncated-load", _truncated_embeddings_load,
         Raises(ArtifactError, [r"text_embeddings\.safetensors: unreadable", "Rerun the `evidence` stage"])),
    Case("image-features-row-mismatch", _image_rows_mismatch,
         Raises(ArtifactError, [r"image_features\.safetensors: 11 rows but text_embeddings\.safetensors has 12",
                                "Rerun the `evidence` stage"])),
    Case("quantizer-checkpoint-text-width", _quantizer_text_width_mismatch,
         Raises(ValueError, ["built for text width 32", "has 16", "train a new quantizer"])),
    Case("quantizer-fusion-image-width", _fusion_image_width_mismatch,
         Raises(ValueError, ["image width 5", "has 16 / 8", "train a new quantizer"])),
    # --- RL inputs (QARM item quality)
    Case("rl-quality-nan-or-above-one", lambda t: rl_quality(t, torch.tensor([0.5, float("nan"), 3.0])),
         Raises(ArtifactError, [r"quality\.safetensors: 2 item qualities are not finite values in \[0, 1\]",
                                r"first item ids \[1, 2\]", "rerun the `evidence` stage"])),
    Case("rl-quality-truncated-without-manifest", lambda t: rl_quality(t, torch.rand(3), cut=True),
         Raises(ArtifactError, [r"quality\.safetensors: unreadable", "rerun the `evidence` stage"])),
    Case("rl-quality-manifest-corrupt", _rl_quality_corrupt_manifest,
         Raises(ArtifactError, [r"evidence/manifest\.json: corrupt manifest", "Rerun the `evidence` stage"])),
    Case("rl-quality-wrong-length", lambda t: rl_quality(t, torch.rand(4)),
         Raises(ArtifactError, [r"quality\.safetensors: expected key 'quality' of shape \[3\]", "evidence"])),
    # --- SID table
    Case("sid-table-duplicate-sids-load", saved_duplicate_sid_table,
         Raises(ArtifactError, [r"quantize/sid_table\.safetensors: SID table has duplicate SIDs", "items 1 and 3",
                                "rerun the `quantize` stage"])),
    Case("sid-table-code-outside-codebook", saved_out_of_range_sid_table,
         Raises(ArtifactError, [r"quantize/sid_table\.safetensors: codes must lie in \[0, 4\)",
                                r"got codes in \[0, 7\]", "Rerun the `quantize` stage"])),
    Case("sid-table-duplicate-sids-tokenizer", tokenizer_over_duplicates,
         Raises(ArtifactError, ["duplicate SIDs", "items 1 and 3", "assign_sids"])),
    # --- generator inputs (sequences.jsonl against the SID table)
    Case("sequences-empty-file", lambda t: sequences_run(t, []),
         Raises(ArtifactError, [SEQ + r": no user has >= 3 items", "Rerun the `data` stage with min_interactions"])),
    Case("sequences-kcore-short-users-lenient", lambda t: _kcore_leaves_short_users(t, False),
         Counted(lambda dm: dm.skipped_users, 1, lambda dm: dm.split.users == ["0", "1", "2"])),
    Case("sequences-kcore-short-users-strict", lambda t: _kcore_leaves_short_users(t, True),
         Raises(ArtifactError, [SEQ + r":4: user '3' has 2 items", "leave-one-out needs 3",
                                "min_interactions >= 3", "strict: false"])),
    Case("sequences-negative-item-id", lambda t: sequences_run(t, [*GOOD_USERS, '{"user": "c", "items": [1, -2, 3]}']),
         Raises(ArtifactError, [SEQ + r":3: item id -2 is outside", "Rerun the `quantize` stage"])),
    Case("sequences-item-id-out-of-range",
         lambda t: sequences_run(t, ['{"user": "c", "items": [1, 10, 3]}', *GOOD_USERS]),
         Raises(ArtifactError, [SEQ + r":1: item id 10 is outside the SID table's 0\.\.9", "Rerun the `quantize`"])),
    Case("sequences-items-as-string", lambda t: sequences_run(t, [GOOD_USERS[0], '{"user": "c", "items": "1 2 3"}']),
         Raises(ArtifactError, [SEQ + r":2: `items` must be a list of integer item ids", "Rerun the `data` stage"])),
    Case("sequences-boolean-item-ids", lambda t: sequences_run(t, ['{"user": "c", "items": [true, 2, 3]}']),
         Raises(ArtifactError, [SEQ + r":1: `items` must be a list of integer item ids"])),
    Case("sequences-row-not-an-object", lambda t: sequences_run(t, [GOOD_USERS[0], "[1, 2, 3]"]),
         Raises(ArtifactError, [SEQ + r":2: expected a JSON object", "Rerun the `data` stage"])),
    Case("sequences-invalid-utf8", lambda t: sequences_run(t, GOOD_USERS[0].encode() + b'\n{"user": "\xff"}\n'),
         Raises(ArtifactError, [SEQ + r":2: not valid UTF-8", "Rerun the `data` stage"])),
    Case("sequences-torn-last-line",
         lambda t: sequences_run(t, ("\n".join(GOOD_USERS) + "\n" + GOOD_USERS[0][:12]).encode()),
         Raises(ArtifactError, [SEQ + r":3: invalid JSON", "Rerun the `data` stage"])),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_has_its_documented_outcome(case: Case, tmp_path):
    action = case.make(tmp_path)
    outcome = case.outcome
    if isinstance(outcome, Raises):
        with pytest.raises(outcome.error) as info:
            action()
        message = str(info.value)
        for pattern in outcome.patterns:
            assert re.search(pattern, message), f"{pattern!r} not in: {message}"
    else:
        result = action()
        assert outcome.count(result) == outcome.expected
        assert outcome.kept(result), "the records around the bad one were not all kept"


def test_case_ids_are_unique():
    assert len({c.id for c in CASES}) == len(CASES)
