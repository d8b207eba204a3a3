"""The T0+30..31 results sync: completed runs posted to TractionBuild, references recorded.

Each completed run not yet persisted gets one outbox message (event id "sync_<run_id>", so a
second sync never duplicates it) carrying the guide's persistence payload to
`POST {tractionbuild_base_url}/api/v1/projects/{project_id}/validation-results`. The dispatcher
retries it with backoff like any callback; when TractionBuild answers 2xx, `record` writes its
`reference_id` to outputs/persistence.json and the run's event log. Runs on a schedule (daily by
default, first pass at start-up) and on demand (DeliveryService.SyncResults).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Callable

from smvm.outbox import DEAD, DELIVERED, PENDING, OutboxMessage

from services.orchestrator.callbacks import payloads
from services.orchestrator.rundir import iso, utcnow

log = logging.getLogger("smvm.callbacks.sync")

PERSISTENCE_FILE = "outputs/persistence.json"
SYNCABLE_STATES = ("COMPLETED",)


def sync_event_id(run_id: str) -> str:
    return f"sync_{run_id}"


class ResultsSync:
    def __init__(self, settings, store, outbox, wake: Callable[[], None] | None = None):
        self.settings = settings
        self.store = store
        self.outbox = outbox
        self._wake = wake

    @property
    def enabled(self) -> bool:
        return bool(self.settings.tractionbuild_base_url)

    def url_for(self, project_id: str) -> str:
        return f"{self.settings.tractionbuild_base_url.rstrip('/')}/api/v1/projects/{project_id}/validation-results"

    def sync_now(self, run_ids: list[str] | None = None) -> list[dict]:
        """One pass; returns what it did per run (enqueued, replayed, pending, recorded, skipped)."""
        if run_ids:
            records = [self.store.get(r) for r in run_ids]
        else:
            records = [r for r in self.store if r.state in SYNCABLE_STATES]
        items = []
        for record in sorted(records, key=lambda r: (r.created_at, r.run_id)):
            items.append(self._sync_one(record))
        if any(i["action"] in ("enqueued", "replayed") for i in items) and self._wake is not None:
            self._wake()
        return items

    def _sync_one(self, record) -> dict:
        event_id = sync_event_id(record.run_id)
        item = {"run_id": record.run_id, "event_id": event_id, "action": "", "detail": ""}
        rundir = self.store.rundir(record.run_id)
        if rundir.has(PERSISTENCE_FILE):
            return dict(item, action="skipped", detail="already persisted")
        if record.state not in SYNCABLE_STATES:
            return dict(item, action="skipped", detail=f"status {record.state} is not COMPLETED")
        if not self.enabled:
            return dict(item, action="skipped", detail="tractionbuild_base_url is not configured")
        existing = self.outbox.get(event_id)
        if existing is None:
            body = payloads.results_payload(record.project_id, record.run_id, rundir.path)
            body["correlation_id"] = record.correlation_id
            self.outbox.enqueue([payloads.message(payloads.RESULTS_KIND, record.run_id, self.url_for(record.project_id),
                                                  body, event_id=event_id)])
            return dict(item, action="enqueued")
        if existing.state == DEAD:
            self.outbox.replay(event_id, time.time())
            return dict(item, action="replayed", detail=existing.last_error)
        if existing.state == DELIVERED:  # delivered, but the reference was not written (e.g. a crash)
            self.record(existing, existing.response)
            return dict(item, action="recorded")
        return dict(item, action="pending", detail=existing.last_error if existing.state == PENDING else "")

    def record(self, message: OutboxMessage, response_text: str) -> None:
        """TractionBuild accepted the results: keep its reference with the run."""
        if message.kind != payloads.RESULTS_KIND:
            return
        try:
            reference = json.loads(response_text or "{}").get("reference_id", "")
        except (ValueError, AttributeError):
            reference = ""
        doc = {"persistence_status": "COMPLETED", "persisted_at": iso(utcnow()),
               "tractionbuild_reference": reference, "event_id": message.event_id}
        self.store.rundir(message.run_id).write_json(PERSISTENCE_FILE, doc)
        self.store.update(message.run_id, "run.persisted", payload={"tractionbuild_reference": reference,
                                                                   "event_id": message.event_id})
        log.info("results persisted to TractionBuild", extra={"run_id": message.run_id, "reference": reference})

    async def run(self, stop: asyncio.Event) -> None:
        """A pass at start-up, then every results_sync_interval_s until `stop`."""
        while not stop.is_set():
            try:
                self.sync_now()
            except Exception:
                log.exception("results sync pass failed")
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.settings.results_sync_interval_s)
            except asyncio.TimeoutError:
                pass
