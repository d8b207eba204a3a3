"""Standard Webhooks 1.0 signatures: what lets TractionBuild trust and de-duplicate a callback.

Headers: `webhook-id` (the outbox event id, stable across retries), `webhook-timestamp` (epoch
seconds of this attempt) and `webhook-signature` = "v1," + base64(HMAC-SHA256(secret,
"{id}.{timestamp}.{body}")), several space-separated while a secret is being rotated.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER = "webhook-id", "webhook-timestamp", "webhook-signature"
DEFAULT_TOLERANCE_S = 300


class SignatureError(ValueError):
    """The headers do not prove the body came from SMVM (or the message is too old)."""


def _secret_bytes(secret: str) -> bytes:
    # Standard Webhooks secrets are "whsec_" + base64; a plain string is used as its bytes.
    if secret.startswith("whsec_"):
        return base64.b64decode(secret[len("whsec_"):])
    return secret.encode()


def sign(secret: str, event_id: str, timestamp: int, body: bytes) -> str:
    """The `v1,<base64>` signature of one message."""
    signed = f"{event_id}.{timestamp}.".encode() + body
    digest = hmac.new(_secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secrets: list[str], event_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The three headers for `body`, signed with every active secret (rotation)."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        ID_HEADER: event_id,
        TIMESTAMP_HEADER: str(ts),
        SIGNATURE_HEADER: " ".join(sign(s, event_id, ts, body) for s in secrets),
    }


def verify(secret: str, headers_in: dict[str, str], body: bytes, *, now: float | None = None,
           tolerance_s: int = DEFAULT_TOLERANCE_S) -> str:
    """Check a received message as a receiver must; return its event id or raise SignatureError."""
    lowered = {k.lower(): v for k, v in headers_in.items()}
    try:
        event_id, ts_text, signatures = (lowered[ID_HEADER], lowered[TIMESTAMP_HEADER], lowered[SIGNATURE_HEADER])
        timestamp = int(ts_text)
    except (KeyError, ValueError):
        raise SignatureError("missing or malformed webhook headers") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise SignatureError("timestamp outside the tolerance")
    expected = sign(secret, event_id, timestamp, body)
    for candidate in signatures.split():
        if hmac.compare_digest(candidate.encode(), expected.encode()):
            return event_id
    raise SignatureError("no signature matches")
