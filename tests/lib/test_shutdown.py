"""A SIGTERM'd service exits soon after its drain even when a worker thread is still busy."""

from __future__ import annotations

import subprocess
import sys
import time

SCRIPT = """
import asyncio, concurrent.futures, sys, time
from smvm.server import _abandon_busy_workers
executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="svc-worker")
executor.submit(time.sleep, float(sys.argv[1]))
asyncio.run(_abandon_busy_workers(executor, "svc-worker", wait_s=0.5))
print("returned", flush=True)
"""


def _run(task_s: float) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(task_s)], capture_output=True, text=True, timeout=60)
    return done, time.monotonic() - started


def test_a_worker_busy_past_the_wait_is_abandoned_and_the_process_exits_0():
    done, took = _run(120.0)
    assert done.returncode == 0, done.stderr
    assert "returned" not in done.stdout  # it did not wait for the thread
    assert took < 30  # not the task's 120 s


def test_workers_that_finish_in_time_are_waited_for():
    done, _ = _run(0.1)
    assert done.returncode == 0, done.stderr
    assert "returned" in done.stdout
