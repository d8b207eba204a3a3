"""The seven-dimension decision matrix, scored per Monte Carlo iteration.

Each dimension yields a 0-100 score per iteration (a scalar piece of evidence is broadcast), so the
composite can be evaluated on every iteration and the confidence read off as the share of
iterations landing in the chosen band. A dimension with no evidence scores the policy's neutral
score and is flagged neutral; it is never invented.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from services.analysis.policy import DIMENSIONS, Policy
from services.analysis.stats import linear_scale, log_scale, lognormal_sigma, lognormal_survival, wmean


@dataclass
class Evidence:
    """Everything the matrix scores, at one price."""

    weights: np.ndarray  # (n,) Monte Carlo weights, sum 1
    price: float
    horizon_months: int
    tam_usd: float  # 0 when not given
    som_bottom_up: np.ndarray  # (n,) annualised final-month revenue, USD/year
    wtp_p10: float
    wtp_p50: float  # 0 when unknown
    wtp_p90: float
    retention: np.ndarray  # (n,) share(price) / share(lowest grid price)
    roi: np.ndarray  # (n,)
    payback: np.ndarray  # (n,) month, 0 = never
    revenue_p10: float
    revenue_p50: float
    our_share: float | None = None  # final-month mean share
    top_competitor_share: float | None = None
    top_competitor_name: str = ""
    response_ratio: float | None = None  # share with / without competitive response
    our_coverage: float | None = None  # mean feature coverage
    competitor_coverage: float | None = None
    competitor_median_price: float | None = None
    build_months: float | None = None
    team_coverage: float | None = None
    bias_passed: bool | None = None
    bias_flags: list[str] = field(default_factory=list)
    market_disagreement: bool = False
    iterations: int = 0
    # per-iteration q_k(price) / mean q(price): our share moves with each simulated world's demand
    our_share_scale: np.ndarray | None = None
    # imported surveys (Idea.grounding): share of Van Westendorp respondents for whom the price is
    # acceptable, and Gabor-Granger intent at the price relative to intent at the lowest surveyed price
    survey_acceptable: float | None = None
    survey_respondents: int = 0
    survey_intent_retention: float | None = None


@dataclass
class DimensionScore:
    name: str
    weight: float
    per_iteration: np.ndarray
    score: float
    evidence: str
    neutral: bool


def _combine(parts: list[tuple[float, np.ndarray | float]], n: int) -> np.ndarray:
    total = sum(w for w, _ in parts)
    out = np.zeros(n)
    for w, s in parts:
        out = out + (w / total) * np.broadcast_to(np.asarray(s, dtype=float), (n,))
    return out


def _market(ev: Evidence, policy: Policy, n: int):
    lo, hi = policy.get("market_opportunity.som_log_range_usd")
    som = log_scale(ev.som_bottom_up, lo, hi)
    som_p50 = float(np.median(ev.som_bottom_up)) if ev.som_bottom_up.size else 0.0
    text = f"bottom-up SOM (12 x final-month revenue) median ${som_p50:,.0f}/yr scores {wmean(som, ev.weights):.0f} on log [{lo:,.0f}, {hi:,.0f}]"
    if ev.tam_usd > 0:
        tlo, thi = policy.get("market_opportunity.tam_log_range_usd")
        tam = log_scale(ev.tam_usd, tlo, thi)
        tw = policy.num("market_opportunity.tam_weight")
        text = f"TAM ${ev.tam_usd:,.0f}/yr scores {tam:.0f}; " + text
        return _combine([(tw, tam), (1 - tw, som)], n), text, False
    return _combine([(1.0, som)], n), text + "; TAM not given (simulated adoption only)", False


def _wtp(ev: Evidence, policy: Policy, n: int):
    retention = 100.0 * np.clip(ev.retention, 0.0, 1.0)
    text = f"demand retention at ${ev.price:,.2f} vs the lowest grid price: {wmean(retention, ev.weights):.0f}%"
    if ev.wtp_p50 > 0:
        sigma = lognormal_sigma(ev.wtp_p10, ev.wtp_p50, ev.wtp_p90, policy.num("wtp_validation.default_sigma"))
        above = 100.0 * lognormal_survival(ev.price, ev.wtp_p50, sigma)
        dw = policy.num("wtp_validation.distribution_weight")
        text = f"P(WTP >= ${ev.price:,.2f}) = {above:.0f}% (WTP median ${ev.wtp_p50:,.2f}); " + text
        parts = [(dw, above), (1 - dw, retention)]
    else:
        parts = [(1.0, retention)]
        text += "; no WTP distribution"
    survey = []
    if ev.survey_acceptable is not None:
        survey.append(100.0 * ev.survey_acceptable)
        text += f"; Van Westendorp: {ev.survey_acceptable:.0%} of {ev.survey_respondents} respondents find ${ev.price:,.2f} acceptable"
    if ev.survey_intent_retention is not None:
        survey.append(100.0 * ev.survey_intent_retention)
        text += f"; Gabor-Granger intent at the price is {ev.survey_intent_retention:.0%} of intent at the lowest surveyed price"
    if survey:
        sw = policy.num("wtp_validation.survey_weight")
        parts = [(w * (1 - sw), s) for w, s in parts] + [(sw / len(survey), s) for s in survey]
    return _combine(parts, n), text, False


def _competitive(ev: Evidence, policy: Policy, n: int):
    parts, notes = [], []
    if ev.our_share is not None and ev.top_competitor_share is not None:
        ours = ev.our_share * (np.ones(n) if ev.our_share_scale is None else np.asarray(ev.our_share_scale, dtype=float))
        if ev.top_competitor_share <= 0:
            s = np.where(ours > 0, 100.0, 50.0)
        else:
            ratio = np.maximum(ours, 1e-12) / ev.top_competitor_share
            s = np.where(ours > 0, np.clip(50.0 + 50.0 * np.log2(ratio), 0.0, 100.0), 0.0)
        parts.append((policy.num("competitive_position.share_weight"), s))
        notes.append(f"final-month share {ev.our_share:.1%} vs strongest competitor {ev.top_competitor_name or '?'} "
                     f"{ev.top_competitor_share:.1%} ({wmean(s, ev.weights):.0f})")
    if ev.our_coverage is not None and ev.competitor_coverage is not None:
        s = min(max(50.0 + 100.0 * (ev.our_coverage - ev.competitor_coverage), 0.0), 100.0)
        parts.append((policy.num("competitive_position.feature_weight"), s))
        notes.append(f"feature coverage {ev.our_coverage:.2f} vs competitors' mean {ev.competitor_coverage:.2f} ({s:.0f})")
    if ev.competitor_median_price and ev.competitor_median_price > 0 and ev.price > 0:
        s = min(max(50.0 - 50.0 * math.log2(ev.price / ev.competitor_median_price), 0.0), 100.0)
        parts.append((policy.num("competitive_position.price_weight"), s))
        notes.append(f"price ${ev.price:,.2f} vs competitors' median ${ev.competitor_median_price:,.2f} ({s:.0f})")
    parts = [(w, s) for w, s in parts if w > 0]
    if not parts:
        return None, "no competitor shares, features or prices"
    return _combine(parts, n), "; ".join(notes)


def _technical(ev: Evidence, policy: Policy, n: int):
    if ev.build_months is None:
        return None, "no build estimate (idea.estimated_build_months)"
    best, worst = policy.num("technical_feasibility.build_months_best"), policy.num("technical_feasibility.build_months_worst")
    s = float(linear_scale(ev.build_months, worst, best))
    return np.full(n, s), f"estimated build {ev.build_months:g} months (100 at <= {best:g}, 0 at >= {worst:g})"


def _financial(ev: Evidence, policy: Policy, n: int):
    floor, target = policy.num("financial_viability.roi_floor"), policy.num("financial_viability.roi_target")
    rw = policy.num("financial_viability.roi_weight")
    window = policy.num("financial_viability.payback_window_months")
    roi_s = linear_scale(ev.roi, floor, target)
    pay_s = np.where((ev.payback > 0) & (ev.payback <= window), 100.0, np.where(ev.payback > 0, 50.0, 0.0))
    p_pay = wmean((ev.payback > 0) & (ev.payback <= window), ev.weights)
    text = (f"ROI over {ev.horizon_months} months median {float(np.median(ev.roi)):+.0%} "
            f"(0 at {floor:+.0%}, 100 at {target:+.0%}); P(payback <= {window:g} months) = {p_pay:.0%}")
    return _combine([(rw, roi_s), (1 - rw, pay_s)], n), text


def _risk(ev: Evidence, policy: Policy, n: int):
    parts, notes = [], []
    if ev.revenue_p50 > 0:
        s = 100.0 * min(max(ev.revenue_p10 / ev.revenue_p50, 0.0), 1.0)
        parts.append((1.0, s))
        notes.append(f"revenue P10/P50 = {s / 100:.2f}")
    if ev.top_competitor_share is not None:
        dominant = policy.num("risk.dominant_competitor_share")
        s = 100.0 * min(max(1.0 - ev.top_competitor_share / dominant, 0.0), 1.0)
        if ev.response_ratio is not None:
            s *= min(max(ev.response_ratio, 0.0), 1.0)
        parts.append((1.0, s))
        notes.append(f"incumbent dominance {s:.0f} (top competitor share {ev.top_competitor_share:.1%})")
    quality = []
    if ev.bias_passed is not None:
        quality.append(100.0 if ev.bias_passed else policy.num("risk.bias_failed_score"))
    quality.append(policy.num("risk.disagreement_score") if ev.market_disagreement else 100.0)
    quality.append(100.0 if ev.iterations >= policy.num("risk.min_iterations") else policy.num("risk.few_iterations_score"))
    parts.append((1.0, float(np.mean(quality))))
    notes.append(f"evidence quality {np.mean(quality):.0f} (bias {'n/a' if ev.bias_passed is None else 'passed' if ev.bias_passed else 'FAILED'}, "
                 f"SOM {'disagree' if ev.market_disagreement else 'agree'}, {ev.iterations} iterations)")
    return _combine(parts, n), "; ".join(notes)


def _team(ev: Evidence, policy: Policy, n: int):
    if ev.team_coverage is None:
        return None, "no team coverage given (idea.team_coverage)"
    return np.full(n, 100.0 * min(max(ev.team_coverage, 0.0), 1.0)), f"team covers {ev.team_coverage:.0%} of the needed skills"


_SCORERS = {
    "market_opportunity": _market,
    "wtp_validation": _wtp,
    "competitive_position": _competitive,
    "technical_feasibility": _technical,
    "financial_viability": _financial,
    "risk": _risk,
    "team_capability": _team,
}


def score_dimensions(ev: Evidence, policy: Policy) -> list[DimensionScore]:
    n = ev.weights.size
    neutral_score = policy.num("neutral_score")
    out = []
    for name in DIMENSIONS:
        result = _SCORERS[name](ev, policy, n)
        per, text = result[0], result[1]
        neutral = per is None
        if neutral:
            per, text = np.full(n, neutral_score), f"no evidence: neutral {neutral_score:g} ({text})"
        per = np.clip(np.nan_to_num(np.asarray(per, dtype=float), nan=neutral_score), 0.0, 100.0)
        out.append(DimensionScore(name, policy.weights[name], per, min(max(wmean(per, ev.weights), 0.0), 100.0), text, neutral))
    return out


def composite(scores: list[DimensionScore]) -> tuple[float, np.ndarray]:
    """(composite of the dimension scores, composite per iteration); both 0-100."""
    per = sum(d.weight * d.per_iteration for d in scores)
    point = sum(d.weight * d.score for d in scores)
    return float(min(max(point, 0.0), 100.0)), np.clip(per, 0.0, 100.0)


def band(score, policy: Policy):
    """'GO' | 'PIVOT' | 'KILL' for a scalar; an array of those for an array."""
    go, pivot = policy.go_threshold, policy.pivot_threshold
    arr = np.asarray(score, dtype=float)
    out = np.where(arr >= go, "GO", np.where(arr >= pivot, "PIVOT", "KILL"))
    return str(out) if out.ndim == 0 else out
