"""Recommendations from a trained run, without HTTP: load the best checkpoint and the current item version, check
queries, rank a batch of histories with ONE constrained beam search.

`dig serve` (deepinterestgr.serve.server) runs a `Recommender` in its inference worker; `benchmarks/bench_serve.py`
uses it as the offline limit of the server's throughput. The ranking is the evaluation's: the checkpoint's recorded
beam, re-ranking weight and no-repeat rule (`GeneratorModule.use_recorded_ranking`, or the policy's `Ranker`), the
same right-aligned, truncated histories as `SequenceDataModule.make_batch`, so a served list equals the list `dig
test` scores for the same history.

Items added after training (`dig items add`, deepinterestgr.serve.versions) are picked up by `refresh()`: a new
tokenizer and trie, and the generator told which items it never trained on (`Generator.set_unseen_items`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from deepinterestgr.artifacts import ArtifactError
from deepinterestgr.generate.search import SearchResult
from deepinterestgr.generate.tokenizer import SIDTokenizer
from deepinterestgr.serve.versions import ItemsVersion, load_current, pointer_stamp

log = logging.getLogger(__name__)

STAGES = ("generate", "rl")
CHECKPOINTS = {"generate": "generate/checkpoints/best.ckpt", "rl": "rl/checkpoints/best.ckpt"}
#: most history rows a query may carry (histories are truncated to the model's max_history anyway)
MAX_QUERY_HISTORY = 1000


# --------------------------------------------------------------------------------------------------- queries
@dataclass
class Query:
    """One recommendation request: a history of item ids (int) or ASINs (str), oldest first."""

    history: list
    k: int = 10
    user: str | None = None


@dataclass
class RequestError:
    """A query the recommender cannot answer, as a value (a batch of queries never fails as a whole).

    `loc` is the field's path in the request body, as FastAPI reports validation errors: ("history", 3).
    """

    loc: tuple
    message: str
    kind: str = "value_error"
    input: object = None
    status: int = 422

    @property
    def field(self) -> str:
        """`history[3]`, `k`: the field as a user writes it."""
        out = ""
        for part in self.loc:
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
        return out

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"

    def to_json(self) -> dict:
        """One entry of a 422 `detail` list in FastAPI's shape, its `msg` naming the field."""
        return {"loc": ["body", *self.loc], "msg": str(self), "type": self.kind, "input": self.input}


# --------------------------------------------------------------------------------------------------- item versions
@dataclass
class ServedItems:
    """One version of a run's items as served: catalog rows, SID strings, ASIN index and SID tokenizer."""

    version: ItemsVersion
    tokenizer: SIDTokenizer
    sids: list[str] = field(init=False)
    by_asin: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.sids = self.version.table.to_strings()
        self.by_asin = {}
        for item in self.version.catalog:
            self.by_asin.setdefault(item.source_id, item.item_id)

    @property
    def number(self) -> int:
        return self.version.version

    @property
    def num_items(self) -> int:
        return self.version.num_items

    def lookup(self, key: int | str) -> int | None:
        """Item id of an item id (int) or an ASIN (str); None when the catalog has no such item."""
        if isinstance(key, bool):
            return None
        if isinstance(key, int):
            return key if 0 <= key < self.num_items else None
        return self.by_asin.get(key)

    def lookup_path(self, key: str) -> int | None:
        """A URL path segment: an ASIN first, else the decimal form of an item id (`/items/12`, `/items/B00XYZ`)."""
        if key in self.by_asin:
            return self.by_asin[key]
        if key.isdecimal() and str(int(key)) == key:
            return self.lookup(int(key))
        return None

    def row(self, item: int) -> dict:
        """The catalog row of `item` with its SID string and version."""
        return {**self.version.catalog[item].to_json(), "sid": self.sids[item], "version": self.number}


def serving_tokenizer(version: ItemsVersion, base: SIDTokenizer) -> SIDTokenizer:
    """The SID tokenizer of `version`; ArtifactError when its vocabulary is not the model's (the generator's
    embedding and output layers are sized by it: e.g. a new suffix level, more suffixes, or another codebook)."""
    if version.version == 0:
        return base
    tokenizer = SIDTokenizer(version.table, num_user_buckets=base.num_user_buckets)
    if (tokenizer.vocab_size, tokenizer.sid_length) != (base.vocab_size, base.sid_length):
        raise ArtifactError(
            f"items version {version.version} ({version.path}): its SIDs need a vocabulary of {tokenizer.vocab_size} "
            f"tokens x {tokenizer.sid_length} levels, the model has {base.vocab_size} x {base.sid_length} "
            f"(suffixes {tokenizer.num_suffix} vs {base.num_suffix}, codebook {tokenizer.codebook_size} vs "
            f"{base.codebook_size}); new items must fit the trained vocabulary. Not served.")
    return tokenizer


class ItemsWatcher:
    """The run's current items version, reloaded when `dig items add` moves the version pointer.

    A version that cannot be served (unreadable, written for another model, or with a vocabulary the model does not
    have) is refused with an error in the log and the previous version stays; the refused pointer is remembered, so
    it is not reloaded before the pointer moves again.
    """

    def __init__(self, run_dir: str | Path, base: SIDTokenizer) -> None:
        self.run_dir = Path(run_dir)
        self.base = base
        self._stamp = pointer_stamp(self.run_dir)
        try:
            self.current = self._load()
        except ArtifactError as e:
            log.error("%s; serving the items the model was trained on (version 0) instead", e)
            self.current = self._load(base_only=True)

    def _load(self, base_only: bool = False) -> ServedItems:
        from deepinterestgr.serve.versions import base_version

        load = base_version if base_only else load_current
        version = load(self.run_dir, self.base.table)
        return ServedItems(version, serving_tokenizer(version, self.base))

    def refresh(self) -> bool:
        """Load the newest version if the pointer moved since the last look; True when the served items changed."""
        stamp = pointer_stamp(self.run_dir)
        if stamp == self._stamp:
            return False
        self._stamp = stamp  # read before loading: a pointer moved while loading is seen at the next look
        try:
            served = self._load()
        except (ArtifactError, OSError, ValueError, KeyError) as e:
            log.error("items version not loaded, still serving version %d: %s", self.current.number, e)
            return False
        if served.number == self.current.number and served.num_items == self.current.num_items:
            return False
        log.info("items version %d -> %d (%d items, %d added after training)", self.current.number, served.number,
                 served.num_items, served.num_items - served.version.trained_items)
        self.current = served
        return True


# --------------------------------------------------------------------------------------------------- checkpoints
def read_checkpoint_info(path: str | Path) -> dict:
    """What a server needs to know of a checkpoint without building the model: its SID tokenizer, the ranking it
    was evaluated with and the datamodule's max_history (memory-mapped read, weights untouched)."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: checkpoint not found")
    raw = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    if "sid_tokenizer" in raw:  # GeneratorModule
        tokenizer_state, ranking = raw["sid_tokenizer"], raw.get("ranking") or {}
    elif "policy_generator" in raw:  # PolicyModule
        tokenizer_state = raw["policy_generator"]["tokenizer"]
        ranking = dict(raw["policy_generator"].get("ranking") or {})
        hp = raw.get("hyper_parameters", {})
        for key in ("beam_size", "rerank_weight", "exclude_history"):  # the policy's own options win, as it ranks
            if hp.get(key) is not None:
                ranking[key] = hp[key]
    else:
        raise ArtifactError(f"{path}: neither a GeneratorModule nor a PolicyModule checkpoint (no SID tokenizer)")
    dm = raw.get("datamodule_hyper_parameters") or {}
    return {"tokenizer": SIDTokenizer.from_state(tokenizer_state), "ranking": ranking,
            "max_history": dm.get("max_history"), "num_user_buckets": dm.get("num_user_buckets")}


def resolve_checkpoint(run_dir: str | Path, stage: str, checkpoint: str | Path | None) -> Path:
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    path = Path(checkpoint) if checkpoint else Path(run_dir) / CHECKPOINTS[stage]
    if not path.is_file():
        hint = ("train the generator (`dig fit` with a GeneratorModule config, or `dig pipeline`)"
                if stage == "generate" else "run the rl stage, or serve the generator with --stage generate")
        raise ArtifactError(f"{path}: no {stage} checkpoint; {hint}, or pass --checkpoint")
    return path


def _load_model(path: Path, stage: str):
    """(generator, ranker) from a GeneratorModule (generate) or PolicyModule (rl) checkpoint, weights only."""
    import pickle

    try:
        if stage == "generate":
            from deepinterestgr.generate.module import GeneratorModule

            module = GeneratorModule.load_from_checkpoint(str(path), map_location="cpu", weights_only=True)
            module.use_recorded_ranking()
            return module.generator, module.ranker
        from deepinterestgr.rl.module import PolicyModule

        module = PolicyModule.load_from_checkpoint(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ArtifactError(f"{path}: holds pickled Python objects, which are not loaded (weights_only=True)") from e
    except (KeyError, TypeError) as e:
        raise ArtifactError(f"{path}: not a {stage} checkpoint this version can load ({type(e).__name__}: {e}); "
                            f"serve the generator with --stage generate") from e
    if module.policy is None:
        raise ArtifactError(f"{path}: the policy checkpoint has no generator to serve; serve --stage generate")
    module.reference = None  # the frozen KL reference is for training only
    return module.policy, module.ranker


# --------------------------------------------------------------------------------------------------- recommender
class Recommender:
    """A run's generator, served: checks queries, ranks batches of histories, follows item versions."""

    def __init__(self, run_dir: str | Path, *, stage: str = "generate", checkpoint: str | Path | None = None,
                 max_history: int | None = None, beam_size: int | None = None, rerank_weight: float | None = None,
                 exclude_history: bool | None = None, dense_candidates: int | None = None,
                 prior_weight: float | None = None, prior_candidates: int | None = None,
                 device: str = "cpu") -> None:
        """
        Args:
            run_dir: the run directory (its `data/catalog.jsonl`, checkpoints and `items/` versions).
            stage: serve the generator (`generate/checkpoints/best.ckpt`) or the RL policy (`rl/...`).
            checkpoint: another checkpoint file of that stage.
            max_history: history items the model reads (default: the datamodule's, recorded in the checkpoint).
            beam_size, rerank_weight, exclude_history, dense_candidates, prior_weight, prior_candidates: ranking
                options (default: as the checkpoint was evaluated; the prior's two need a checkpoint that carries
                an item prior).
            device: torch device of the model.
        """
        self.run_dir = Path(run_dir)
        self.stage = stage
        self.checkpoint = resolve_checkpoint(run_dir, stage, checkpoint)
        info = read_checkpoint_info(self.checkpoint)
        recorded = info["max_history"]
        if max_history is None and recorded is None:
            raise ArtifactError(f"{self.checkpoint}: records no max_history (not trained through the CLI); "
                                "pass --max_history (the datamodule's max_history at training)")
        if max_history is not None and recorded is not None and max_history != recorded:
            log.warning("max_history %d given, the model was trained with %d", max_history, recorded)
        self.max_history = int(max_history if max_history is not None else recorded)
        self.device = torch.device(device)
        self.generator, self.ranker = _load_model(self.checkpoint, stage)
        for key, value in (("beam_size", beam_size), ("rerank_weight", rerank_weight),
                           ("exclude_history", exclude_history), ("dense_candidates", dense_candidates),
                           ("prior_weight", prior_weight), ("prior_candidates", prior_candidates)):
            if value is not None:
                setattr(self.ranker, key, type(getattr(self.ranker, key))(value))
        if self.ranker.rerank_weight and not getattr(self.generator, "has_item_scores", False):
            raise ValueError(f"rerank_weight {self.ranker.rerank_weight} needs a generator with item-level scores; "
                             f"{type(self.generator).__name__} has none (serve with --rerank_weight 0)")
        if self.ranker.dense_candidates and not getattr(self.generator, "has_item_scores", False):
            raise ValueError(f"dense_candidates {self.ranker.dense_candidates} needs a generator with item-level "
                             f"scores; {type(self.generator).__name__} has none (serve with --dense_candidates 0)")
        if (self.ranker.prior_weight or self.ranker.prior_candidates) and self.ranker.prior is None:
            raise ValueError(f"prior_weight {self.ranker.prior_weight} / prior_candidates "
                             f"{self.ranker.prior_candidates}: {self.checkpoint} carries no item prior (fit with "
                             "configs/model/cooccurrence_prior.yaml, or serve with --prior_weight 0 "
                             "--prior_candidates 0)")
        self.generator.to(self.device).eval()
        self.base_tokenizer = self.ranker.tokenizer
        self.items = ItemsWatcher(self.run_dir, self.base_tokenizer)
        self._apply(self.items.current)

    # ------------------------------------------------------------------------------------------------ options
    @property
    def beam_size(self) -> int:
        return self.ranker.beam_size

    @property
    def version(self) -> int:
        return self.items.current.number

    @property
    def num_user_buckets(self) -> int:
        return self.base_tokenizer.num_user_buckets

    def options(self) -> dict:
        return {"stage": self.stage, "checkpoint": str(self.checkpoint), "max_history": self.max_history,
                **self.ranker.options(), "items_version": self.version, "num_items": self.items.current.num_items}

    # ------------------------------------------------------------------------------------------------ versions
    def _apply(self, served: ServedItems) -> None:
        self._item_vector_cache = None
        self.ranker.set_tokenizer(served.tokenizer)
        unseen = served.tokenizer.item_tokens[served.version.trained_items:]
        self.generator.set_unseen_items(unseen.to(self.device) if len(unseen) else None)
        self.ranker.trie(self.device)  # built now, not in the first request after a reload

    def refresh(self) -> bool:
        """Serve the newest items version if `dig items add` wrote one; True when it changed."""
        if not self.items.refresh():
            return False
        self._apply(self.items.current)
        return True

    # ------------------------------------------------------------------------------------------------ queries
    def check(self, query: Query) -> list[int] | RequestError:
        """The query's history as item ids, or what is wrong with it (field first)."""
        served = self.items.current
        history = query.history
        if not isinstance(history, (list, tuple)):
            return RequestError(("history",), "must be a list of item ids (int) or ASINs (str)", "list_type", history)
        if not history:
            return RequestError(("history",), "is empty; pass at least one item", "too_short", history)
        if len(history) > MAX_QUERY_HISTORY:
            return RequestError(("history",), f"has {len(history)} items, at most {MAX_QUERY_HISTORY} are accepted "
                                f"(the model reads the last {self.max_history})", "too_long")
        if isinstance(query.k, bool) or not isinstance(query.k, int) or not 1 <= query.k <= self.beam_size:
            return RequestError(("k",), f"must be an integer from 1 to the beam size {self.beam_size}, got {query.k!r}",
                                "k_range", query.k)
        if self.num_user_buckets and not isinstance(query.user, str):
            return RequestError(("user",), "required: this model reads a hashed user token", "missing", query.user)
        ids = []
        for pos, key in enumerate(history):
            if isinstance(key, bool) or not isinstance(key, (int, str)):
                return RequestError(("history", pos), f"expected an item id (int) or an ASIN (str), got {key!r}",
                                    "item_type", key)
            item = served.lookup(key)
            if item is None:
                what = (f"unknown item id {key} (ids are 0..{served.num_items - 1})" if isinstance(key, int)
                        else f"unknown item {key!r}")
                return RequestError(("history", pos), f"{what} in items version {served.number}", "unknown_item", key)
            ids.append(item)
        return ids

    # ------------------------------------------------------------------------------------------------ ranking
    def encode(self, histories: Sequence[Sequence[int]], users: Sequence[str] | None = None):
        """Encoder input as `SequenceDataModule.make_batch` builds it: the last max_history items right-aligned,
        leading columns that are padding in every row dropped."""
        h = self.max_history
        ids = torch.full((len(histories), h), -1, dtype=torch.long)
        for row, items in enumerate(histories):
            items = list(items)[-h:]
            if items:
                ids[row, h - len(items):] = torch.tensor(items, dtype=torch.long)
        present = (ids >= 0).any(0)
        first = int(present.long().argmax()) if bool(present.any()) else h - 1
        ids = ids[:, first:]
        tokenizer = self.ranker.tokenizer
        buckets = None
        if tokenizer.num_user_buckets:
            buckets = torch.tensor([tokenizer.user_bucket(u) for u in users], dtype=torch.long)
        return tokenizer.encode_history(ids.to(self.device),
                                        user_buckets=None if buckets is None else buckets.to(self.device))

    @torch.inference_mode()
    def rank(self, histories: Sequence[Sequence[int]], users: Sequence[str] | None = None) -> SearchResult:
        """One batched constrained beam search (with the re-ranking and no-repeat rule) over item-id histories:
        `Ranker.rank` with the served catalog's item vectors, computed once per items version (68 ms of a 64-user
        Beauty batch)."""
        encoded = self.encode(histories, users)
        vectors = self._item_vectors() if self.ranker.rerank_weight or self.ranker.dense_candidates else None
        return self.ranker.rank(self.generator, encoded.tokens, encoded.mask, item_vectors=vectors)

    def _item_vectors(self) -> torch.Tensor:
        """[N, d] float item vectors of the served catalog (cached until the items version changes)."""
        if self._item_vector_cache is None:
            self._item_vector_cache = self.ranker.item_vectors(self.generator, self.device)
        return self._item_vector_cache

    def recommend(self, queries: Sequence[Query]) -> list[dict | RequestError]:
        """Top-k items of every valid query (one search for all of them); a RequestError for each invalid one.

        A list may be shorter than k where the no-repeat rule removed history items from the beam.
        """
        checked = [self.check(q) for q in queries]
        good = [i for i, c in enumerate(checked) if not isinstance(c, RequestError)]
        out: list[dict | RequestError] = list(checked)
        if not good:
            return out
        users = [queries[i].user or "" for i in good] if self.num_user_buckets else None
        result = self.rank([checked[i] for i in good], users)
        served = self.items.current
        catalog = served.version.catalog
        items, scores = result.items.tolist(), result.scores.tolist()
        for row, i in enumerate(good):
            ranked = []
            for item, score in zip(items[row], scores[row]):
                if item < 0 or not math.isfinite(score):
                    continue
                ranked.append({"item": item, "asin": catalog[item].source_id, "title": catalog[item].title,
                               "sid": served.sids[item], "score": score})
                if len(ranked) == queries[i].k:
                    break
            out[i] = {"items": ranked, "version": served.number}
        return out
