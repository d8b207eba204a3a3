"""Callback delivery throughput: MemoryOutbox -> Dispatcher -> a loopback receiver (uvicorn) that
verifies every signature, as TractionBuild must. Prints messages/s for runs of one update stream
each (parallel across runs, in order within a run) and the cost of signing alone.

    .venv/bin/python benchmarks/webhook_delivery.py [--messages 2000] [--runs 50]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import threading
import time
import timeit

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from services.orchestrator.callbacks import payloads, signing
from services.orchestrator.callbacks.dispatcher import DeliveryPolicy, Dispatcher
from services.orchestrator.callbacks.memory_outbox import MemoryOutbox
from smvm.outbox import DELIVERED

SECRET = "benchmark-secret"


def receiver() -> tuple[uvicorn.Server, int, dict]:
    app, seen = FastAPI(), {"ok": 0}

    @app.post("/cb/validation/update")
    async def update(request: Request):
        body = await request.body()
        try:
            signing.verify(SECRET, dict(request.headers), body)
        except signing.SignatureError:
            return JSONResponse({}, status_code=401)
        seen["ok"] += 1
        return {"status": "acknowledged"}

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return server, port, seen


async def deliver(port: int, n: int, runs: int) -> float:
    outbox = MemoryOutbox()
    url = f"http://127.0.0.1:{port}/cb/validation/update"
    body = {"status": "RUNNING", "progress": 0.5, "stage_results": {s: "completed" for s in "abcdef"}}
    outbox.enqueue([payloads.message("validation.update", f"RUN-{i % runs}", url, dict(body, n=i)) for i in range(n)])
    dispatcher = Dispatcher(outbox, DeliveryPolicy(batch_size=256, poll_interval_s=0.01), [SECRET])
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    server, port, seen = receiver()
    elapsed = asyncio.run(deliver(port, args.messages, args.runs))
    server.should_exit = True
    body = b'{"status":"RUNNING","progress":0.5}' * 10
    sign_us = timeit.timeit(lambda: signing.headers([SECRET], "evt_x", body), number=20000) / 20000 * 1e6
    print(f"delivered {seen['ok']} signed callbacks over {args.runs} runs in {elapsed:.2f} s: "
          f"{args.messages / elapsed:.0f} messages/s (receiver verifying on the same machine)")
    print(f"signing alone: {sign_us:.1f} us per message")


if __name__ == "__main__":
    main()
