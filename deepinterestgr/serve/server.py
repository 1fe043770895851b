"""`dig serve`: a run's recommendations over HTTP (LitServe + FastAPI).

    POST /recommend   {"history": [item ids or ASINs], "k": 10, "user": null} -> {"items": [...], "version": 3}
    GET  /items/{id}  catalog row + SID string of an item id or ASIN (404 when unknown)
    GET  /health      200 once the inference worker has loaded the model (LitServe's)
    GET  /info        the served model's options (LitServe's, `model_metadata`)
    GET  /openapi.json, /docs

Requests are validated twice. The shape (types, empty or over-long histories, k < 1, unknown fields) by the pydantic
model `RecommendRequest` in the HTTP process: 422 with the field's location, before anything reaches the worker.
What needs the model or the catalog (unknown items, k above the beam, a missing user for user-token models) in the
worker, per request: LitServe fails every request of a batch when `decode_request`/`predict` raises, so a bad request
comes back as a value and `encode_response` turns it into its own 422 while the rest of its batch is answered.

Concurrent requests are batched (`max_batch_size`, `batch_timeout`; LitServe's batched loop with a collector that
blocks instead of polling, `ArrivalBatchedLoop`) into one constrained beam search (`Recommender.recommend`). Before
each batch the worker looks at the items-version pointer (`dig items add`) and serves a new version without a
restart; the HTTP process does the same for `GET /items`. SIGTERM stops every process of the server.

Every /recommend response carries `X-Batch-Size` (requests in its batch), `X-Search-Ms` (the batch's ranking time)
and `X-Items-Version` headers, for load tests and debugging.
"""

# no `from __future__ import annotations`: LitServe hands the annotations of decode_request/encode_response to
# FastAPI as they are, and FastAPI cannot resolve string annotations from litserve's module
import logging
import multiprocessing as mp
import os
import signal
import time
from pathlib import Path
from queue import Empty
from typing import Annotated, Literal

import litserve as ls
from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from litserve.loops.base import _SENTINEL_VALUE, _StopLoopError
from litserve.loops.simple_loops import BatchedLoop
from litserve.utils import LitAPIStatus, LoopResponseType
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, StrictInt, StrictStr, WithJsonSchema

from deepinterestgr.serve.recommender import MAX_QUERY_HISTORY, Query, RequestError

log = logging.getLogger(__name__)

ITEM_KEY_MAX_LENGTH = 64


def _item_key(value):
    # one error per bad entry ("history[3]: ..."), not one per member of an int | str union
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and 1 <= len(value) <= ITEM_KEY_MAX_LENGTH:
        return value
    raise ValueError(f"expected an item id (int >= 0) or an ASIN (str of 1..{ITEM_KEY_MAX_LENGTH} characters), "
                     f"got {value!r}")


ItemKey = Annotated[int | str, PlainValidator(_item_key), WithJsonSchema({"anyOf": [
    {"type": "integer", "minimum": 0, "description": "item id"},
    {"type": "string", "minLength": 1, "maxLength": ITEM_KEY_MAX_LENGTH,
     "description": "ASIN (the catalog's source_id)"},
]})]


class RecommendRequest(BaseModel):
    """A user's history, oldest first; the model reads its last `max_history` items."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"history": ["B004Z209HS", 17, "B0009RF9DW"], "k": 10}]})

    history: list[ItemKey] = Field(min_length=1, max_length=MAX_QUERY_HISTORY,
                                   description="item ids (int) or ASINs (str), oldest first")
    k: StrictInt = Field(10, ge=1, description="how many items to return: at most the model's beam size (see /info); "
                                                "fewer when the no-repeat rule drops history items from the beam")
    user: StrictStr | None = Field(None, max_length=256, description="user id (hashed to a user token by models "
                                                                     "trained with num_user_buckets > 0)")


class RecommendedItem(BaseModel):
    item: int
    asin: str
    title: str
    sid: str = Field(description="Semantic ID, e.g. <a_12><b_200><c_7>")
    score: float = Field(description="beam log-probability + rerank_weight x item log-probability")


class RecommendResponse(BaseModel):
    items: list[RecommendedItem]
    version: int = Field(description="the items version (`dig items add`) that answered")


class CatalogItem(BaseModel):
    model_config = ConfigDict(extra="allow")

    item_id: int
    source_id: str
    title: str = ""
    sid: str
    version: int


def _field(loc) -> str:
    """("body", "history", 3) -> "history[3]" (the body prefix dropped)."""
    parts = list(loc)[1:] if loc and loc[0] == "body" else list(loc)
    return RequestError(tuple(parts), "").field or "body"


async def validation_error_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 with each message prefixed by its field (`history[3]: Input should be a valid integer`)."""
    detail = []
    for err in exc.errors():
        err = {k: v for k, v in err.items() if k in ("loc", "msg", "type", "input")}
        if err.get("type") == "json_invalid":  # loc ("body", position)
            err["msg"] = f"body: not valid JSON (at character {err['loc'][-1]}): {err.get('msg', '')}"
        else:
            msg = str(err.get("msg", "")).removeprefix("Value error, ")
            err["msg"] = f"{_field(err.get('loc', ()))}: {msg}"
        detail.append(err)
    return JSONResponse(status_code=422, content={"detail": _jsonable(detail)})


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


class ArrivalBatchedLoop(BatchedLoop):
    """LitServe's batched loop with a collector that does not poll.

    LitServe's own waits for a batch by asking the request queue (a multiprocessing manager: one IPC round trip
    per call) for an item every millisecond, whether or not requests come: an idle `dig serve` used 20% of a core
    (its queue manager 11.5%, its worker 8.6%). This one blocks in one call until the first request arrives, then
    waits at most `batch_timeout` after that arrival for the batch to fill (each further call returns as soon as a
    request is queued) and takes whatever else is already queued, up to `max_batch_size`.

    LitServe's queue protocol (request tuples, the stop sentinel and its exception) has private names only;
    pyproject allows litserve<0.3 and `test_the_batch_collector_speaks_litservers_queue_protocol` fails if they change.
    """

    def get_batch_requests(self, lit_api, request_queue, transport):
        payloads, timed_out = [], []
        try:
            item = request_queue.get(timeout=1.0)
        except Empty:
            return payloads, timed_out
        deadline = time.monotonic() + lit_api.batch_timeout
        apply_timeout = lit_api.request_timeout not in (-1, False, None)
        while True:
            if item == _SENTINEL_VALUE:
                raise _StopLoopError()
            response_queue_id, uid, timestamp, x_enc = item
            self.put_response(transport, response_queue_id, uid, (), LitAPIStatus.START, LoopResponseType.REGULAR)
            if apply_timeout and time.monotonic() - timestamp > lit_api.request_timeout:
                timed_out.append((response_queue_id, uid))
            else:
                payloads.append((response_queue_id, uid, x_enc))
            if len(payloads) >= lit_api.max_batch_size:
                break
            remaining = deadline - time.monotonic()
            try:
                item = request_queue.get(timeout=remaining) if remaining > 0 else request_queue.get_nowait()
            except Empty:
                break
        return payloads, timed_out


class PipeQueueServer(ls.LitServer):
    """A LitServer whose request queue is a `multiprocessing.Queue` (a pipe) instead of a manager proxy.

    LitServe's request queue lives in its multiprocessing manager: the HTTP handler's `put` is a blocking round trip
    to the manager process inside the event loop, and the worker's `get` is another. A pipe queue's `put` hands the
    request to a feeder thread and returns; the worker reads the pipe directly. The queue is created before LitServe
    forks the HTTP process and spawns the worker (both in `run`, after `_init_manager`), so both inherit it.
    """

    def _init_manager(self, num_api_servers: int):
        manager = super()._init_manager(num_api_servers)
        context = mp.get_context("spawn")
        for path in self.litapi_request_queues:
            self.litapi_request_queues[path] = context.Queue()
        return manager


class RecommendAPI(ls.LitAPI):
    """The inference worker: a `Recommender` behind LitServe's batching loop."""

    def __init__(self, run_dir: str, *, stage: str = "generate", checkpoint: str | None = None,
                 max_history: int | None = None, beam_size: int | None = None, rerank_weight: float | None = None,
                 exclude_history: bool | None = None, dense_candidates: int | None = None,
                 prior_weight: float | None = None, prior_candidates: int | None = None, threads: int = 1,
                 max_batch_size: int = 32,
                 batch_timeout: float = 0.005) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path="/recommend",
                         loop=ArrivalBatchedLoop() if max_batch_size > 1 else "auto")
        # only plain options here: this object is pickled into the spawned worker, which loads the model in setup
        self.options = {"stage": stage, "checkpoint": checkpoint, "max_history": max_history, "beam_size": beam_size,
                        "rerank_weight": rerank_weight, "exclude_history": exclude_history,
                        "dense_candidates": dense_candidates, "prior_weight": prior_weight,
                        "prior_candidates": prior_candidates}
        self.run_dir = str(run_dir)
        self.threads = threads
        self.recommender = None

    def setup(self, device) -> None:
        import torch

        from deepinterestgr.serve.recommender import Recommender

        torch.set_num_threads(self.threads)
        device = "cpu" if str(device) == "cpu" else str(device)
        self.recommender = Recommender(self.run_dir, device=device, **self.options)
        warm = self.recommender.items.current.version.catalog[0].item_id
        self.recommender.recommend([Query([warm], 1)])  # first-call allocations before /health says ready
        log.info("serving %s", self.recommender.options())

    def decode_request(self, request: RecommendRequest) -> Query:
        # shape and types were checked by FastAPI (RecommendRequest); nothing here may raise (it would fail the batch)
        return Query(list(request.history), request.k, request.user)

    def batch(self, inputs: list[Query]) -> list[Query]:
        return list(inputs)

    def predict(self, queries):
        single = isinstance(queries, Query)  # max_batch_size 1: LitServe's unbatched loop
        batch = [queries] if single else list(queries)
        start = time.perf_counter()
        self.recommender.refresh()
        outputs = self.recommender.recommend(batch)
        ms = (time.perf_counter() - start) * 1e3
        meta = {"X-Batch-Size": str(len(batch)), "X-Search-Ms": f"{ms:.2f}",
                "X-Items-Version": str(self.recommender.version)}
        results = [(out, meta) for out in outputs]
        return results[0] if single else results

    def unbatch(self, outputs):
        return list(outputs)

    def encode_response(self, output) -> RecommendResponse:
        # a finished response object: the HTTP process returns it as is (no response-model validation, no re-encoding)
        result, meta = output
        if isinstance(result, RequestError):
            return JSONResponse(status_code=result.status, content={"detail": [_jsonable(result.to_json())]},
                                headers=meta)
        return JSONResponse(content=result, headers=meta)


class ItemsEndpoint:
    """`GET /items/{id}` in the HTTP process, following the items-version pointer like the worker does."""

    def __init__(self, run_dir: str, tokenizer) -> None:
        from deepinterestgr.serve.recommender import ItemsWatcher

        self.watcher = ItemsWatcher(run_dir, tokenizer)

    def __call__(self, key: str) -> dict:
        self.watcher.refresh()
        served = self.watcher.current
        item = served.lookup_path(key)
        if item is None:
            raise HTTPException(404, detail=f"unknown item {key!r}: not an ASIN nor an item id "
                                            f"0..{served.num_items - 1} of items version {served.number}")
        return served.row(item)


def build_server(run_dir: str | Path, *, stage: str = "generate", checkpoint: str | None = None,
                 max_history: int | None = None, beam_size: int | None = None, rerank_weight: float | None = None,
                 exclude_history: bool | None = None, dense_candidates: int | None = None,
                 prior_weight: float | None = None, prior_candidates: int | None = None, max_batch_size: int = 32,
                 batch_timeout: float = 0.005, threads: int = 1, accelerator: str = "cpu", timeout: float = 30.0,
                 fast_queue: bool = False, request_queue: Literal["pipe", "manager"] = "pipe") -> ls.LitServer:
    """The LitServer of a run (not started): /recommend, /items/{id}, LitServe's /health and /info."""
    from deepinterestgr.serve.recommender import read_checkpoint_info, resolve_checkpoint

    if request_queue not in ("pipe", "manager"):
        raise ValueError(f"request_queue must be 'pipe' or 'manager', got {request_queue!r}")
    run_dir = str(Path(run_dir).resolve())
    path = resolve_checkpoint(run_dir, stage, checkpoint)
    info = read_checkpoint_info(path)  # memory-mapped: the HTTP process never builds the model
    ranking = dict(info["ranking"])
    overrides = {"beam_size": beam_size, "rerank_weight": rerank_weight, "exclude_history": exclude_history,
                 "dense_candidates": dense_candidates, "prior_weight": prior_weight,
                 "prior_candidates": prior_candidates}
    ranking.update({k: v for k, v in overrides.items() if v is not None})
    items = ItemsEndpoint(run_dir, info["tokenizer"])  # fails here, before any worker starts, on a bad catalog
    api = RecommendAPI(run_dir, stage=stage, checkpoint=str(path), max_history=max_history, beam_size=beam_size,
                       rerank_weight=rerank_weight, exclude_history=exclude_history,
                       dense_candidates=dense_candidates, prior_weight=prior_weight,
                       prior_candidates=prior_candidates, threads=threads,
                       max_batch_size=max_batch_size,
                       batch_timeout=batch_timeout)
    metadata = {"run_dir": run_dir, "stage": stage, "checkpoint": str(path),
                "max_history": max_history or info["max_history"], "num_items": items.watcher.current.num_items,
                "items_version_at_start": items.watcher.current.number,
                **{k: ranking.get(k) for k in ("beam_size", "rerank_weight", "exclude_history", "renormalize",
                                               "dense_candidates", "prior_weight", "prior_candidates")},
                "max_batch_size": max_batch_size, "batch_timeout": batch_timeout, "threads": threads,
                "request_queue": request_queue, "fast_queue": fast_queue}
    server_class = PipeQueueServer if request_queue == "pipe" else ls.LitServer
    server = server_class(api, accelerator=accelerator, devices=1, workers_per_device=1, timeout=timeout,
                          model_metadata=metadata, fast_queue=fast_queue)
    server.app.title, server.app.version = "DeepInterestGR serve", "1"
    server.app.description = f"Generative recommendations of {run_dir} ({stage} stage, beam {ranking.get('beam_size')})"
    for route in server.app.routes:
        if getattr(route, "path", None) == "/recommend":
            route.summary = "top-k items for a history"
            route.description = ("One constrained beam search for the requests batched with this one. 422 when the "
                                 "body is malformed or names an item the catalog lacks, each message naming its field.")
    server.app.add_exception_handler(RequestValidationError, validation_error_handler)
    server.app.add_api_route("/items/{key}", items, methods=["GET"], response_model=CatalogItem,
                             summary="catalog row and SID of an item id or ASIN",
                             responses={404: {"description": "no such item in the served items version"}})
    return server


def serve(run_dir: str, stage: Literal["generate", "rl"] = "generate", port: int = 8000,
          host: Literal["0.0.0.0", "127.0.0.1", "::"] = "127.0.0.1", checkpoint: str | None = None,
          max_history: int | None = None, beam_size: int | None = None, rerank_weight: float | None = None,
          exclude_history: bool | None = None, dense_candidates: int | None = None,
          prior_weight: float | None = None, prior_candidates: int | None = None, max_batch_size: int = 32,
          batch_timeout: float = 0.005, threads: int = 1, accelerator: Literal["cpu", "cuda", "auto"] = "cpu",
          timeout: float = 30.0,
          fast_queue: bool = False, request_queue: Literal["pipe", "manager"] = "pipe",
          log_level: str = "info") -> None:
    """Serve a run's recommendations over HTTP: POST /recommend, GET /items/{id}, GET /health, /openapi.json.

    Loads the best checkpoint of the stage and the run's current items version (`dig items add` versions are picked
    up while serving, without a restart). Concurrent requests are batched into one constrained beam search.

    Args:
        run_dir: the run directory (data/catalog.jsonl, generate/ or rl/ checkpoints, items/ versions).
        stage: serve the generator (`generate/checkpoints/best.ckpt`) or the RL policy (`rl/checkpoints/best.ckpt`).
        port: TCP port to listen on.
        host: interface to bind (127.0.0.1: this machine only; 0.0.0.0: every interface).
        checkpoint: serve this checkpoint file of the stage instead of the run's best one.
        max_history: history items the model reads (default: the datamodule's, recorded in the checkpoint).
        beam_size: constrained beam width, also the largest k a request may ask for (default: as evaluated).
        rerank_weight: item-level re-ranking weight (default: as the checkpoint was evaluated).
        exclude_history: never recommend a history item (default: as the checkpoint was evaluated).
        dense_candidates: join the beam's candidates with the item-level top-M it missed, scored by the generator's
            own SID log-probability (default: as the checkpoint was evaluated).
        prior_weight: weight of the item-to-item prior a hybrid checkpoint carries (`configs/model/
            cooccurrence_prior.yaml`; default: as the checkpoint was evaluated; 0: the generator alone).
        prior_candidates: join the prior's top-M items the beam missed to the candidates (a hybrid checkpoint;
            default: as the checkpoint was evaluated).
        max_batch_size: most requests ranked together in one beam search (the Beauty T5, beam 50, one CPU thread:
            145 / 183 / 220 / 170 / 160 users per CPU-second at batches of 8 / 16 / 32 / 64 / 128).
        batch_timeout: seconds the worker waits, after a batch's first request arrives, for more requests to
            join it (0: take what is queued).
        threads: torch threads of the inference worker.
        accelerator: device of the inference worker.
        timeout: seconds a request may wait in the queue before a 504.
        fast_queue: ZeroMQ instead of multiprocessing queues for responses.
        request_queue: how requests reach the worker: "pipe" (a multiprocessing queue; no round trip to a manager
            process per request) or "manager" (LitServe's own manager queue).
        log_level: uvicorn / LitServe log level.
    """
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    server = build_server(run_dir, stage=stage, checkpoint=checkpoint, max_history=max_history, beam_size=beam_size,
                          rerank_weight=rerank_weight, exclude_history=exclude_history,
                          dense_candidates=dense_candidates, prior_weight=prior_weight,
                          prior_candidates=prior_candidates, max_batch_size=max_batch_size,
                          batch_timeout=batch_timeout, threads=threads, accelerator=accelerator, timeout=timeout,
                          fast_queue=fast_queue, request_queue=request_queue)
    # LitServe shuts its processes down on KeyboardInterrupt only; a plain SIGTERM (docker stop, systemd, kill) would
    # end this process and leave the uvicorn, queue-manager and worker processes behind, the uvicorn one spinning
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.run(host=host, port=port, log_level=log_level, generate_client_file=False, num_api_servers=1)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum, frame):
    raise KeyboardInterrupt
