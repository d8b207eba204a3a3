"""The gateway's part of Idempotency-Key (Stripe's model): check the header and say whose key it is.

The answers themselves are kept by the orchestrator, in its database, in the transaction that creates
the run (services/orchestrator/idempotency.py), so every gateway replica, and a restarted one, replays
the same answer and refuses the same conflicts. The gateway keeps no copy: one source of truth.
"""

from __future__ import annotations

import hashlib

from fastapi import Request

from services.gateway.errors import ApiError
from services.orchestrator.idempotency import HEADER, MAX_KEY_LENGTH

__all__ = ["HEADER", "MAX_KEY_LENGTH", "checked_key", "scope_of"]


def checked_key(key: str) -> str:
    """The header's value, or a 400 naming the header (before any call, so nothing is stored)."""
    if not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise ApiError(400, "INVALID_ARGUMENT", f"{HEADER} must be 1-{MAX_KEY_LENGTH} characters",
                       details={"field": HEADER, "reason": "INVALID_FIELD"})
    return key


def scope_of(request: Request) -> str:
    """Whose key it is: the caller's token identity (the same digest on every replica, never the token)."""
    client = getattr(request.state, "client_id", "")
    if client:
        return client
    return hashlib.sha256(request.headers.get("authorization", "").encode()).hexdigest()[:16]
