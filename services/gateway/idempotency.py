"""The gateway's part of Idempotency-Key (Stripe's model): check the header and say whose key it is.

The answers themselves are kept by the orchestrator, in its database, in the transaction that creates
the run (services/orchestrator/idempotency.py), so every gateway replica, and a restarted one, replays
the same answer and refuses the same conflicts. The gateway keeps no copy: one source of truth.
"""

from __future__ import annotations

import hashlib

from fastapi import Request

from services.orchestrator.idempotency import HEADER, MAX_KEY_LENGTH, check_key

# check_key: the header's value, or InvalidArgument naming the header (a 400 via errors.install),
# before any call, so nothing is stored for a malformed key.
__all__ = ["HEADER", "MAX_KEY_LENGTH", "check_key", "scope_of"]


def scope_of(request: Request) -> str:
    """Whose key it is: the caller's token identity (the same digest on every replica, never the token)."""
    client = getattr(request.state, "client_id", "")
    if client:
        return client
    return hashlib.sha256(request.headers.get("authorization", "").encode()).hexdigest()[:16]
