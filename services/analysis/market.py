"""Market sizing on plain numbers: TAM / SAM / SOM top-down, SOM bottom-up, and their reconciliation.

- Top-down: imported market-size figures (Idea.grounding.market_sizes; the median per metric when
  several were imported) take precedence over the idea's market_size (USD/year), which ingestion
  may have derived; each figure's source is kept for the report.
- Bottom-up SOM: 12 x the final simulated month's revenue (USD/year), per Monte Carlo iteration,
  summarised by P10/P50/P90; P50 is the figure of record.
- Reconciliation: ratio = bottom-up P50 / top-down SOM; they disagree when the ratio is above
  `factor` or below 1/`factor`. With no top-down SOM the ratio is 0 and nothing is flagged.

Why only SOM has a bottom-up figure: the simulated market is built from the SAM (the orchestrator's
simconfig sets the reachable customers to SAM / (12 x the personas' WTP median)), so a "bottom-up"
SAM (reachable customers x price x 12) would return the input, and TAM lies outside the simulated
market altogether. Simulated adoption is evidence about the obtainable share only, which is what
the SOM reconciliation tests; the report says so in the TAM and SAM rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from services.analysis.stats import finite, wquantile


@dataclass
class MarketSizingResult:
    tam_usd: float
    sam_usd: float
    som_usd: float
    som_bottom_up_p10_usd: float
    som_bottom_up_usd: float  # P50
    som_bottom_up_p90_usd: float
    ratio: float
    disagreement: bool
    tam_known: bool
    notes: list[str] = field(default_factory=list)
    source: str = "idea.market_size"


def top_down_inputs(idea) -> tuple[float, float, float, str, list[str]]:
    """(TAM, SAM, SOM, source of the figures, notes) from grounding imports, else idea.market_size."""
    figures: dict[str, list[tuple[float, str]]] = {}
    for f in idea.grounding.market_sizes:
        metric = f.metric.strip().lower()
        if metric in ("tam", "sam", "som") and np.isfinite(f.value_usd) and f.value_usd > 0:
            figures.setdefault(metric, []).append((float(f.value_usd), f.source))
    ms = idea.market_size
    values = {"tam": ms.tam_usd, "sam": ms.sam_usd, "som": ms.som_usd}
    notes, sources = [], []
    for metric, rows in figures.items():
        vals = [v for v, _ in rows]
        values[metric] = float(np.median(vals))
        src = ", ".join(sorted({s for _, s in rows if s})) or "unnamed source"
        sources.append(f"{metric.upper()} from grounding ({src})")
        if len(vals) > 1:
            notes.append(f"{len(vals)} imported {metric.upper()} figures (${min(vals):,.0f} to ${max(vals):,.0f}): the median is used")
    source = "; ".join(sources) + ("; the rest from idea.market_size" if sources and len(figures) < 3 else "") if sources else "idea.market_size"
    return values["tam"], values["sam"], values["som"], source, notes


def top_down(tam: float, sam: float, som: float) -> tuple[float, float, float, list[str]]:
    tam, sam, som = (max(finite(x), 0.0) for x in (tam, sam, som))
    notes = []
    if tam <= 0:
        notes.append("TAM not given")
    if sam <= 0:
        notes.append("SAM not given")
    if som <= 0:
        notes.append("top-down SOM not given")
    if tam > 0 and sam > tam:
        notes.append("SAM exceeds TAM in the inputs")
    if sam > 0 and som > sam:
        notes.append("SOM exceeds SAM in the inputs")
    return tam, sam, som, notes


def bottom_up_som(final_month_revenue, weights) -> tuple[float, float, float]:
    """(P10, P50, P90) of 12 x final-month revenue across iterations."""
    annual = 12.0 * np.clip(np.nan_to_num(np.asarray(final_month_revenue, dtype=float)), 0.0, None)
    if annual.size == 0:
        return 0.0, 0.0, 0.0
    p10, p50, p90 = wquantile(annual, weights, [0.1, 0.5, 0.9])
    return float(p10), float(p50), float(p90)


def reconcile(som_top_down: float, som_bottom_up: float, factor: float) -> tuple[float, bool]:
    """(bottom-up / top-down, disagreement flag)."""
    if som_top_down <= 0:
        return 0.0, False
    ratio = max(som_bottom_up, 0.0) / som_top_down
    factor = max(factor, 1.0)
    return finite(ratio), bool(ratio > factor or ratio < 1.0 / factor)


def size_market(tam, sam, som, final_month_revenue, weights, factor: float, source: str = "idea.market_size",
                extra_notes: list[str] | None = None) -> MarketSizingResult:
    tam, sam, som, notes = top_down(tam, sam, som)
    notes = list(extra_notes or []) + notes
    p10, p50, p90 = bottom_up_som(final_month_revenue, weights)
    ratio, disagree = reconcile(som, p50, factor)
    if disagree:
        direction = "above" if ratio > 1 else "below"
        notes.append(
            f"bottom-up SOM (${p50:,.0f}/yr) is {ratio:.2f}x the top-down SOM (${som:,.0f}/yr): "
            f"simulated adoption is far {direction} the founder's estimate"
        )
    return MarketSizingResult(tam, sam, som, p10, p50, p90, ratio, disagree, tam > 0, notes, source)
