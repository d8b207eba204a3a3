"""Gabor-Granger answers: purchase intent at a price point -> GaborGrangerAnswer (USD/month, intent in [0, 1]).

Columns: price (required), and either purchase_intent (a probability in [0, 1], or "40%") or
intent_score (a 5-point scale, 1 = definitely not .. 5 = definitely would buy, mapped linearly:
(score - 1) / 4, a stated calibration rather than a fitted one); respondent_id, segment, currency,
billing_period optional. Duplicates: the same respondent at the same price point.
"""

from __future__ import annotations

from typing import Hashable, Mapping, Sequence

from smvm.v1 import grounding_pb2

from services.ingestion.adapters.base import Cells, RowError, to_monthly_usd

MAX_PRICE_USD = 1_000_000.0
SCALE_POINTS = 5


def score_to_intent(score: int) -> float:
    """5-point purchase-intent score -> probability, linearly: 1 -> 0, 3 -> 0.5, 5 -> 1."""
    return (score - 1) / (SCALE_POINTS - 1)


class GaborGrangerAdapter:
    kind = "gabor_granger"
    required = ("price",)
    optional = ("purchase_intent", "respondent_id", "segment", "currency", "billing_period")
    # Columns coverage is measured on (defaulted ones such as currency are not).
    expected = ("price", "purchase_intent", "respondent_id")
    aliases = {
        "id": "respondent_id", "respondent": "respondent_id", "price_point": "price", "price_usd": "price",
        "intent": "purchase_intent", "probability": "purchase_intent", "would_buy": "purchase_intent",
        "score": "intent_score", "likert": "intent_score",
    }
    min_rows = 30

    def parse(self, cells: Cells) -> grounding_pb2.GaborGrangerAnswer:
        currency = cells.currency()
        period = cells.period()
        amount = cells.number("price", low=0.0, high=1e12, low_open=True, required=True)
        price = to_monthly_usd(cells, amount, "price", currency, period)
        if price <= 0 or price > MAX_PRICE_USD:
            raise RowError("price", f"must be between 0.0001 and {MAX_PRICE_USD:g} USD per month after conversion")
        if cells.has("purchase_intent"):
            intent = cells.number("purchase_intent", low=0.0, high=1.0, percent_ok=True)
        elif cells.has("intent_score"):
            intent = score_to_intent(cells.integer("intent_score", low=1, high=SCALE_POINTS))
            cells.present.add("purchase_intent")
        else:
            raise RowError("purchase_intent", "is required (or intent_score on a 1-5 scale)")
        return grounding_pb2.GaborGrangerAnswer(
            respondent_id=cells.identifier("respondent_id") or f"row-{cells.row}",
            price=price, purchase_intent=intent, segment=cells.text("segment", max_len=200),
        )

    def duplicate_key(self, item: grounding_pb2.GaborGrangerAnswer) -> Hashable | None:
        return None if item.respondent_id.startswith("row-") else (item.respondent_id, round(item.price, 4))

    def outlier_values(self, item: grounding_pb2.GaborGrangerAnswer) -> Mapping[str, float]:
        return {"price": item.price}

    def attach(self, items: Sequence[grounding_pb2.GaborGrangerAnswer], grounding: grounding_pb2.GroundingData) -> None:
        grounding.gabor_granger.extend(items)

    def file_warnings(self, items: Sequence[grounding_pb2.GaborGrangerAnswer]) -> list[str]:
        points = {round(a.price, 4) for a in items}
        if len(points) < 3:
            return [f"gabor_granger:few_price_points: {len(points)} distinct price point(s); at least 3 are needed "
                    "to read a demand curve"]
        return []


ADAPTER = GaborGrangerAdapter()
