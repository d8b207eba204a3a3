"""`MemoryOutbox`: smvm.outbox.Outbox kept in this process's memory. NOT DURABLE.

It loses every pending and dead message when the orchestrator stops, so it does not yet meet the
issue's "survives a restart" promise; it exists so the dispatcher, the pipeline's emission points
and the admin surface can be built and tested before the run store's durable outbox (SQLite /
PostgreSQL rows written in the state change's transaction) is merged, which replaces it by
implementing the same Protocol.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Sequence

from smvm.outbox import DEAD, DELIVERED, PENDING, OutboxMessage


class MemoryOutbox:
    """Thread-safe; several dispatchers may claim from it, each message leased to one at a time."""

    durable = False

    def __init__(self) -> None:
        self._messages: dict[str, OutboxMessage] = {}
        self._leases: dict[str, float] = {}
        self._by_run: dict[str, list[str]] = {}  # run_id -> event ids, so a run's messages are found fast
        self._breakers: dict[str, tuple[int, float | None]] = {}
        self._lock = threading.Lock()

    def enqueue(self, messages: Sequence[OutboxMessage]) -> None:
        with self._lock:
            for message in messages:
                # Re-enqueueing an id is a no-op: emission points may run twice (e.g. a retried RPC).
                if message.event_id not in self._messages:
                    self._messages[message.event_id] = message
                    self._by_run.setdefault(message.run_id, []).append(message.event_id)

    def claim_due(self, now: float, limit: int, lease_s: float) -> list[OutboxMessage]:
        with self._lock:
            due = [
                m for m in self._messages.values()
                if m.state == PENDING and m.next_attempt_at <= now and self._leases.get(m.event_id, 0.0) <= now
            ]
            due.sort(key=lambda m: (m.created_at, m.event_id))
            claimed = due[:limit]
            for message in claimed:
                self._leases[message.event_id] = now + lease_s
            return claimed

    def _replace(self, event_id: str, **changes) -> OutboxMessage:
        message = self._messages[event_id]
        updated = dataclasses.replace(message, **changes)
        self._messages[event_id] = updated
        self._leases.pop(event_id, None)
        return updated

    def mark_delivered(self, event_id: str, at: float, response: str = "") -> None:
        with self._lock:
            message = self._messages[event_id]
            self._replace(event_id, state=DELIVERED, delivered_at=at, response=response,
                          attempts=message.attempts + 1, last_error="")

    def mark_failed(self, event_id: str, error: str, next_attempt_at: float | None) -> None:
        with self._lock:
            message = self._messages[event_id]
            if next_attempt_at is None:
                self._replace(event_id, state=DEAD, last_error=error, attempts=message.attempts + 1)
            else:
                self._replace(event_id, last_error=error, attempts=message.attempts + 1, next_attempt_at=next_attempt_at)

    def get(self, event_id: str) -> OutboxMessage | None:
        with self._lock:
            return self._messages.get(event_id)

    def list(self, state: str | None = None, run_id: str | None = None, limit: int = 100) -> list[OutboxMessage]:
        with self._lock:
            candidates = (
                self._messages.values() if run_id is None
                else (self._messages[e] for e in self._by_run.get(run_id, ()))
            )
            found = [m for m in candidates if state is None or m.state == state]
        found.sort(key=lambda m: (m.created_at, m.event_id), reverse=True)
        return found[:limit]

    def replay(self, event_id: str, now: float) -> OutboxMessage:
        with self._lock:
            if event_id not in self._messages:
                raise KeyError(event_id)
            return self._replace(event_id, state=PENDING, attempts=0, next_attempt_at=now, last_error="",
                                 delivered_at=None)

    def load_breaker(self, host: str) -> tuple[int, float | None]:
        with self._lock:
            return self._breakers.get(host, (0, None))

    def save_breaker(self, host: str, failures: int, opened_at: float | None, now: float) -> None:
        with self._lock:
            self._breakers[host] = (failures, opened_at)
