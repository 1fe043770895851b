"""Concurrent writers (issue #8): two evidence runs sharing one cache directory at once, and racing atomic writes.

The evidence cache promises that processes sharing `cache_dir` need no lock (each appends to its own file, values
are keyed by content hash, a partly written line is skipped): so two racing runs must each produce exactly what a
lone run produces, and afterwards the shared cache must answer every item of a third run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from deepinterestgr.artifacts import atomic_write_json

ARTIFACTS = ("items.jsonl", "text_embeddings.safetensors", "quality.safetensors")
BRANCHES = ("mine", "judge", "text")
NUM_ITEMS = 60

# Loads the text encoder first (the miner and the judge share it), then waits for its own go file, so
# the test decides when each writer starts and the writers' branches really overlap.
EVIDENCE_WRITER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from deepinterestgr.evidence.judges import RuleQualityJudge
    from deepinterestgr.evidence.miners import ZeroShotIntentMiner
    from deepinterestgr.evidence.stage import run_evidence
    from deepinterestgr.evidence.text_encoders import PackagedMiniLMEncoder

    run_dir, cache_dir, barrier = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    encoder = PackagedMiniLMEncoder()
    (barrier / f"ready-{Path(run_dir).name}").touch()
    deadline = time.time() + 300
    while not (barrier / f"go-{Path(run_dir).name}").exists() and time.time() < deadline:
        time.sleep(0.01)
    summary = run_evidence(run_dir, text_encoder=encoder, intent_miner=ZeroShotIntentMiner(),
                           quality_judge=RuleQualityJudge(), batch_size=8, cache_dir=cache_dir)
    print("SUMMARY " + json.dumps({"branches": summary["branches"], "failures": summary["failures"],
                                   "torn_cache_lines": summary["torn_cache_lines"]}))
""")


@pytest.fixture(scope="module")
def prepared_data(tmp_path_factory) -> Path:
    """A tiny synthetic catalog (data stage only, no images): the input every evidence run below copies."""
    from deepinterestgr.data.prepare import prepare_dataset

    run = tmp_path_factory.mktemp("prepared")
    stats = prepare_dataset(str(run), reader="synthetic", kcore=0, min_interactions=3,
                            reader_args={"num_items": NUM_ITEMS, "num_users": 40, "render_images": False})
    assert stats["items"] == NUM_ITEMS
    return run / "data"


def new_run(root: Path, name: str, data: Path) -> Path:
    run = root / name
    shutil.copytree(data, run / "data")
    return run


def start_writers(runs: list[Path], caches: list[Path], barrier: Path, *, stagger: Path | None = None
                  ) -> list[subprocess.Popen]:
    """One evidence process per run, released once every one has loaded its model: all together, or with
    `stagger`, the later ones as soon as the first has committed a batch to that cache branch directory (so they
    start from a cache another process is still writing)."""
    barrier.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", EVIDENCE_WRITER, str(run), str(cache), str(barrier)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for run, cache in zip(runs, caches)]
    deadline = time.time() + 300
    while len(list(barrier.glob("ready-*"))) < len(runs) and time.time() < deadline:
        if any(p.poll() is not None for p in procs):
            break  # a writer died while loading; its exit status is reported below
        time.sleep(0.05)
    (barrier / f"go-{runs[0].name}").touch()
    while stagger is not None and time.time() < deadline and procs[0].poll() is None:
        if any(f.stat().st_size for f in stagger.glob("*.jsonl")):
            break
        time.sleep(0.005)
    for run in runs[1:]:
        (barrier / f"go-{run.name}").touch()
    return procs


def finish(procs: list[subprocess.Popen]) -> list[dict]:
    summaries = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        line = next(x for x in out.splitlines() if x.startswith("SUMMARY "))
        summaries.append(json.loads(line[len("SUMMARY "):]))
    return summaries


def artifacts(run: Path) -> dict[str, bytes]:
    return {name: (run / "evidence" / name).read_bytes() for name in ARTIFACTS}


@pytest.mark.slow
@pytest.mark.parametrize("staggered", [False, True], ids=["together", "second-joins-mid-run"])
def test_two_evidence_writers_on_one_cache_match_a_lone_writer(prepared_data, tmp_path, staggered):
    """`together`: both start at once and write the same keys side by side. `second-joins-mid-run`: the second
    starts once the first has committed its first batch, so it reads a cache that is still being written."""
    shared = tmp_path / "shared_cache"
    run_a, run_b = new_run(tmp_path, "a", prepared_data), new_run(tmp_path, "b", prepared_data)
    racing = finish(start_writers([run_a, run_b], [shared, shared], tmp_path / "barrier-race",
                                  stagger=shared / "mine" if staggered else None))
    if staggered:  # the first's committed batch (8 items) was there when the second loaded the cache
        assert racing[1]["branches"]["mine"].get("cached", 0) >= 8, racing[1]

    # the lone reference (its own fresh cache) and a third run over the shared cache, side by side
    reference, rerun = new_run(tmp_path, "reference", prepared_data), new_run(tmp_path, "rerun", prepared_data)
    lone, again = finish(start_writers([reference, rerun], [tmp_path / "own_cache", shared], tmp_path / "barrier-2"))

    for summary in (*racing, lone, again):
        assert all(n == 0 for n in summary["failures"].values()), summary
    for summary in racing:  # each racer accounts for every item: computed itself or read from the other's batches
        for branch in BRANCHES:
            counts = summary["branches"][branch]
            assert counts.get("computed", 0) + counts.get("cached", 0) == NUM_ITEMS, (branch, counts)
    assert artifacts(run_a) == artifacts(reference)
    assert artifacts(run_b) == artifacts(reference)

    # everything the two racers wrote is readable: a fresh process over the shared cache computes nothing
    for branch in BRANCHES:
        counts = again["branches"][branch]
        assert counts.get("computed", 0) == 0 and counts["cached"] == NUM_ITEMS, (branch, counts)
    assert again["torn_cache_lines"] == 0
    assert artifacts(rerun) == artifacts(reference)
    writer_files = {p.name for p in (shared / "text").glob("*.jsonl")}
    assert 1 <= len(writer_files) <= 2  # one append-only file per writing process, none from the reader


# ------------------------------------------------------------------------------------------ atomic writes
ATOMIC_WRITER = textwrap.dedent("""
    import sys
    from deepinterestgr.artifacts import atomic_write_json
    path, writer, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    for i in range(n):
        # ~40 KB per write: a non-atomic write would be seen half-done by the reader
        atomic_write_json(path, {"writer": writer, "i": i, "blob": [f"{writer}-{i}"] * 4000})
""")


def check_complete(text: str) -> tuple[str, int]:
    doc = json.loads(text)  # raises on a torn or interleaved file
    assert doc["blob"] == [f"{doc['writer']}-{doc['i']}"] * 4000, "a file mixes two writes"
    return doc["writer"], doc["i"]


def test_racing_atomic_json_writers_always_leave_one_complete_document(tmp_path):
    path = tmp_path / "state.json"
    atomic_write_json(path, {"writer": "seed", "i": 0, "blob": ["seed-0"] * 4000})
    iterations = 150
    procs = [subprocess.Popen([sys.executable, "-c", ATOMIC_WRITER, str(path), w, str(iterations)],
                              stderr=subprocess.PIPE, text=True) for w in ("p1", "p2")]
    seen: set[tuple[str, int]] = set()
    reads = 0

    def read_until_done() -> None:
        nonlocal reads
        while any(p.poll() is None for p in procs):
            seen.add(check_complete(path.read_text(encoding="utf-8")))
            reads += 1

    # a thread writing in this process too: thread and process writers race on the same path
    thread_error: list[BaseException] = []

    def thread_writer() -> None:
        try:
            for i in range(iterations):
                atomic_write_json(path, {"writer": "t", "i": i, "blob": [f"t-{i}"] * 4000})
        except BaseException as e:  # noqa: BLE001 - re-raised in the test thread
            thread_error.append(e)

    writer = threading.Thread(target=thread_writer)
    writer.start()
    read_until_done()
    writer.join()
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read()[-2000:]
    assert not thread_error, thread_error
    final = check_complete(path.read_text(encoding="utf-8"))
    assert final[1] == iterations - 1  # the last write of whichever writer finished last
    assert reads > 10 and len({w for w, _ in seen}) >= 2  # the reader really saw the writers interleave
    assert not list(tmp_path.glob(".state.json.*.tmp")), "a temp file was left behind"
