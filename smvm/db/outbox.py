"""The transactional outbox (smvm.outbox.Outbox) on the store's database.

`enqueue_in(tx, ...)` writes messages inside a caller's transaction (the run store uses it so a
state change and its callbacks commit together). `claim_due` leases a message to one dispatcher by
pushing its next_attempt_at to now + lease: another dispatcher sees it again only if the lease runs
out without a mark_* (a dispatcher that died mid-delivery). On PostgreSQL, `FOR UPDATE SKIP LOCKED`
lets replicas claim concurrently without waiting on each other; SQLite's single writer serialises.
`attempts` counts finished delivery attempts (mark_delivered and mark_failed add one).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Sequence

from smvm.db.database import POSTGRESQL, Database, Transaction
from smvm.outbox import DEAD, DELIVERED, PENDING, OutboxMessage

_COLUMNS = (
    "event_id, run_id, kind, url, payload, created_at, attempts, next_attempt_at, state, last_error, delivered_at, response"
)


def _row(message: OutboxMessage) -> tuple:
    return (
        message.event_id, message.run_id, message.kind, message.url, json.dumps(message.payload, sort_keys=True),
        message.created_at, message.attempts, message.next_attempt_at, message.state, message.last_error,
        message.delivered_at, message.response,
    )


def _message(row: tuple) -> OutboxMessage:
    (event_id, run_id, kind, url, payload, created_at, attempts, next_attempt_at, state, last_error,
     delivered_at, response) = row
    return OutboxMessage(
        event_id=event_id, run_id=run_id, kind=kind, url=url, payload=json.loads(payload),
        created_at=float(created_at), attempts=int(attempts), next_attempt_at=float(next_attempt_at),
        state=state, last_error=last_error, delivered_at=None if delivered_at is None else float(delivered_at),
        response=response,
    )


def enqueue_in(tx: Transaction, messages: Sequence[OutboxMessage]) -> None:
    """Insert `messages` inside an open transaction (a duplicate event_id aborts it)."""
    for message in messages:
        if message.state not in (PENDING, DELIVERED, DEAD):
            raise ValueError(f"outbox state: unknown {message.state!r}")
        tx.execute(f"INSERT INTO outbox ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", _row(message))


class SqlOutbox:
    """smvm.outbox.Outbox over the `outbox` table."""

    durable = True  # survives restarts (the admin API reports it)

    def __init__(self, db: Database):
        self.db = db

    def enqueue(self, messages: Sequence[OutboxMessage]) -> None:
        with self.db.transaction() as tx:
            enqueue_in(tx, messages)

    def claim_due(self, now: float, limit: int, lease_s: float) -> list[OutboxMessage]:
        skip_locked = " FOR UPDATE SKIP LOCKED" if self.db.dialect == POSTGRESQL else ""
        with self.db.transaction() as tx:
            rows = tx.all(
                f"SELECT {_COLUMNS} FROM outbox WHERE state = ? AND next_attempt_at <= ? "
                f"ORDER BY created_at, event_id LIMIT ?{skip_locked}",
                (PENDING, now, int(limit)),
            )
            claimed = []
            for row in rows:
                message = dataclasses.replace(_message(row), next_attempt_at=now + lease_s)
                tx.execute("UPDATE outbox SET next_attempt_at = ? WHERE event_id = ?", (message.next_attempt_at, message.event_id))
                claimed.append(message)
        return claimed

    def mark_delivered(self, event_id: str, at: float, response: str = "") -> None:
        with self.db.transaction() as tx:
            self._require(tx, event_id)
            tx.execute(
                "UPDATE outbox SET state = ?, delivered_at = ?, response = ?, attempts = attempts + 1, last_error = '' "
                "WHERE event_id = ?",
                (DELIVERED, at, response, event_id),
            )

    def mark_failed(self, event_id: str, error: str, next_attempt_at: float | None) -> None:
        with self.db.transaction() as tx:
            current = self._require(tx, event_id)
            if next_attempt_at is None:
                tx.execute(
                    "UPDATE outbox SET state = ?, last_error = ?, attempts = attempts + 1 WHERE event_id = ?",
                    (DEAD, error, event_id),
                )
            else:
                tx.execute(
                    "UPDATE outbox SET state = ?, last_error = ?, attempts = attempts + 1, next_attempt_at = ? WHERE event_id = ?",
                    (PENDING if current.state != DELIVERED else DELIVERED, error, next_attempt_at, event_id),
                )

    def get(self, event_id: str) -> OutboxMessage | None:
        with self.db.reading() as tx:
            row = tx.one(f"SELECT {_COLUMNS} FROM outbox WHERE event_id = ?", (event_id,))
        return _message(row) if row else None

    def list(self, state: str | None = None, run_id: str | None = None, limit: int = 100) -> list[OutboxMessage]:
        where, params = [], []
        if state is not None:
            where.append("state = ?")
            params.append(state)
        if run_id is not None:
            where.append("run_id = ?")
            params.append(run_id)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        with self.db.reading() as tx:
            rows = tx.all(
                f"SELECT {_COLUMNS} FROM outbox{clause} ORDER BY created_at DESC, event_id DESC LIMIT ?",
                (*params, int(limit)),
            )
        return [_message(r) for r in rows]

    def replay(self, event_id: str, now: float) -> OutboxMessage:
        with self.db.transaction() as tx:
            self._require(tx, event_id)
            tx.execute(
                "UPDATE outbox SET state = ?, attempts = 0, next_attempt_at = ?, last_error = '', delivered_at = NULL, "
                "response = '' WHERE event_id = ?",
                (PENDING, now, event_id),
            )
            return _message(tx.one(f"SELECT {_COLUMNS} FROM outbox WHERE event_id = ?", (event_id,)))

    def load_breaker(self, host: str) -> tuple[int, float | None]:
        with self.db.reading() as tx:
            row = tx.one("SELECT failures, opened_at FROM webhook_breakers WHERE host = ?", (host,))
        if row is None:
            return 0, None
        return int(row[0]), None if row[1] is None else float(row[1])

    def save_breaker(self, host: str, failures: int, opened_at: float | None, now: float) -> None:
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO webhook_breakers (host, failures, opened_at, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (host) DO UPDATE SET failures = excluded.failures, opened_at = excluded.opened_at, "
                "updated_at = excluded.updated_at",
                (host, int(failures), opened_at, now),
            )

    @staticmethod
    def _require(tx: Transaction, event_id: str) -> OutboxMessage:
        row = tx.one(f"SELECT {_COLUMNS} FROM outbox WHERE event_id = ?{tx.for_update()}", (event_id,))
        if row is None:
            raise KeyError(event_id)
        return _message(row)
