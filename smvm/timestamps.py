"""google.protobuf.Timestamp values a request may carry, checked before they become datetimes.

A Timestamp holds any int64 seconds, but only years 1-9999 are valid (and fit a datetime):
`ToDatetime` raises ValueError on the rest, which a servicer would answer INTERNAL.
"""

from __future__ import annotations

import datetime as dt

from google.protobuf import timestamp_pb2

from smvm.errors import InvalidArgument

MIN_SECONDS, MAX_SECONDS = -62_135_596_800, 253_402_300_799  # 0001-01-01T00:00:00Z, 9999-12-31T23:59:59Z


def valid_timestamp(ts: timestamp_pb2.Timestamp) -> bool:
    """Within the range google.protobuf.Timestamp allows (and datetime can hold)."""
    return MIN_SECONDS <= ts.seconds <= MAX_SECONDS and 0 <= ts.nanos < 1_000_000_000


def checked_datetime(field: str, ts: timestamp_pb2.Timestamp) -> dt.datetime:
    """The timestamp as an aware UTC datetime; INVALID_ARGUMENT naming `field` when out of range."""
    if not valid_timestamp(ts):
        raise InvalidArgument(field, "must be a time in years 1-9999")
    return ts.ToDatetime(dt.timezone.utc)
