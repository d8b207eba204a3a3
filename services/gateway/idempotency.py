"""Idempotency-Key answers kept by the gateway (Stripe's model), per token, for `ttl_s` (>= 24 h).

The first successful answer to a key is stored with a digest of the request; a retry with the same
key and the same request gets that answer again (status, body, `Idempotent-Replayed: true`), and the
same key with a different request is a 409. Failures are not stored, so a corrected retry may reuse
the key. The orchestrator's own rule (same run_id + same body replays) backs this up across gateway
replicas and restarts; this store is in memory, per gateway process.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

MAX_KEY_LENGTH = 255
# Fields that do not change what a submission asks for (as in the orchestrator's request digest).
_IGNORED_TOP_LEVEL = ("correlation_id",)


@dataclass(frozen=True)
class StoredAnswer:
    digest: str
    status: int
    body: dict[str, Any]
    stored_at: float


def request_digest(data: dict[str, Any]) -> str:
    copy = {k: v for k, v in data.items() if k not in _IGNORED_TOP_LEVEL}
    metadata = dict(copy.get("metadata") or {})
    metadata.pop("initiated_at", None)
    if metadata:
        copy["metadata"] = metadata
    else:
        copy.pop("metadata", None)
    return hashlib.sha256(json.dumps(copy, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class IdempotencyStore:
    def __init__(self, ttl_s: float = 86_400.0, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic):
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self._answers: OrderedDict[tuple[str, str], StoredAnswer] = OrderedDict()

    def _expire(self) -> None:
        now = self.clock()
        while self._answers:
            key, answer = next(iter(self._answers.items()))
            if now - answer.stored_at < self.ttl_s and len(self._answers) <= self.max_entries:
                break
            del self._answers[key]

    def get(self, client: str, key: str) -> StoredAnswer | None:
        self._expire()
        return self._answers.get((client, key))

    def put(self, client: str, key: str, digest: str, status: int, body: dict[str, Any]) -> None:
        self._answers[(client, key)] = StoredAnswer(digest, status, body, self.clock())
        self._answers.move_to_end((client, key))
        self._expire()
