"""The callbacks of one orchestrator process: outbox, dispatcher, emitter, results sync, admin RPCs.

`Callbacks` owns the background tasks (delivery, scheduled sync); `DeliveryServicer` is the thin
gRPC face operators reach through the gateway's admin routes and `smvm deliveries` / `smvm replay`.
"""

from __future__ import annotations

import asyncio
import logging

from google.protobuf import json_format, timestamp_pb2

from smvm.errors import InvalidArgument, NotFound
from smvm.ids import check_id, run_id_from
from smvm.outbox import DEAD, DELIVERED, PENDING, Outbox, OutboxMessage
from smvm.v1 import delivery_service_pb2 as dpb, delivery_service_pb2_grpc as dgrpc

from services.orchestrator.callbacks import payloads
from services.orchestrator.callbacks.dispatcher import DeliveryPolicy, Dispatcher
from services.orchestrator.callbacks.emitter import CallbackEmitter
from services.orchestrator.callbacks.memory_outbox import MemoryOutbox
from services.orchestrator.callbacks.sync import ResultsSync

log = logging.getLogger("smvm.callbacks")

STATES = (PENDING, DELIVERED, DEAD)


class Callbacks:
    def __init__(self, settings, store, outbox: Outbox | None = None):
        self.settings = settings
        self.outbox: Outbox = outbox if outbox is not None else MemoryOutbox()
        self.sync = ResultsSync(settings, store, self.outbox)
        self.dispatcher = Dispatcher(
            self.outbox, DeliveryPolicy.from_settings(settings), settings.webhook_signing_secrets(),
            extra_headers=self._extra_headers, on_delivered=self.sync.record,
        )
        self.sync._wake = self.dispatcher.wake
        self.emitter = CallbackEmitter(self.outbox, wake=self.dispatcher.wake)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    def _extra_headers(self, message: OutboxMessage) -> dict[str, str]:
        """The bearer credential of the receiving API: TractionBuild's API key for the results sync,
        the callback key (if configured) for updates and alerts."""
        key = self.settings.tractionbuild_api_key if message.kind == payloads.RESULTS_KIND else self.settings.callback_api_key
        return {"authorization": f"Bearer {key}"} if key else {}

    async def start(self) -> None:
        if not self.dispatcher.secrets:
            log.error("no webhook_secrets configured: callbacks stay queued, unsigned messages are never sent")
        else:
            self._tasks.append(asyncio.create_task(self.dispatcher.run(self._stop), name="callbacks:dispatch"))
        if self.sync.enabled:
            self._tasks.append(asyncio.create_task(self.sync.run(self._stop), name="callbacks:sync"))
        if not getattr(self.outbox, "durable", True):
            log.warning("callbacks use the in-process MemoryOutbox: undelivered callbacks are lost on restart")

    async def drain(self, timeout_s: float) -> None:
        """Give due messages (e.g. the last FAILED updates at shutdown) one more round."""
        try:
            await asyncio.wait_for(self.dispatcher.run_once(), timeout_s)
        except (asyncio.TimeoutError, Exception):
            log.warning("callbacks not drained before shutdown")

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.dispatcher.aclose()


def _ts(epoch: float | None) -> timestamp_pb2.Timestamp | None:
    if not epoch:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(epoch * 1e9))
    return ts


def delivery_message(message: OutboxMessage) -> dpb.Delivery:
    out = dpb.Delivery(
        event_id=message.event_id, run_id=message.run_id, kind=message.kind, url=message.url, state=message.state,
        attempts=message.attempts, last_error=message.last_error, response=message.response,
    )
    for field, value in (("created_at", message.created_at), ("next_attempt_at", message.next_attempt_at),
                         ("delivered_at", message.delivered_at)):
        ts = _ts(value)
        if ts is not None:
            getattr(out, field).CopyFrom(ts)
    json_format.ParseDict(message.payload, out.payload)
    return out


class DeliveryServicer(dgrpc.DeliveryServiceServicer):
    def __init__(self, callbacks: Callbacks):
        self.callbacks = callbacks

    async def ListDeliveries(self, request, context) -> dpb.ListDeliveriesResponse:
        if request.state and request.state not in STATES:
            raise InvalidArgument("state", f"must be one of {', '.join(STATES)}")
        run_id = check_id("run_id", run_id_from(request.run_id)) if request.run_id else None
        limit = request.limit or 100
        if not 1 <= limit <= 500:
            raise InvalidArgument("limit", "must be between 1 and 500")
        found = self.callbacks.outbox.list(state=request.state or None, run_id=run_id, limit=limit)
        return dpb.ListDeliveriesResponse(deliveries=[delivery_message(m) for m in found],
                                          durable=bool(getattr(self.callbacks.outbox, "durable", True)))

    async def ReplayDelivery(self, request, context) -> dpb.ReplayDeliveryResponse:
        if not request.event_id or len(request.event_id) > 200:
            raise InvalidArgument("event_id", "is required (at most 200 characters)")
        try:
            message = self.callbacks.outbox.replay(request.event_id, self.callbacks.dispatcher.clock())
        except KeyError:
            raise NotFound(f"delivery {request.event_id} not found", reason="DELIVERY_NOT_FOUND") from None
        self.callbacks.dispatcher.disabled_urls.discard(message.url)  # an operator's replay re-enables it
        self.callbacks.dispatcher.wake()
        return dpb.ReplayDeliveryResponse(delivery=delivery_message(message))

    async def SyncResults(self, request, context) -> dpb.SyncResultsResponse:
        run_ids = [check_id("run_ids", run_id_from(r)) for r in request.run_ids]
        items = self.callbacks.sync.sync_now(run_ids or None)
        return dpb.SyncResultsResponse(items=[dpb.SyncItem(**i) for i in items])
