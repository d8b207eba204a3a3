"""Callback delivery throughput: MemoryOutbox -> Dispatcher -> a loopback receiver (uvicorn) that
verifies every signature, as TractionBuild must. Prints messages/s for runs of one update stream
each (parallel across runs, in order within a run) and the cost of signing alone.

With `--barrier-ms L` (default: SMVM_STATUS_CACHE_STALENESS_MS's default) each figure is measured
twice in the same run, without the callback barrier and with it (a message is delivered no earlier
than L after the dispatcher first claims it): the burst rate, and a steady trickle (`--rate` messages
a second, each enqueued and the dispatcher woken as a committed state change does) whose latency
from enqueue to receipt shows what the barrier adds. Appends a dated row to
benchmarks/results/webhook_delivery.tsv.

    .venv/bin/python benchmarks/webhook_delivery.py [--messages 2000] [--runs 50] [--barrier-ms 250] [--rate 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import threading
import time
import timeit

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from common import REPO, append_row, machine, percentile
from services.orchestrator.callbacks import payloads, signing
from services.orchestrator.callbacks.dispatcher import DeliveryPolicy, Dispatcher
from services.orchestrator.callbacks.memory_outbox import MemoryOutbox
from smvm.config import Settings
from smvm.outbox import DELIVERED

SECRET = "benchmark-secret"


def receiver() -> tuple[uvicorn.Server, int, dict]:
    app, seen = FastAPI(), {"ok": 0, "received": {}}

    @app.post("/cb/validation/update")
    async def update(request: Request):
        body = await request.body()
        try:
            signing.verify(SECRET, dict(request.headers), body)
        except signing.SignatureError:
            return JSONResponse({}, status_code=401)
        seen["ok"] += 1
        seen["received"][request.headers[signing.ID_HEADER]] = time.perf_counter()
        return {"status": "acknowledged"}

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return server, port, seen


def _message(url: str, run: int, n: int):
    body = {"status": "RUNNING", "progress": 0.5, "stage_results": {s: "completed" for s in "abcdef"}, "n": n}
    return payloads.message("validation.update", f"RUN-{run}", url, body)


async def deliver(port: int, n: int, runs: int, barrier_s: float) -> float:
    """Seconds to deliver a burst of `n` messages over `runs` runs."""
    outbox = MemoryOutbox()
    url = f"http://127.0.0.1:{port}/cb/validation/update"
    outbox.enqueue([_message(url, i % runs, i) for i in range(n)])
    dispatcher = Dispatcher(outbox, DeliveryPolicy(batch_size=256, poll_interval_s=0.01, barrier_s=barrier_s), [SECRET])
    stop = asyncio.Event()
    started = time.perf_counter()
    runner = asyncio.create_task(dispatcher.run(stop))  # as the orchestrator runs it
    while len(outbox.list(state=DELIVERED, limit=n + 1)) < n:
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    stop.set()
    await runner
    await dispatcher.aclose()
    return elapsed


async def trickle(port: int, seen: dict, seconds: float, rate: float, runs: int, barrier_s: float) -> dict:
    """A steady `rate` of messages for `seconds`: delivered rate and enqueue-to-receipt latency."""
    outbox = MemoryOutbox()
    url = f"http://127.0.0.1:{port}/cb/validation/update"
    dispatcher = Dispatcher(outbox, DeliveryPolicy(poll_interval_s=0.5, barrier_s=barrier_s), [SECRET])
    stop = asyncio.Event()
    runner = asyncio.create_task(dispatcher.run(stop))
    enqueued: dict[str, float] = {}
    started = time.perf_counter()
    for i in range(int(seconds * rate)):
        await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
        message = _message(url, i % runs, i)
        enqueued[message.event_id] = time.perf_counter()
        outbox.enqueue([message])
        dispatcher.wake()  # what the run store's commit does
    while not all(e in seen["received"] for e in enqueued):
        await asyncio.sleep(0.01)
    received = sorted(seen["received"][e] for e in enqueued)
    stop.set()
    await runner
    await dispatcher.aclose()
    latency_ms = [(seen["received"][e] - t) * 1000 for e, t in enqueued.items()]
    # The delivered rate between the first and the last receipt: a constant added latency does not lower it.
    return {"rate": (len(received) - 1) / (received[-1] - received[0]), "p50": percentile(latency_ms, 50),
            "p99": percentile(latency_ms, 99)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--barrier-ms", type=int, default=Settings.model_fields["status_cache_staleness_ms"].default)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    server, port, seen = receiver()
    figures = {}
    for name, barrier_s in (("no barrier", 0.0), (f"barrier {args.barrier_ms} ms", args.barrier_ms / 1000)):
        burst = asyncio.run(deliver(port, args.messages, args.runs, barrier_s))
        steady = asyncio.run(trickle(port, seen, args.seconds, args.rate, args.runs, barrier_s))
        figures[name] = {"burst_rate": args.messages / burst, **steady}
    server.should_exit = True
    body = b'{"status":"RUNNING","progress":0.5}' * 10
    sign_us = timeit.timeit(lambda: signing.headers([SECRET], "evt_x", body), number=20000) / 20000 * 1e6
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f}; receiver verifying on the same machine")
    print(f"{'':20}{'burst msg/s':>12}{'steady msg/s':>13}{'latency p50 ms':>16}{'p99 ms':>9}")
    for name, f in figures.items():
        print(f"{name:20}{f['burst_rate']:>12.0f}{f['rate']:>13.1f}{f['p50']:>16.1f}{f['p99']:>9.1f}")
    print(f"burst: {args.messages} signed callbacks over {args.runs} runs; steady: {args.rate:.0f}/s for {args.seconds:.0f} s")
    print(f"signing alone: {sign_us:.1f} us per message")
    plain, barred = figures.values()
    path = append_row("webhook_delivery", {
        "messages": args.messages, "runs": args.runs, "barrier_ms": args.barrier_ms, "rate": args.rate,
        **{f"{k}_{m}": round(v[m], 1) for k, v in (("plain", plain), ("barrier", barred))
           for m in ("burst_rate", "rate", "p50", "p99")},
        "load_average": round(os.getloadavg()[0], 1),
    })
    print(f"the barrier added {barred['p50'] - plain['p50']:.0f} ms at the median; row appended to {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
