"""The pivots besides price - segment and positioning - each with what the simulation says it does.

Each is a scenario the simulation re-ran on the same draws as the base (SimulationResult.swings,
common random numbers; services/simulation/engine/swings.py):

- positioning (SWING_DRIVER_FEATURE_PARITY): our coverage of every feature where we trail the
  competitors' mean raised to that mean;
- segment (SWING_DRIVER_SEGMENT_FOCUS): the market restricted to the segment most likely to accept
  the price (the orchestrator picks it: simconfig.focus_segment). It is scored as a market of its
  own: its WTP (the lognormal of its median and log-sd), its demand curve and adoption from the
  scenario, and the top-down TAM / SAM / SOM times its weight.

The whole matrix is re-scored on the scenario's paths (`score`, decide._scenario at the same price
and costs), and the suggestion states the simulated change in our final-month share, customers at
the horizon, revenue and NPV (P50), and the composite with the band it lands in. A scenario that
does not raise the composite is not suggested: the simulation says it does not help. One that
raises it while NPV P50 falls (a segment alone carrying the same fixed costs) is not suggested
either under the policy's `pivots.require_npv_not_lower` (the default): it becomes a note saying
what was considered and why it was left out; without that rule it is suggested and says so.
Suggestions come largest composite gain first.

A simulation output without the scenario (a stage output stored before they existed, a request
built by hand) falls back to the earlier evidence, labelled as not simulated: positioning re-scores
the matrix with our coverage at the competitors', segment compares the personas' P(WTP >= price).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

from services.analysis import resimulated
from services.analysis.competition import coverage, evidence
from services.analysis.policy import Policy
from services.analysis.pricing import WtpQuantiles
from services.analysis.scoring import band, composite, score_dimensions
from services.analysis.stats import Z90, lognormal_sigma, lognormal_survival, money, wquantile


def non_price_pivots(request, used, sim, price: float, wtp, policy: Policy, competition: tuple, our_name: str,
                     score: Callable) -> tuple[list[str], list[str]]:
    """(the segment and positioning pivots that help, notes on those left out because NPV falls).
    `score(sim_inputs, competition, wtp=..., market_scale=...)` re-scores the matrix on a scenario
    (a decide.Scenario)."""
    found = [f for f in (_segment(request, used, sim, price, wtp, policy, competition, our_name, score),
                         _positioning(request, used, sim, policy, our_name, score)) if f is not None]
    strict = bool(policy.get("pivots.require_npv_not_lower", True))
    kept = [(gain, text) for gain, text, npv_falls in found if not (strict and npv_falls)]
    notes = [f"pivot considered and not suggested, NPV P50 would fall: {text}" for _, text, npv_falls in found
             if strict and npv_falls]
    return [text for _, text in sorted(kept, key=lambda f: -f[0])], notes


def _npv_falls(before, after) -> bool:
    return after.finance.npv_p50 < before.finance.npv_p50


def _effects(before, after, months: int, policy: Policy) -> str:
    """The simulated change from the base scenario to a pivot's, in the words of the decision."""
    weights = before.evidence.weights
    customers = [float(wquantile(s.customers[:, -1], weights, 0.5)) for s in (before, after)]
    parts = []
    if before.evidence.our_share is not None and after.evidence.our_share is not None:
        parts.append(f"final-month share {before.evidence.our_share:.1%} -> {after.evidence.our_share:.1%}")
    parts += [f"month-{months} customers P50 {customers[0]:,.0f} -> {customers[1]:,.0f}",
              f"{months}-month revenue P50 {money(before.finance.revenue_p50)} -> {money(after.finance.revenue_p50)}",
              f"NPV P50 {money(before.finance.npv_p50)} -> {money(after.finance.npv_p50)}",
              f"composite {before.composite:.1f} -> {after.composite:.1f} ({band(after.composite, policy)})"]
    caveat = "; the composite rises but NPV P50 falls" if _npv_falls(before, after) else ""
    return ", ".join(parts) + caveat


def _segment_wtp(median: float, sigma: float) -> WtpQuantiles:
    spread = math.exp(Z90 * max(sigma, 0.0))
    return WtpQuantiles(median / spread, median, median * spread, "segment")


def _segment(request, used, sim, price: float, wtp, policy: Policy, competition: tuple, our_name: str,
             score: Callable) -> tuple[float, str, bool] | None:
    """(composite gain, suggestion, whether NPV P50 falls), or None."""
    focus = resimulated.find(request.simulation, resimulated.SEGMENT_FOCUS)
    config = request.simulation_config if request.HasField("simulation_config") else None
    swung = resimulated.paths_inputs(focus, request.simulation, sim) if focus is not None else None
    market_sigma = lognormal_sigma(wtp.p10, wtp.p50, wtp.p90, policy.num("wtp_validation.default_sigma"))
    overall = lognormal_survival(price, wtp.p50, market_sigma) if wtp.p50 > 0 else 0.0
    if swung is None or config is None or not 0 <= focus.swing.segment < len(config.segments) or price <= 0:
        return _segment_from_personas(request, price, overall, policy)
    index = focus.swing.segment
    segment = config.segments[index]
    weight = segment.weight / sum(s.weight for s in config.segments)
    persona = request.personas[index] if len(request.personas) == len(config.segments) else None
    name = (persona.name or persona.segment) if persona is not None else segment.name
    comp = resimulated.paths_competition(competition, request.simulation, focus, our_name)
    after = score(swung, comp, wtp=_segment_wtp(segment.wtp_median_usd, segment.wtp_sigma), market_scale=weight)
    if after.composite <= used.composite:
        return None
    there = lognormal_survival(price, segment.wtp_median_usd, segment.wtp_sigma)
    return after.composite - used.composite, (f"segment: focus on '{name}' ({weight:.0%} of the market): P(WTP >= ${price:,.2f}) is {there:.0%} there "
            f"vs {overall:.0%} market-wide (WTP median ${segment.wtp_median_usd:,.2f}); simulated on that segment "
            f"alone, same draws, its TAM/SAM/SOM {weight:.0%} of the market's: " + _effects(used, after, sim.months, policy)), \
        _npv_falls(used, after)


def _segment_from_personas(request, price: float, overall: float, policy: Policy) -> tuple[float, str, bool] | None:
    """Fallback: the persona most likely to accept the price, by its WTP alone (not simulated)."""
    personas = [p for p in request.personas if p.wtp.median_usd > 0]
    if not personas or price <= 0:
        return None

    def accepts(p) -> float:
        sigma = p.wtp.sigma if p.wtp.sigma > 0 else lognormal_sigma(p.wtp.p10_usd, p.wtp.median_usd, p.wtp.p90_usd,
                                                                     policy.num("wtp_validation.default_sigma"))
        return lognormal_survival(price, p.wtp.median_usd, sigma)

    best = max(personas, key=accepts)
    if best.wtp.median_usd < price or accepts(best) <= overall:
        return None
    return 0.0, (f"segment: focus on '{best.name or best.segment}' ({best.weight:.0%} of the market): "
            f"P(WTP >= ${price:,.2f}) is {accepts(best):.0%} there vs {overall:.0%} market-wide "
            f"(WTP median ${best.wtp.median_usd:,.2f}; not simulated: the simulation output carries no segment scenario)"), False


def _positioning(request, used, sim, policy: Policy, our_name: str, score: Callable) -> tuple[float, str, bool] | None:
    """(composite gain, suggestion, whether NPV P50 falls), or None."""
    parity = resimulated.find(request.simulation, resimulated.FEATURE_PARITY)
    swung = resimulated.paths_inputs(parity, request.simulation, sim) if parity is not None else None
    before = coverage(request)
    if swung is None:
        return _positioning_by_matrix(used, before, policy)
    factor = parity.swing.factor
    after_cov = coverage(request, factor)
    if before is None or not before.gaps:
        return None
    comp = resimulated.paths_competition(evidence(request, request.simulation, our_name, factor), request.simulation,
                                         parity, our_name)
    after = score(swung, comp)
    if after.composite <= used.composite:
        return None
    goal = "the competitors' mean" if factor == 1.0 else f"{factor:.0%} of the way to the competitors' mean"
    return after.composite - used.composite, (f"positioning: raise feature coverage to {goal} where we trail it, first on {_features(before)} "
            f"(coverage {before.ours:.2f} -> {after_cov.ours:.2f} vs competitors {before.theirs:.2f}); simulated on the "
            f"same customers and market draws: " + _effects(used, after, sim.months, policy)), _npv_falls(used, after)


def _features(cov) -> str:
    return ", ".join(name.replace("_", " ") for name, _ in cov.gaps[:3])


def _positioning_by_matrix(used, cov, policy: Policy) -> tuple[float, str, bool] | None:
    """Fallback: the matrix re-scored with our coverage at the competitors' (not simulated)."""
    ev = used.evidence
    if ev.our_coverage is None or ev.competitor_coverage is None or ev.our_coverage >= ev.competitor_coverage:
        return None
    closed = dataclasses.replace(ev, our_coverage=ev.competitor_coverage)
    after, _ = composite(score_dimensions(closed, policy))
    return after - used.composite, (f"positioning: close the feature gap (coverage {ev.our_coverage:.2f} vs competitors {ev.competitor_coverage:.2f})"
            + (f", first on {_features(cov)}" if cov is not None and cov.gaps else "")
            + f"; at parity the matrix scores {used.composite:.1f} -> {after:.1f} (not simulated: the simulation output "
            "carries no feature-parity scenario)"), False
