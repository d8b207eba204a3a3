"""Market-size figures with their sources -> MarketSizeFigure (USD per year).

Columns: metric (tam | sam | som), value and source (required: a figure without a source is not
evidence); currency (default USD) and year (1900-2100) optional. Values must be positive and at most
1e14 USD a year (about world GDP). Duplicates: the same metric, source and year.
"""

from __future__ import annotations

import statistics
from typing import Hashable, Mapping, Sequence

from smvm.v1 import grounding_pb2

from services.ingestion import fx, validate
from services.ingestion.adapters.base import Cells, RowError

METRICS = ("tam", "sam", "som")


class MarketSizeAdapter:
    kind = "market_size"
    required = ("metric", "value", "source")
    optional = ("currency", "year")
    # Columns coverage is measured on (defaulted ones such as currency are not).
    expected = ("metric", "value", "source", "year")
    aliases = {"figure": "metric", "type": "metric", "value_usd": "value", "amount": "value", "size": "value",
               "reference": "source", "url": "source"}
    min_rows = 1

    def parse(self, cells: Cells) -> grounding_pb2.MarketSizeFigure:
        metric = cells.text("metric", required=True, max_len=16).lower()
        if metric not in METRICS:
            raise RowError("metric", f"must be one of {', '.join(METRICS)}")
        currency = cells.currency()
        value = cells.number("value", low=0.0, high=1e16, low_open=True, required=True)
        usd = fx.load_fx_table().to_usd(value, currency, "currency")
        if usd > validate.MARKET_MAX_USD:
            raise RowError("value", f"exceeds {validate.MARKET_MAX_USD:g} USD per year after conversion")
        source = cells.text("source", required=True)
        year = cells.integer("year", low=1900, high=2100) or 0
        return grounding_pb2.MarketSizeFigure(metric=metric, value_usd=usd, source=source, year=year)

    def duplicate_key(self, item: grounding_pb2.MarketSizeFigure) -> Hashable | None:
        return (item.metric, item.source.casefold(), item.year)

    def outlier_values(self, item: grounding_pb2.MarketSizeFigure) -> Mapping[str, float]:
        return {f"value[{item.metric}]": item.value_usd}

    def attach(self, items: Sequence[grounding_pb2.MarketSizeFigure], grounding: grounding_pb2.GroundingData) -> None:
        grounding.market_sizes.extend(items)

    def file_warnings(self, items: Sequence[grounding_pb2.MarketSizeFigure]) -> list[str]:
        medians = {m: statistics.median([f.value_usd for f in items if f.metric == m])
                   for m in METRICS if any(f.metric == m for f in items)}
        out = []
        for big, small in (("tam", "sam"), ("sam", "som"), ("tam", "som")):
            if big in medians and small in medians and medians[small] > medians[big]:
                out.append(f"market_size:inconsistent: median {small.upper()} {medians[small]:.4g} exceeds "
                           f"median {big.upper()} {medians[big]:.4g} ({small.upper()} <= {big.upper()} broken)")
        return out


ADAPTER = MarketSizeAdapter()
