"""The correlation id of the request being served, carried across processes.

A context variable holds it for the current task; the server interceptor fills it from the
`x-correlation-id` metadata, the client interceptor copies it onto outgoing calls, and the JSON
log formatter stamps it on every line.
"""

from __future__ import annotations

import contextvars
import re
import uuid

METADATA_KEY = "x-correlation-id"
HTTP_HEADER = "X-Correlation-ID"
_VALID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

_current: contextvars.ContextVar[str] = contextvars.ContextVar("smvm_correlation_id", default="")


def new_id() -> str:
    return uuid.uuid4().hex


def is_valid(value: str) -> bool:
    return bool(_VALID.match(value))


def get() -> str:
    return _current.get()


def set(value: str) -> contextvars.Token:  # noqa: A001 - mirrors ContextVar.set
    return _current.set(value)


def reset(token: contextvars.Token) -> None:
    """Restore the id `token` replaced. A streaming call's generator may be finalised by the event
    loop in another context (its client went away); there is then nothing of ours to restore."""
    try:
        _current.reset(token)
    except ValueError:
        pass


def from_metadata(metadata) -> str:
    """The valid correlation id in gRPC metadata, or a fresh one."""
    for key, value in metadata or ():
        if key == METADATA_KEY and isinstance(value, str) and is_valid(value):
            return value
    return new_id()


def outgoing_metadata(extra=()) -> tuple[tuple[str, str], ...]:
    """Metadata for an outgoing call: the current correlation id plus `extra`."""
    cid = get()
    return ((METADATA_KEY, cid),) + tuple(extra) if cid else tuple(extra)
