"""Grounding-data adapters, one module per kind (see base.py for the interface)."""

from __future__ import annotations

from smvm.errors import InvalidArgument

from services.ingestion.adapters import competitors, gabor_granger, market_size, van_westendorp
from services.ingestion.adapters.base import Adapter

ADAPTERS: dict[str, Adapter] = {
    m.ADAPTER.kind: m.ADAPTER for m in (van_westendorp, gabor_granger, competitors, market_size)
}
KINDS = tuple(ADAPTERS)


def adapter_for(kind: str) -> Adapter:
    """The adapter of `kind`, or InvalidArgument on `kind`."""
    try:
        return ADAPTERS[kind.strip().lower()]
    except KeyError:
        raise InvalidArgument("kind", f"must be one of {', '.join(KINDS)}", reason="UNKNOWN_VALUE") from None
