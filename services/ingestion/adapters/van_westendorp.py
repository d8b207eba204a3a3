"""Van Westendorp survey answers: four price thresholds per respondent -> VanWestendorpAnswer (USD/month).

Columns: too_cheap, cheap, expensive, too_expensive (required); respondent_id, segment, currency
(default USD), billing_period (default monthly) optional. A row is refused when a price is missing,
not positive, above MAX_PRICE_USD per month, or the four are out of order (too cheap <= cheap <=
expensive <= too expensive: the questionnaire's own logic). Duplicates: a repeated respondent_id.
"""

from __future__ import annotations

from typing import Hashable, Mapping, Sequence

from smvm.v1 import grounding_pb2

from services.ingestion.adapters.base import Cells, RowError, to_monthly_usd

THRESHOLDS = ("too_cheap", "cheap", "expensive", "too_expensive")
MAX_PRICE_USD = 1_000_000.0


class VanWestendorpAdapter:
    kind = "van_westendorp"
    required = THRESHOLDS
    optional = ("respondent_id", "segment", "currency", "billing_period")
    # Columns coverage is measured on (defaulted ones such as currency are not).
    expected = THRESHOLDS + ("respondent_id",)
    aliases = {
        "id": "respondent_id", "respondent": "respondent_id",
        "too_low": "too_cheap", "too_inexpensive": "too_cheap",
        "bargain": "cheap", "inexpensive": "cheap",
        "getting_expensive": "expensive",
        "too_high": "too_expensive",
    }
    # Below this many respondents a Van Westendorp curve is too noisy to read (a common rule of thumb).
    min_rows = 30

    def parse(self, cells: Cells) -> grounding_pb2.VanWestendorpAnswer:
        currency = cells.currency()
        period = cells.period()
        prices = []
        for name in THRESHOLDS:
            amount = cells.number(name, low=0.0, high=1e12, low_open=True, required=True)
            monthly = to_monthly_usd(cells, amount, name, currency, period)
            if monthly <= 0:
                raise RowError(name, "is below 0.0001 USD per month after conversion")
            if monthly > MAX_PRICE_USD:
                raise RowError(name, f"exceeds {MAX_PRICE_USD:g} USD per month after conversion")
            prices.append(monthly)
        for (lo_name, lo), (hi_name, hi) in zip(zip(THRESHOLDS, prices), zip(THRESHOLDS[1:], prices[1:])):
            if lo > hi:
                raise RowError(hi_name, f"must be at least {lo_name} (too cheap <= cheap <= expensive <= too expensive)")
        return grounding_pb2.VanWestendorpAnswer(
            respondent_id=cells.identifier("respondent_id") or f"row-{cells.row}",
            too_cheap=prices[0], cheap=prices[1], expensive=prices[2], too_expensive=prices[3],
            segment=cells.text("segment", max_len=200),
        )

    def duplicate_key(self, item: grounding_pb2.VanWestendorpAnswer) -> Hashable | None:
        return None if item.respondent_id.startswith("row-") else item.respondent_id

    def outlier_values(self, item: grounding_pb2.VanWestendorpAnswer) -> Mapping[str, float]:
        return {name: getattr(item, name) for name in THRESHOLDS}

    def attach(self, items: Sequence[grounding_pb2.VanWestendorpAnswer], grounding: grounding_pb2.GroundingData) -> None:
        grounding.van_westendorp.extend(items)

    def file_warnings(self, items: Sequence[grounding_pb2.VanWestendorpAnswer]) -> list[str]:
        return []


ADAPTER = VanWestendorpAdapter()
