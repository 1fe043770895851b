"""`dig serve` under load: loopback throughput and latency at several concurrencies against the offline limit.

1. Offline: the run's `Recommender` ranks the same histories in batches of `max_batch_size` in this process
   (`offline_rps`: what the server could reach if HTTP, queues and batching cost nothing; measured before and after
   the load test, the mean is the limit, as the machine is shared), and the search's cost against its own limit:
   one batch's constrained beam search vs the bare decoder passes it needs (encode once, one decoder step per SID
   level the search runs, on batch x beam rows; no trie masks / log-softmax / top-k / re-ranking), in CPU time.
2. Online: `dig serve` in a subprocess; closed-loop asyncio clients keep `concurrency` requests in flight until the
   level's request count (or time budget) is spent, once with httpx and once with a minimal asyncio HTTP/1.1
   client (httpx costs the shared cores 20-55% of one here). Requests are real test-user histories (all items but
   the last, as ASINs) from `<run>/data/sequences.jsonl`. Reports rps, p50/p95/p99 latency, errors, the batch sizes
   the server formed (`X-Batch-Size`) with its per-batch ranking time (`X-Search-Ms`), the CPU each process used
   (client, worker, HTTP + queues, from /proc) and `server_cpu_efficiency_pct`: requests per CPU-second of the
   server's processes against the Recommender's queries per CPU-second, a figure other load on the machine moves
   less than rps.

Writes benchmarks/results/serve.json (this invocation's rows; runs with other server settings stay under `earlier`).

    OMP_NUM_THREADS=1 python benchmarks/bench_serve.py --run_dir runs/beauty_quality/generators/t5-items-collab-cosine
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import httpx  # noqa: E402
import torch  # noqa: E402

from deepinterestgr.serve.recommender import Query, Recommender  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "serve.json"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    pos = (len(values) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def test_histories(run_dir: Path, n: int) -> list[list[int]]:
    """The first n users' test histories (every item but the last), as `dig test` ranks them."""
    out = []
    with open(run_dir / "data" / "sequences.jsonl", encoding="utf-8") as f:
        for line in f:
            items = json.loads(line)["items"]
            if len(items) >= 3:
                out.append(items[:-1])
            if len(out) == n:
                break
    return out


# --------------------------------------------------------------------------------------------------- offline
def timed(fns: dict, repeats: int) -> dict:
    """{name: {"wall": s, "cpu": s}} of `repeats` calls of each function, interleaved round-robin after one warm-up
    call each, minimum over the repeats. CPU time (this process's, one thread) is what the computation costs;
    wall time also holds the time other processes on the shared cores took from it."""
    for fn in fns.values():
        fn()
    wall, cpu = {name: [] for name in fns}, {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            w, c = time.perf_counter(), time.process_time()
            fn()
            cpu[name].append(time.process_time() - c)
            wall[name].append(time.perf_counter() - w)
    return {name: {"wall": min(wall[name]), "cpu": min(cpu[name]), "wall_median": statistics.median(wall[name])}
            for name in fns}


@torch.inference_mode()
def bare_decoder_passes(rec: Recommender, tokens: torch.Tensor, mask: torch.Tensor, steps: int) -> None:
    """What any beam search of width K must compute: one encoder pass and `steps` decoder steps on B x K rows (the
    first on B rows, as the search runs it: every beam starts from START), each extending the KV cache, with the
    logits the search reads (catalog-renormalised scores: the level's tokens only). No trie, no log-softmax, no
    top-k, no re-ranking."""
    gen, k, depth = rec.generator, rec.beam_size, steps
    b = tokens.shape[0]
    state = gen.repeat_state(gen.encode(tokens, mask), k)
    decoding = gen.start_decoding(state, tokens.new_zeros(b * k, 0))
    rows = torch.arange(b * k, device=tokens.device)
    tok = rec.ranker.tokenizer
    offsets, sizes = tok.level_offsets, tok.level_sizes
    for t in range(depth):
        if rec.ranker.renormalize:
            _, decoding = gen.decode_step_window(decoding, int(offsets[t]), int(offsets[t] + sizes[t]))
        else:
            _, decoding = gen.decode_step(decoding)
        if t + 1 < depth:
            parent = rows if t else rows // k * k  # after the first step every beam continues its user's one row
            decoding = gen.extend_decoding(decoding, parent, torch.full((b * k,), int(offsets[t]), dtype=torch.long))


def offline(rec: Recommender, histories: list[list[int]], asins: list[list[str]], batch: int, repeats: int) -> dict:
    from deepinterestgr.generate.search import constrained_beam_search

    queries = [Query(h, 10) for h in asins]
    chunks = [queries[i:i + batch] for i in range(0, len(queries), batch)]
    encoded = rec.encode(histories[:batch])
    tokens, mask = encoded.tokens, encoded.mask

    @torch.inference_mode()
    def search():
        constrained_beam_search(rec.generator, rec.ranker.trie(tokens.device), tokens, mask, beam_size=rec.beam_size,
                                renormalize=rec.ranker.renormalize)

    # the decoder steps the search makes: S, or S - 1 where the last level is forced for every beam (catalog-
    # renormalised scores and a collision-free table: END only, probability 1, so the search skips the model call)
    calls = []
    decode_step, window_step = rec.generator.decode_step, rec.generator.decode_step_window
    rec.generator.decode_step = lambda d: (calls.append(1), decode_step(d))[1]
    rec.generator.decode_step_window = lambda d, lo, hi: (calls.append(1), window_step(d, lo, hi))[1]
    try:
        search()
    finally:
        del rec.generator.decode_step, rec.generator.decode_step_window
    t = timed({"bare": lambda: bare_decoder_passes(rec, tokens, mask, len(calls)), "search": search,
               "rank": lambda: rec.rank(histories[:batch])}, repeats)
    # the reference throughput: every history once, in batches of max_batch_size, queries in and dicts out
    t.update(timed({"all": lambda: [rec.recommend(c) for c in chunks], "one": lambda: rec.recommend(queries[:1])},
                   max(1, repeats // 2)))
    cpu_ms = {k: v["cpu"] * 1e3 for k, v in t.items()}
    wall_ms = {k: v["wall"] * 1e3 for k, v in t.items()}
    return {"offline_rps": len(queries) / t["all"]["wall"], "offline_rps_cpu": len(queries) / t["all"]["cpu"],
            "offline_single_rps": 1 / t["one"]["wall"],
            "search_overhead": {"batch": len(histories[:batch]), "beam": rec.beam_size, "decoder_steps": len(calls),
                                "sid_length": rec.ranker.tokenizer.sid_length, "timing": "CPU time, min of repeats",
                                "bare_decoder_ms": cpu_ms["bare"], "beam_search_ms": cpu_ms["search"],
                                "overhead_pct": 100 * (cpu_ms["search"] - cpu_ms["bare"]) / cpu_ms["bare"],
                                "rank_ms": cpu_ms["rank"], "rerank_and_no_repeat_ms": cpu_ms["rank"] - cpu_ms["search"],
                                "wall_ms": {k: wall_ms[k] for k in ("bare", "search", "rank")},
                                "overhead_pct_wall": 100 * (wall_ms["search"] - wall_ms["bare"]) / wall_ms["bare"]}}


def offline_throughput(rec: Recommender, asins: list[list[str]], batch: int, repeats: int) -> float:
    queries = [Query(h, 10) for h in asins]
    chunks = [queries[i:i + batch] for i in range(0, len(queries), batch)]
    return len(queries) / timed({"all": lambda: [rec.recommend(c) for c in chunks]}, repeats)["all"]["wall"]


# --------------------------------------------------------------------------------------------------- online
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args, port: int, log_path: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "deepinterestgr.cli.main", "serve", "--run_dir", str(args.run_dir),
           "--port", str(port),
           "--max_batch_size", str(args.max_batch_size), "--batch_timeout", str(args.batch_timeout),
           "--threads", str(args.threads), "--log_level", "warning"]
    if args.fast_queue:
        cmd += ["--fast_queue", "true"]
    cmd += ["--request_queue", args.request_queue]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dig serve exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop_server(proc)
    raise RuntimeError(f"dig serve not healthy after 300 s:\n{log_path.read_text()[-3000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # this server's own process group: its worker and API processes
    except ProcessLookupError:
        pass


class RawHTTPClient:
    """One keep-alive HTTP/1.1 connection on asyncio streams: POST a prepared JSON body, read status and headers.

    The lightest load generator this machine can run (httpx spends ~1-5 ms of Python per request, on the same cores
    the server needs); `--client raw` measures how much of a throughput gap is the client's."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def post(self, path: str, body: bytes) -> tuple[int, dict]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                          b"\r\n%s" % (path.encode(), self.host.encode(), len(body), body))
        status = int((await self.reader.readline()).split()[1])
        headers = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            key, _, value = line.decode("latin-1").partition(":")
            headers[key.strip().lower()] = value.strip()
        if "content-length" in headers:
            await self.reader.readexactly(int(headers["content-length"]))
        else:  # chunked (not sent by uvicorn for JSONResponse, handled anyway)
            while (size := int((await self.reader.readline()).strip() or b"0", 16)):
                await self.reader.readexactly(size + 2)
            await self.reader.readline()
        return status, headers

    async def aclose(self) -> None:
        if self.writer is not None:
            self.writer.close()


class HttpxClient:
    """One httpx.AsyncClient with one connection. A single client's pool shared by all concurrent users cost
    O(connections) per request: 13 ms of client CPU per request at 64 connections, measured here."""

    def __init__(self, base: str) -> None:
        # identity: with httpx's default Accept-Encoding the server would gzip every response over 1 kB (LitServe's
        # GZipMiddleware) and the client gunzip it, both on the cores under test
        self.client = httpx.AsyncClient(base_url=base, timeout=60, limits=httpx.Limits(max_connections=1),
                                        headers={"Accept-Encoding": "identity", "Content-Type": "application/json"})

    async def post(self, path: str, body: bytes) -> tuple[int, dict]:
        r = await self.client.post(path, content=body)
        return r.status_code, r.headers

    async def aclose(self) -> None:
        await self.client.aclose()


async def load(port: int, bodies: list[bytes], concurrency: int, requests: int, budget_s: float,
               client: str = "httpx", cpu_snapshot=None) -> dict:
    """Closed loop: `concurrency` users with a connection each; every user sends its next request as soon as its
    previous one is answered, until `requests` were sent or `budget_s` passed."""
    latencies, batch_sizes, search_ms, errors, statuses = [], [], [], 0, {}
    next_index = 0
    make = (lambda: RawHTTPClient("127.0.0.1", port)) if client == "raw" else (
        lambda: HttpxClient(f"http://127.0.0.1:{port}"))
    clients = [make() for _ in range(concurrency)]
    try:
        await asyncio.gather(*(c.post("/recommend", b) for c, b in zip(clients, bodies)))  # connect + warm
        cpu_before = cpu_snapshot() if cpu_snapshot else None
        start = time.perf_counter()
        deadline = start + budget_s

        async def user(c):
            nonlocal next_index, errors
            while next_index < requests and time.perf_counter() < deadline:
                body = bodies[next_index % len(bodies)]
                next_index += 1
                sent = time.perf_counter()
                try:
                    status, headers = await c.post("/recommend", body)
                except (httpx.HTTPError, OSError, asyncio.IncompleteReadError, ValueError) as e:
                    errors += 1
                    statuses[type(e).__name__] = statuses.get(type(e).__name__, 0) + 1
                    continue
                latencies.append(time.perf_counter() - sent)
                statuses[status] = statuses.get(status, 0) + 1
                if status != 200:
                    errors += 1
                    continue
                batch_sizes.append(int(headers.get("x-batch-size", 0)))
                search_ms.append(float(headers.get("x-search-ms", "nan")))

        await asyncio.gather(*(user(c) for c in clients))
        elapsed = time.perf_counter() - start
        cpu = cpu_shares(cpu_before, cpu_snapshot(), elapsed) if cpu_snapshot else None
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    done = len(latencies)
    # each response reports its batch: a batch of n is seen n times, so weight by 1/n for per-batch figures
    batches = sum(1 / n for n in batch_sizes if n)
    busy = sum(s / n for s, n in zip(search_ms, batch_sizes) if n)
    return {"concurrency": concurrency, "requests": done, "seconds": elapsed, "rps": done / elapsed,
            "p50_ms": 1e3 * percentile(latencies, 0.5), "p95_ms": 1e3 * percentile(latencies, 0.95),
            "p99_ms": 1e3 * percentile(latencies, 0.99), "errors": errors,
            "statuses": {str(k): v for k, v in statuses.items()},
            "mean_batch_size": len(batch_sizes) / batches if batches else None,
            "max_batch_size_seen": max(batch_sizes, default=0), "batches": round(batches),
            "search_ms_per_batch": busy / batches if batches else None,
            "worker_busy_pct": 100 * busy / 1e3 / elapsed, "cpu_pct": cpu}


def process_cpu(server_pgid: int) -> dict:
    """CPU seconds so far of this process (the client) and of the server's processes, by role (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {"client": 0.0, "worker": 0.0, "http_and_queues": 0.0}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        seconds = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        if int(pid) == os.getpid():
            out["client"] += seconds
        elif int(fields[2]) == server_pgid:
            # the inference worker is LitServe's spawned process; the rest: main, uvicorn, the queue manager
            out["worker" if b"spawn_main" in cmd else "http_and_queues"] += seconds
    return out


def cpu_shares(before: dict, after: dict, seconds: float) -> dict:
    """% of one core each role used over `seconds` (the machine has os.cpu_count() cores, shared)."""
    return {k: round(100 * (after[k] - before[k]) / seconds, 1) for k in after}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run_dir", required=True, type=Path)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    p.add_argument("--requests", type=int, nargs="+", default=[64, 256, 256], help="per concurrency level")
    p.add_argument("--budget_s", type=float, default=120, help="time limit of each level")
    p.add_argument("--max_batch_size", type=int, default=32)
    p.add_argument("--batch_timeout", type=float, default=0.005)
    p.add_argument("--fast_queue", action="store_true")
    p.add_argument("--request_queue", choices=("pipe", "manager"), default="pipe",
                   help="dig serve --request_queue (measurements before it existed used LitServe's manager queue)")
    p.add_argument("--clients", nargs="+", choices=("httpx", "raw"), default=["httpx", "raw"],
                   help="load generators, each over every concurrency level: httpx, and a minimal asyncio HTTP/1.1 "
                        "client (far less CPU on the cores the server shares with it)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=31,
                   help="interleaved repeats of each offline timing, minimum taken (7 read 5.6-31%% overhead)")
    p.add_argument("--skip_offline", action="store_true", help="reuse offline figures of the results file")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    if len(args.requests) != len(args.concurrency):
        p.error("--requests needs one count per --concurrency level")
    torch.set_num_threads(args.threads)
    started = time.time()

    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    histories = test_histories(args.run_dir, max(args.requests))
    rec = Recommender(args.run_dir)
    catalog = rec.items.current.version.catalog
    asins = [[catalog[i].source_id for i in h] for h in histories]
    settings = {"run_dir": str(args.run_dir), "beam": rec.beam_size, "rerank_weight": rec.ranker.rerank_weight,
                "exclude_history": rec.ranker.exclude_history, "max_history": rec.max_history,
                "num_items": rec.items.current.num_items, "max_batch_size": args.max_batch_size,
                "batch_timeout": args.batch_timeout, "fast_queue": args.fast_queue, "threads": args.threads,
                "request_queue": args.request_queue,
                "requests": dict(zip(map(str, args.concurrency), args.requests)), "budget_s": args.budget_s,
                "histories": len(histories), "history_format": "ASINs"}
    if args.skip_offline and previous.get("offline"):
        off = previous["offline"]
    else:
        off = offline(rec, histories, asins, args.max_batch_size, args.repeats)
    print(f"offline: {off['offline_rps']:.1f} rps at batch {args.max_batch_size} ({off['offline_rps_cpu']:.1f} per "
          f"CPU-second, {off['offline_single_rps']:.1f} unbatched); search CPU "
          f"{off['search_overhead']['beam_search_ms']:.1f} ms vs bare decoder "
          f"{off['search_overhead']['bare_decoder_ms']:.1f} ms: overhead {off['search_overhead']['overhead_pct']:.1f}%",
          flush=True)

    port = free_port()
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_serve_{port}.log"
    proc = start_server(args, port, log_path)
    rows = []
    bodies = [json.dumps({"history": h, "k": 10}).encode() for h in asins]
    try:
        for client in args.clients:
            for c, n in zip(args.concurrency, args.requests):
                row = {"client": client, **asyncio.run(load(port, bodies, c, n, args.budget_s, client,
                                                            cpu_snapshot=lambda: process_cpu(proc.pid)))}
                rows.append(row)
                print(f"{client:<5} c={c:<3} {row['rps']:7.1f} rps  p50 {row['p50_ms']:7.1f}  "
                      f"p95 {row['p95_ms']:7.1f}  "
                      f"p99 {row['p99_ms']:7.1f} ms  errors {row['errors']}  batch {row['mean_batch_size'] or 0:.1f}  "
                      f"cpu % of a core {row['cpu_pct']}", flush=True)
    finally:
        stop_server(proc)
    # the machine is shared: the limit is measured before and after the load test, and their mean is the reference
    after = offline_throughput(rec, asins, args.max_batch_size, max(1, args.repeats // 2))
    off["offline_rps_before"], off["offline_rps_after"] = off["offline_rps"], after
    limit = (off["offline_rps_before"] + after) / 2
    for row in rows:
        row["offline_rps"] = limit
        row["of_offline_pct"] = 100 * row["rps"] / limit
        # contention-free view: requests per CPU-second the server's processes used, against the Recommender's own
        # queries per CPU-second (what HTTP, queues, pickling and smaller batches cost, whoever else is running)
        server_cores = (row["cpu_pct"]["worker"] + row["cpu_pct"]["http_and_queues"]) / 100
        row["rps_per_server_core"] = row["rps"] / server_cores if server_cores else None
        row["server_cpu_efficiency_pct"] = (100 * row["rps_per_server_core"] / off["offline_rps_cpu"]
                                            if server_cores else None)
    print(f"offline after the load test: {after:.1f} rps; limit used: {limit:.1f} rps")

    c64 = {r["client"]: r["of_offline_pct"] for r in rows if r["concurrency"] == 64}
    c64_cpu = {r["client"]: r["server_cpu_efficiency_pct"] for r in rows if r["concurrency"] == 64}
    result = {"settings": settings, "rows": rows, "offline": off, "search_overhead": off["search_overhead"],
              "goal": {"c64_of_offline_pct": c64, "c64_server_cpu_efficiency_pct": c64_cpu, "target_pct": 70,
                       "search_overhead_pct": off["search_overhead"]["overhead_pct"], "search_overhead_target_pct": 10},
              "torch": torch.__version__, "machine": platform.machine(), "cpu_count": os.cpu_count(),
              "load_avg_1m": os.getloadavg()[0], "wall_s": time.time() - started}
    key = lambda s: (s.get("max_batch_size"), s.get("batch_timeout"), s.get("fast_queue"), s.get("threads"),  # noqa: E731
                     s.get("request_queue", "manager"))
    earlier = [r for r in previous.get("earlier", []) if key(r["settings"]) != key(settings)]
    if previous.get("settings") and key(previous["settings"]) != key(settings):
        earlier.append({k: previous[k] for k in ("settings", "rows", "offline", "load_avg_1m") if k in previous})
    result["earlier"] = earlier
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"\n{'client':>6} {'concurrency':>11} {'rps':>8} {'p50_ms':>8} {'p95_ms':>8} {'p99_ms':>8} {'errors':>6} "
          f"{'offline_rps':>11} {'%':>5} {'batch':>6} {'cpu_eff%':>8}")
    for r in rows:
        print(f"{r['client']:>6} {r['concurrency']:>11} {r['rps']:8.1f} {r['p50_ms']:8.1f} {r['p95_ms']:8.1f} "
              f"{r['p99_ms']:8.1f} "
              f"{r['errors']:>6} {r['offline_rps']:11.1f} {r['of_offline_pct']:5.0f} {r['mean_batch_size'] or 0:6.1f} "
              f"{r['server_cpu_efficiency_pct'] or 0:8.0f}")
    print(f"wrote {args.out} ({time.time() - started:.0f} s)")


if __name__ == "__main__":
    main()
