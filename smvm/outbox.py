"""The transactional outbox's contract: callbacks to TractionBuild waiting to be delivered.

A state change and the callbacks it causes are written in one transaction (the run store writes the
rows); a dispatcher then delivers them at least once, with retries, and moves exhausted ones to a
dead-letter state that an operator can list and replay. This module holds only the shape both sides
agree on, so that the store (durable rows) and the dispatcher (HTTP delivery) can be built apart.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, Sequence

PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"


@dataclasses.dataclass(frozen=True)
class OutboxMessage:
    """One callback to deliver: POST `payload` as JSON to `url`."""

    # Globally unique; sent as the `webhook-id` header so receivers can de-duplicate.
    event_id: str
    run_id: str
    # "validation.update" | "validation.alert" | "validation.results" (the T0+30 sync)
    kind: str
    url: str
    payload: dict[str, Any]
    created_at: float
    attempts: int = 0
    # Epoch seconds before which no delivery is tried.
    next_attempt_at: float = 0.0
    state: str = PENDING
    last_error: str = ""
    delivered_at: float | None = None
    # What the receiver answered on success (e.g. TractionBuild's reference for a results sync).
    response: str = ""


class Outbox(Protocol):
    """Durable queue of callbacks. Implementations must be safe for several dispatchers at once:
    `claim_due` hands a message to one caller only until its lease expires."""

    def enqueue(self, messages: Sequence[OutboxMessage]) -> None:
        """Store new messages (inside the caller's transaction, where the store offers one)."""

    def claim_due(self, now: float, limit: int, lease_s: float) -> list[OutboxMessage]:
        """Pending messages with next_attempt_at <= now, oldest first, leased for `lease_s`."""

    def mark_delivered(self, event_id: str, at: float, response: str = "") -> None:
        """The receiver answered 2xx."""

    def mark_failed(self, event_id: str, error: str, next_attempt_at: float | None) -> None:
        """A failed attempt: retry at `next_attempt_at`, or dead-letter it when that is None."""

    def get(self, event_id: str) -> OutboxMessage | None: ...

    def list(self, state: str | None = None, run_id: str | None = None, limit: int = 100) -> list[OutboxMessage]:
        """Messages, newest first, optionally filtered by state and run."""

    def replay(self, event_id: str, now: float) -> OutboxMessage:
        """Put a dead (or delivered) message back to pending with attempts reset; KeyError if unknown."""

    def load_breaker(self, host: str) -> tuple[int, float | None]:
        """A callback host's circuit-breaker state: (consecutive failures, opened_at or None)."""

    def save_breaker(self, host: str, failures: int, opened_at: float | None, now: float) -> None:
        """Record a host's breaker state, so that it outlives the dispatcher that saw the failures."""
