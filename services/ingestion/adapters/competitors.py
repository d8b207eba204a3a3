"""Competitor lists -> CompetitorRecord, as listed (the competitor stage normalises prices).

Columns: name and price (required); currency (default USD), billing_period (default monthly),
features (a JSON list, or text separated by ';' or '|'), market_share (a fraction in [0, 1] or
"12%"), source, seats (per-seat price for this many seats), free_tier, amortisation_months
optional. The price is checked here against the same rules the competitor stage applies (known
currency and period, at most MAX_MONTHLY_USD a month after conversion) so a row that would fail
there is refused now, with its reason. Duplicates: the same name (case-insensitive).
"""

from __future__ import annotations

import math
from typing import Hashable, Mapping, Sequence

from smvm.v1 import grounding_pb2

from services.ingestion import fx
from services.ingestion.adapters.base import Cells, RowError, to_monthly_usd

MAX_MONTHLY_USD = 10_000_000.0
MAX_SEATS = 100_000


class CompetitorsAdapter:
    kind = "competitors"
    required = ("name", "price")
    optional = ("currency", "billing_period", "features", "market_share", "source", "seats", "free_tier",
                "amortisation_months")
    # Columns coverage is measured on (defaulted ones such as currency are not).
    expected = ("name", "price", "features", "market_share", "source")
    aliases = {
        "competitor": "name", "product": "name", "price_amount": "price", "list_price": "price",
        "amount": "price", "period": "billing_period", "billing": "billing_period", "share": "market_share",
        "feature_list": "features", "url": "source", "free": "free_tier", "has_free_tier": "free_tier",
        "amortisation": "amortisation_months", "amortization_months": "amortisation_months",
    }
    min_rows = 1

    def parse(self, cells: Cells) -> grounding_pb2.CompetitorRecord:
        name = cells.text("name", required=True, max_len=200)
        currency = cells.currency()
        period = cells.period()
        amount = cells.number("price", low=0.0, high=1e12, required=True)
        months = cells.integer("amortisation_months", low=1, high=fx.MAX_AMORTISATION_MONTHS) or 0
        seats = cells.integer("seats", low=1, high=MAX_SEATS) or 0
        monthly = to_monthly_usd(cells, amount, "price", currency, period, months) * max(seats, 1)
        if monthly > MAX_MONTHLY_USD:
            raise RowError("price", f"exceeds {MAX_MONTHLY_USD:g} USD per month after conversion")
        record = grounding_pb2.CompetitorRecord(
            name=name, price_amount=amount, currency=currency, billing_period=period,
            features=cells.text_list("features"), source=cells.text("source"), seats=seats,
            free_tier=bool(cells.flag("free_tier")), amortisation_months=months,
        )
        share = cells.number("market_share", low=0.0, high=1.0, percent_ok=True)
        if share is not None:
            record.market_share = share
        return record

    def duplicate_key(self, item: grounding_pb2.CompetitorRecord) -> Hashable | None:
        return item.name.casefold()

    def outlier_values(self, item: grounding_pb2.CompetitorRecord) -> Mapping[str, float]:
        months = item.amortisation_months or fx.DEFAULT_AMORTISATION_MONTHS
        monthly = fx.monthly_usd(item.price_amount, item.currency, item.billing_period, months, field="price")
        return {"price": monthly * max(item.seats, 1)} if monthly > 0 else {}

    def attach(self, items: Sequence[grounding_pb2.CompetitorRecord], grounding: grounding_pb2.GroundingData) -> None:
        grounding.competitors.extend(items)

    def file_warnings(self, items: Sequence[grounding_pb2.CompetitorRecord]) -> list[str]:
        total = math.fsum(c.market_share for c in items if c.HasField("market_share"))
        out = []
        if total > 1.0 + 1e-9:
            out.append(f"competitors:shares_above_one: listed market shares sum to {total:.3f}")
        unsourced = sum(1 for c in items if not c.source)
        if unsourced:
            out.append(f"competitors:unsourced: {unsourced} row(s) name no source")
        return out


ADAPTER = CompetitorsAdapter()
