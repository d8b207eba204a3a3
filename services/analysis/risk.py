"""Risk assessment: market, competitive and execution risk, each 0 (none) to 100 (severe) with evidence.

Each category averages the sub-risks it has evidence for; every sub-risk is a plain transform of a
figure the analysis already computed, and its evidence line quotes that figure. A category with no
evidence at all scores 50 and says so (never invented). Show-stoppers are listed under the category
they belong to and force that category to 100.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from services.analysis.stats import lognormal_sigma, lognormal_survival, log_scale, wmean

LEVELS = ((34.0, "low"), (67.0, "medium"), (101.0, "high"))


@dataclass
class RiskScore:
    category: str
    score: float
    level: str
    evidence: list[str] = field(default_factory=list)


def _level(score: float) -> str:
    return next(name for bound, name in LEVELS if score < bound)


def _finish(category: str, parts: list[tuple[float, str]], show_stoppers: list[str]) -> RiskScore:
    if show_stoppers:
        return RiskScore(category, 100.0, "high", [f"show-stopper: {s}" for s in show_stoppers] + [t for _, t in parts])
    if not parts:
        return RiskScore(category, 50.0, "medium", ["no evidence: neutral 50"])
    score = float(np.clip(np.mean([s for s, _ in parts]), 0.0, 100.0))
    return RiskScore(category, score, _level(score), [t for _, t in parts])


def assess(used, policy, knockouts: list[tuple[str, float]], precedent: tuple[float, str] | None = None) -> list[RiskScore]:
    """Risk scores at the analysed price from a decide.Scenario (its evidence, finance and market).

    `precedent` is the memory precedent sub-risk (services.analysis.precedent): how similar ideas
    decided before fared, as one more averaged market sub-risk."""
    ev, f, m = used.evidence, used.finance, used.market
    knock = [t for t, _ in knockouts]

    market: list[tuple[float, str]] = []
    if f.revenue_p50 > 0:
        s = 100.0 * (1.0 - min(max(f.revenue_p10 / f.revenue_p50, 0.0), 1.0))
        market.append((s, f"demand uncertainty {s:.0f}: horizon revenue P10 ${f.revenue_p10:,.0f} vs P50 ${f.revenue_p50:,.0f}"))
    if ev.wtp_p50 > 0 and ev.price > 0:
        sigma = lognormal_sigma(ev.wtp_p10, ev.wtp_p50, ev.wtp_p90, policy.num("wtp_validation.default_sigma"))
        s = 100.0 * (1.0 - lognormal_survival(ev.price, ev.wtp_p50, sigma))
        market.append((s, f"price above WTP {s:.0f}: {s:.0f}% of customers' WTP lies below ${ev.price:,.2f} (median ${ev.wtp_p50:,.2f})"))
    if m.tam_known:
        lo, hi = policy.get("market_opportunity.tam_log_range_usd")
        s = 100.0 - float(log_scale(m.tam_usd, lo, hi))
        market.append((s, f"market size {s:.0f}: TAM ${m.tam_usd:,.0f}/yr on log [{lo:,.0f}, {hi:,.0f}]"))
    if m.som_usd > 0:
        s = 70.0 if m.disagreement else 0.0
        market.append((s, f"sizing disagreement {s:.0f}: bottom-up SOM is {m.ratio:.2f}x the top-down SOM"))
    if precedent is not None:
        market.append(precedent)

    competitive: list[tuple[float, str]] = []
    if ev.top_competitor_share is not None:
        dominant = policy.num("risk.dominant_competitor_share")
        s = 100.0 * min(max(ev.top_competitor_share / dominant, 0.0), 1.0)
        competitive.append((s, f"incumbent dominance {s:.0f}: {ev.top_competitor_name or 'top competitor'} holds "
                               f"{ev.top_competitor_share:.1%} (severe at {dominant:.0%})"))
    if ev.response_ratio is not None:
        s = 100.0 * (1.0 - min(max(ev.response_ratio, 0.0), 1.0))
        competitive.append((s, f"competitive response {s:.0f}: our share keeps {ev.response_ratio:.0%} when rivals re-price"))
    if ev.our_coverage is not None and ev.competitor_coverage is not None:
        s = float(np.clip(50.0 - 100.0 * (ev.our_coverage - ev.competitor_coverage), 0.0, 100.0))
        competitive.append((s, f"feature gap {s:.0f}: coverage {ev.our_coverage:.2f} vs competitors {ev.competitor_coverage:.2f}"))
    if ev.competitor_median_price and ev.price > 0:
        s = float(np.clip(50.0 + 50.0 * np.log2(ev.price / ev.competitor_median_price), 0.0, 100.0))
        competitive.append((s, f"price premium {s:.0f}: ${ev.price:,.2f} vs competitors' median ${ev.competitor_median_price:,.2f}"))

    execution: list[tuple[float, str]] = []
    if ev.build_months is not None:
        best, worst = policy.num("technical_feasibility.build_months_best"), policy.num("technical_feasibility.build_months_worst")
        s = float(np.clip(100.0 * (ev.build_months - best) / max(worst - best, 1e-9), 0.0, 100.0))
        execution.append((s, f"build {s:.0f}: {ev.build_months:g} months estimated"))
    if ev.team_coverage is not None:
        s = 100.0 * (1.0 - min(max(ev.team_coverage, 0.0), 1.0))
        execution.append((s, f"team gap {s:.0f}: team covers {ev.team_coverage:.0%} of the needed skills"))
    s = 100.0 * (1.0 - f.probability_payback_within)
    execution.append((s, f"capital at risk {s:.0f}: P(payback <= {f.payback_window_months} months) = {f.probability_payback_within:.0%}"))
    if f.costs.cac_usd > 0 and f.break_even_cac_p50 > 0:
        headroom = f.break_even_cac_p50 / f.costs.cac_usd
        s = float(np.clip(100.0 * (2.0 - headroom), 0.0, 100.0))  # 100 at no headroom, 0 at 2x
        execution.append((s, f"CAC headroom {s:.0f}: break-even CAC ${f.break_even_cac_p50:,.0f} vs assumed ${f.costs.cac_usd:,.0f}"))
    p_loss = 1.0 - wmean(f.npv > 0, ev.weights)
    execution.append((100.0 * p_loss, f"downside {100 * p_loss:.0f}: P(NPV <= 0) = {p_loss:.0%}"))

    market_knock = [t for t in knock if t.startswith(("no demand", "TAM"))]
    exec_knock = [t for t in knock if t not in market_knock]
    return [
        _finish("market", market, market_knock),
        _finish("competitive", competitive, []),
        _finish("execution", execution, exec_knock),
    ]
