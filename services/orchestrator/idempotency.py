"""Idempotency-Key answers of SubmitRun, kept in the store's database (Stripe's model).

The gateway passes the caller's key and whose it is (a digest of the caller's token); the first
run created under (scope, key) stores the request's digest, the run_id and the answer, in the same
transaction as the run itself. Any gateway replica, before or after a restart, then finds the same
row: the same request under the key replays the stored answer, another request is ALREADY_EXISTS
naming the key. Keys live `ttl_s` (>= 24 h) from their first use; an expired key is as good as
unused and `purge_expired` deletes the rows. Failed submissions store nothing (no run, no key), so
a corrected retry may reuse its key.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any, Callable

from smvm.db import Database
from smvm.db.database import Transaction
from smvm.errors import AlreadyExists, InvalidArgument

MAX_KEY_LENGTH = 255
MAX_SCOPE_LENGTH = 128
MIN_TTL_S = 24 * 3600.0
HEADER = "Idempotency-Key"  # how callers spell the key; errors name it so


def check_key(key: str) -> str:
    """A key as Stripe's model allows it: 1-255 visible characters (an HTTP header's, no controls)."""
    if not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise InvalidArgument(HEADER, f"must be 1-{MAX_KEY_LENGTH} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        raise InvalidArgument(HEADER, "must not contain control characters")
    return key


@dataclasses.dataclass(frozen=True)
class IdempotencyKey:
    scope: str
    key: str

    @classmethod
    def of(cls, scope: str, key: str) -> "IdempotencyKey | None":
        """The key of a request (None when it carries none), refused when malformed."""
        if not key:
            if scope:
                raise InvalidArgument("idempotency_key", "is required when idempotency_scope is set")
            return None
        check_key(key)
        if len(scope) > MAX_SCOPE_LENGTH or any(ord(c) < 0x20 or ord(c) == 0x7F for c in scope):
            raise InvalidArgument("idempotency_scope", f"must be at most {MAX_SCOPE_LENGTH} characters, none a control")
        return cls(scope, key)


@dataclasses.dataclass(frozen=True)
class KeyedAnswer:
    """What a key stands for: the request it was first used with, and the answer that request got."""

    digest: str
    run_id: str
    answer: dict[str, Any]
    created_at: float
    expires_at: float

    def check(self, digest: str) -> dict[str, Any]:
        """The stored answer for a retry of the same request; ALREADY_EXISTS naming the key otherwise."""
        if digest != self.digest:
            raise AlreadyExists(
                f"this {HEADER} was used with a different request (run {self.run_id})",
                field=HEADER, reason="IDEMPOTENCY_KEY_REUSED", metadata={"run_id": self.run_id},
            )
        return self.answer


class IdempotencyKeys:
    """The `idempotency_keys` table (migration 6)."""

    def __init__(self, ttl_s: float = MIN_TTL_S, clock: Callable[[], float] = time.time):
        if ttl_s < MIN_TTL_S:
            raise ValueError(f"idempotency_ttl_s: must be at least {MIN_TTL_S:g} s (24 h), got {ttl_s:g}")
        self.ttl_s = ttl_s
        self.clock = clock

    def find(self, tx: Transaction, key: IdempotencyKey) -> KeyedAnswer | None:
        row = tx.one(
            "SELECT digest, run_id, answer, created_at, expires_at FROM idempotency_keys WHERE scope = ? AND idempotency_key = ?",
            (key.scope, key.key),
        )
        if row is None or float(row[4]) <= self.clock():
            return None
        return KeyedAnswer(row[0], row[1], json.loads(row[2]), float(row[3]), float(row[4]))

    def insert(self, tx: Transaction, key: IdempotencyKey, digest: str, run_id: str, answer: dict[str, Any]) -> None:
        """Record the key's first use inside the caller's transaction. A live row for the key makes the
        insert fail (AlreadyExists), so two replicas racing on one key cannot both create a run."""
        now = self.clock()
        tx.execute("DELETE FROM idempotency_keys WHERE scope = ? AND idempotency_key = ? AND expires_at <= ?",
                   (key.scope, key.key, now))
        tx.execute(
            "INSERT INTO idempotency_keys (scope, idempotency_key, digest, run_id, answer, created_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (key.scope, key.key, digest, run_id, json.dumps(answer, sort_keys=True), now, now + self.ttl_s),
        )

    def purge_expired(self, db: Database) -> int:
        """Delete every expired key; return how many."""
        with db.transaction() as tx:
            return tx.execute("DELETE FROM idempotency_keys WHERE expires_at <= ?", (self.clock(),)).rowcount
