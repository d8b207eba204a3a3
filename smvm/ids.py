"""Identifiers that become path components must match one safe pattern."""

from __future__ import annotations

import datetime as _dt
import re
import uuid

from smvm.errors import InvalidArgument

SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_id(field: str, value: str) -> str:
    """Return `value` if it is a safe path component, else raise InvalidArgument naming `field`."""
    if not value:
        raise InvalidArgument(field, "is required")
    if not SAFE_ID.fullmatch(value) or ".." in value:  # fullmatch: `$` alone lets "id\n" through
        raise InvalidArgument(
            field, "must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$ and contain no '..'", reason="UNSAFE_ID"
        )
    return value


def new_run_id(now: _dt.datetime | None = None) -> str:
    """RUN-YYYYMMDD-HHMMSS-xxxxxxxx, the guide's run id style."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    return f"RUN-{now:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:8]}"


def validation_id(run_id: str) -> str:
    return f"VAL-{run_id}"


def run_id_from(any_id: str) -> str:
    """Accept a run_id or its validation_id."""
    return any_id[4:] if any_id.startswith("VAL-") else any_id
