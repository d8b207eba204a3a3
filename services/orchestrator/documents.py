"""The queue of report documents (HTML and PDF with charts) still to render, a few at a time.

Documents are rendered after DECISION_READY and take about ten times the decision's time. Awaiting
each run's rendering in its own pipeline task kept every decided run's stage messages (personas,
landscape, the simulation result with its samples, twice) alive until its turn in the analysis
service came: when runs are decided faster than their documents render, that backlog grew without
bound (about 1-3 MiB of native protobuf memory per waiting run, invisible to tracemalloc), and the
analysis service received every waiting render at once. Here a waiting run costs its RunContext
only: the request is rebuilt from the run's committed stage outputs when its turn comes, and at most
`concurrency` renders are in flight per orchestrator, in the order the runs were decided.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Generic, TypeVar

log = logging.getLogger(__name__)

Job = TypeVar("Job")


class RenderQueue(Generic[Job]):
    """FIFO of jobs handed to `render` by at most `concurrency` workers (started on first use)."""

    def __init__(self, render: Callable[[Job], Awaitable[None]], concurrency: int = 1):
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._render = render
        self._concurrency = concurrency
        self._jobs: asyncio.Queue[Job] = asyncio.Queue()
        self._workers: list[asyncio.Task] = []
        self.in_flight = 0

    @property
    def waiting(self) -> int:
        """Jobs not yet started."""
        return self._jobs.qsize()

    def submit(self, job: Job) -> None:
        """Queue `job` (from the event loop); it starts after the jobs queued before it."""
        self._jobs.put_nowait(job)
        self._workers = [w for w in self._workers if not w.done()]
        while len(self._workers) < self._concurrency:
            self._workers.append(asyncio.create_task(self._work(), name="documents"))

    async def _work(self) -> None:
        while True:
            job = await self._jobs.get()
            self.in_flight += 1
            try:
                await self._render(job)
            except Exception:  # the render records its own failures; a bug must not stop the queue
                log.exception("document rendering failed")
            finally:
                self.in_flight -= 1
                del job  # a waiting worker holds nothing of the last run

    async def close(self) -> None:
        """Stop the workers; jobs not started are dropped (their runs keep their decision)."""
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers.clear()
        while not self._jobs.empty():
            self._jobs.get_nowait()
