"""The report-document queue: arrival order, at most `concurrency` renders at once, failures and
shutdown (services/orchestrator/documents.py)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings, strategies as st

from services.orchestrator.documents import RenderQueue


async def _drain(queue: RenderQueue, timeout: float = 10.0) -> None:
    async def idle() -> None:
        while queue.waiting or queue.in_flight:
            await asyncio.sleep(0.001)

    await asyncio.wait_for(idle(), timeout)


@settings(max_examples=25, deadline=None)
@given(jobs=st.integers(1, 40), concurrency=st.integers(1, 5), delays=st.lists(st.integers(0, 3), min_size=1, max_size=8))
def test_every_job_renders_once_in_order_with_bounded_concurrency(jobs: int, concurrency: int, delays: list[int]) -> None:
    async def scenario() -> None:
        started: list[int] = []
        running = 0
        peak = 0

        async def render(job: int) -> None:
            nonlocal running, peak
            started.append(job)
            running += 1
            peak = max(peak, running)
            for _ in range(delays[job % len(delays)]):
                await asyncio.sleep(0)
            running -= 1

        queue: RenderQueue[int] = RenderQueue(render, concurrency)
        for job in range(jobs):
            queue.submit(job)
        await _drain(queue)
        await queue.close()
        assert started == list(range(jobs))  # FIFO: a run decided first is rendered first
        assert peak <= concurrency
        assert min(delays) == 0 or peak == min(concurrency, jobs)  # renders that yield do overlap

    asyncio.run(scenario())


async def test_a_failing_render_does_not_stop_the_queue() -> None:
    done: list[int] = []

    async def render(job: int) -> None:
        if job == 1:
            raise RuntimeError("analysis down")
        done.append(job)

    queue: RenderQueue[int] = RenderQueue(render, 1)
    for job in range(4):
        queue.submit(job)
    await _drain(queue)
    await queue.close()
    assert done == [0, 2, 3]


async def test_close_cancels_the_render_in_flight_and_drops_the_waiting_jobs() -> None:
    gate = asyncio.Event()
    started: list[int] = []
    cancelled: list[int] = []

    async def render(job: int) -> None:
        started.append(job)
        try:
            await gate.wait()
        except asyncio.CancelledError:
            cancelled.append(job)
            raise

    queue: RenderQueue[int] = RenderQueue(render, 2)
    for job in range(5):
        queue.submit(job)
    while len(started) < 2:
        await asyncio.sleep(0.001)
    assert queue.in_flight == 2 and queue.waiting == 3
    await queue.close()
    assert started == [0, 1] and sorted(cancelled) == [0, 1]
    assert queue.waiting == 0


def test_concurrency_must_be_positive() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        RenderQueue(lambda job: asyncio.sleep(0), 0)
