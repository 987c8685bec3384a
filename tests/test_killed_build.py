"""A build killed with ``kill -9`` leaves nothing running, and the next build clears its files.

The build runs in a child process, stalled after its first batch with worker processes up; the
test kills it and watches every process it started (fork server, workers, resource tracker).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from kg.build import build_store
from kg.radgraph import BUNDLED_SAMPLE
from kg.radgraph_reader import RadGraphReader
from kg.temporaries import process_alive

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table in /proc")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Stalls a two-worker build after it has inserted its first batch, with the store's temporary open.
DRIVER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from kg import build, radgraph_batches
    from kg.radgraph_reader import RadGraphReader

    def stall(con, batch):
        inserted(con, batch)
        print("stalled", flush=True)
        time.sleep(600)

    if __name__ == "__main__":
        radgraph_batches.CHUNK_BYTES = 4096
        inserted, build._insert_batch = build._insert_batch, stall
        corpus = Path(sys.argv[1])
        build.build_store(RadGraphReader([corpus], workers=2), sys.argv[2], source="radgraph",
                          inputs=[corpus], options={}, progress=False)
    """
)


def descendants(pid: int) -> set[int]:
    """Pids of every living process below ``pid`` (children, their children, ...)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def test_killed_worker_build_leaves_no_process_and_next_build_no_temporaries(tmp_path: Path) -> None:
    sample = json.loads(BUNDLED_SAMPLE.read_text(encoding="utf-8"))
    corpus = tmp_path / "corpus.jsonl"
    with open(corpus, "w", encoding="utf-8") as out:
        for k in range(20):
            for report_id, report in sample.items():
                out.write(json.dumps({"id": f"{report_id}#{k}", **report}) + "\n")
    store = tmp_path / "store.duckdb"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, str(driver), str(corpus), str(store)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout.readline().strip() == "stalled", child.stderr.read()
        started = descendants(child.pid)
        assert len(started) >= 3  # fork server and two workers (and the resource tracker)
        assert list(tmp_path.glob(".store.duckdb.*")), "the build should be writing its temporary"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(process_alive(pid) for pid in started) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in started if process_alive(pid)]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        child.stderr.close()

    assert list(tmp_path.glob(".store.duckdb.*"))  # the killed build's leftovers
    build_store(RadGraphReader([corpus]), store, source="radgraph", inputs=[corpus], options={}, progress=False)
    assert store.is_file()
    assert not list(tmp_path.glob(".store.duckdb.*"))
