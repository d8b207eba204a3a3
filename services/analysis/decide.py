"""The analysis stage's entry point: simulation output in, a fully evidenced GO / PIVOT / KILL out.

Flow: validate the request -> read the simulation into arrays -> price, market and financial
findings at the proposed price (and, for the pivot question, at the revenue-maximising price, on the
same simulated worlds) -> the policy's weighted matrix per Monte Carlo iteration -> band, knock-outs,
confidence -> gate, next steps, report. Missing inputs degrade with warnings; malformed ones raise
InvalidArgument naming the field.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from services.analysis import pivots, precedent, pricing, report, resimulated, risk, surveys
from services.analysis.competition import evidence as competition_evidence
from services.analysis.costs import cost_assumptions
from services.analysis.financials import FinancialSummary, summarise
from services.analysis.inputs import SimInputs, read_simulation
from services.analysis.market import MarketSizingResult, size_market, top_down_inputs
from services.analysis.policy import Policy, load_policy
from services.analysis.scoring import DimensionScore, Evidence, band, composite, score_dimensions
from services.analysis.stats import finite, interp_rows, safe_div, wprob, wquantile
from services.analysis.voi import DRIVER_LABELS, DriverValue, evppi
from smvm.errors import InvalidArgument
from smvm.v1 import analysis_service_pb2, decision_pb2

PERIOD_MONTHS = {"": 1.0, "monthly": 1.0, "weekly": 12.0 / 52.0, "quarterly": 3.0, "annual": 12.0, "yearly": 12.0}
RECOMMENDATION = {
    "GO": decision_pb2.RECOMMENDATION_GO,
    "PIVOT": decision_pb2.RECOMMENDATION_PIVOT,
    "KILL": decision_pb2.RECOMMENDATION_KILL,
}


# ---------------------------------------------------------------------------------------- inputs
def _check_finite(value: float, field: str, lo: float | None = None, hi: float | None = None) -> None:
    if not math.isfinite(value) or (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f" in [{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        raise InvalidArgument(field, f"must be finite{bounds}, got {value}")


def validate_request(request: analysis_service_pb2.AnalyzeRequest) -> None:
    if not request.HasField("simulation"):
        raise InvalidArgument("simulation", "the request carries no simulation result")
    idea = request.idea
    _check_finite(idea.price.amount, "idea.price.amount", 0.0)
    if idea.HasField("estimated_build_months"):
        _check_finite(idea.estimated_build_months, "idea.estimated_build_months", 0.0)
    if idea.HasField("team_coverage"):
        _check_finite(idea.team_coverage, "idea.team_coverage", 0.0, 1.0)
    for name in ("tam_usd", "sam_usd", "som_usd"):
        _check_finite(getattr(idea.market_size, name), f"idea.market_size.{name}", 0.0)
    _check_finite(request.our_offering.monthly_price_usd, "our_offering.monthly_price_usd", 0.0)
    for i, c in enumerate(request.competitors):
        _check_finite(c.monthly_price_usd, f"competitors[{i}].monthly_price_usd", 0.0)
    if request.HasField("simulation_config"):
        _check_finite(request.simulation_config.our_offering.monthly_price_usd,
                      "simulation_config.our_offering.monthly_price_usd", 0.0)
    o = request.cost_overrides
    for name, lo, hi in (("cac_usd", 0.0, None), ("gross_margin", 0.0, 1.0), ("fixed_costs_monthly_usd", 0.0, None),
                         ("initial_investment_usd", 0.0, None), ("discount_rate_annual", -0.99, 10.0)):
        if o.HasField(name):
            _check_finite(getattr(o, name), f"cost_overrides.{name}", lo, hi)


def proposed_price(request, warnings: list[str]) -> tuple[float, str]:
    """(monthly USD price the founder proposes, where it came from); 0 when none was given."""
    if request.our_offering.monthly_price_usd > 0:
        return float(request.our_offering.monthly_price_usd), "our_offering.monthly_price_usd"
    price = request.idea.price
    if price.amount > 0:
        currency = (price.currency or "USD").upper()
        period = (price.billing_period or "monthly").lower()
        if currency != "USD":
            warnings.append(f"idea.price is in {currency} and no normalised price was given: it is not used")
        elif period == "one_time":
            months = price.amortisation_months or 24
            return price.amount / months, f"idea.price (one-time, amortised over {months} months)"
        elif period in PERIOD_MONTHS:
            return price.amount / PERIOD_MONTHS[period], f"idea.price ({period})"
        else:
            warnings.append(f"idea.price.billing_period '{price.billing_period}' is unknown: the price is not used")
    if request.HasField("simulation_config") and request.simulation_config.our_offering.monthly_price_usd > 0:
        warnings.append("no price in the idea: the simulated price is analysed and a revenue-maximising price recommended")
        return 0.0, "none"
    warnings.append("no price given anywhere: the analysis assumes the simulated price")
    return 0.0, "none"


# ------------------------------------------------------------------------------------- scenarios
@dataclass
class Scenario:
    """The simulated worlds re-priced to one price (common random numbers across prices)."""

    price: float
    revenue: np.ndarray  # (n, T)
    customers: np.ndarray
    finance: FinancialSummary
    market: MarketSizingResult
    retention: np.ndarray
    evidence: Evidence
    dimensions: list[DimensionScore]
    composite: float
    composite_per_iteration: np.ndarray


def _scenario(price: float, sim: SimInputs, request, policy: Policy, costs, wtp, competition, survey=None,
              market_scale: float = 1.0) -> Scenario:
    """The matrix on these worlds at `price`; `market_scale` scales the top-down TAM / SAM / SOM
    (a segment focus is that share of the market)."""
    d = sim.draws
    mult = pricing.adoption_multipliers(sim.prices, d.demand_share, sim.mean_share, sim.sim_price, price)
    customers = d.customers * mult[:, None]
    revenue = d.revenue * mult[:, None] * (price / sim.sim_price if sim.sim_price > 0 else 1.0)
    window = int(policy.num("financial_viability.payback_window_months"))
    finance = summarise(revenue, customers, d.churn, d.weights, costs, window)
    tam, sam, som, source, notes = top_down_inputs(request.idea)
    tam, sam, som = tam * market_scale, sam * market_scale, som * market_scale
    market = size_market(tam, sam, som, revenue[:, -1], d.weights, policy.num("market.som_disagreement_factor"), source, notes)
    retention = pricing.retention_rows(sim.prices, d.demand_share, price)
    ours, top, top_name, ratio, our_cov, their_cov, median_price = competition
    idea = request.idea
    bias = request.bias_report if request.HasField("bias_report") else None
    ev = Evidence(
        weights=d.weights, price=price, horizon_months=sim.months, tam_usd=market.tam_usd,
        som_bottom_up=12.0 * revenue[:, -1], wtp_p10=wtp.p10, wtp_p50=wtp.p50 if wtp.source != "none" else 0.0,
        wtp_p90=wtp.p90, retention=retention, roi=finance.roi, payback=finance.payback,
        revenue_p10=finance.revenue_p10, revenue_p50=finance.revenue_p50, our_share=ours,
        top_competitor_share=top, top_competitor_name=top_name, response_ratio=ratio,
        our_coverage=our_cov, competitor_coverage=their_cov, competitor_median_price=median_price,
        build_months=idea.estimated_build_months if idea.HasField("estimated_build_months") else None,
        team_coverage=idea.team_coverage if idea.HasField("team_coverage") else None,
        bias_passed=bias.passed if bias is not None else None, bias_flags=list(bias.flags) if bias else [],
        market_disagreement=market.disagreement, iterations=d.n if d.source == "samples" else 0,
        our_share_scale=_share_scale(sim, price),
    )
    vw, gg = survey if survey is not None else (None, None)
    if vw is not None:
        ev.survey_acceptable, ev.survey_respondents = vw.acceptable_share(price), vw.respondents
    if gg is not None and gg.intent[0] > 0:
        ev.survey_intent_retention = min(max(gg.intent_at(price) / gg.intent[0], 0.0), 1.0)
    dims = score_dimensions(ev, policy)
    point, per = composite(dims)
    return Scenario(price, revenue, customers, finance, market, retention, ev, dims, point, per)


def _share_scale(sim: SimInputs, price: float) -> np.ndarray | None:
    """Per-iteration q_k(price) / mean q(price), so our share varies across simulated worlds."""
    d = sim.draws
    mean_q = pricing.share_at(sim.prices, sim.mean_share, price)
    if d.source != "samples" or mean_q <= pricing.Q_EPS:
        return None
    return interp_rows(d.demand_share, sim.prices, price) / mean_q


# ------------------------------------------------------------------------------------- decision
def _knockouts(sim: SimInputs, used: Scenario, best: Scenario, request, policy: Policy) -> list[tuple[str, float]]:
    """Show-stoppers and the share of iterations in which each holds (1.0 for deterministic inputs)."""
    out = []
    w = sim.draws.weights
    min_share = policy.num("show_stoppers.min_demand_share")
    if sim.mean_share.max() < min_share:
        held = wprob(sim.draws.demand_share.max(axis=1) < min_share, w)
        out.append((f"no demand: no grid price reaches a {min_share:.1%} share of aware customers "
                    f"(best {sim.mean_share.max():.3%})", held))
    min_p = policy.num("show_stoppers.min_probability_npv_positive")
    if used.finance.probability_npv_positive < min_p and best.finance.probability_npv_positive < min_p:
        held = wprob((used.finance.npv <= 0) & (best.finance.npv <= 0), w)
        out.append((f"no profitable price: P(NPV > 0) is {used.finance.probability_npv_positive:.1%} at "
                    f"${used.price:,.2f} and {best.finance.probability_npv_positive:.1%} at ${best.price:,.2f}", held))
    idea = request.idea
    if (policy.get("show_stoppers.build_beyond_horizon") and idea.HasField("estimated_build_months")
            and idea.estimated_build_months > sim.months):
        out.append((f"build ({idea.estimated_build_months:g} months) is longer than the simulated horizon ({sim.months} months)", 1.0))
    tam = used.market.tam_usd  # grounding imports first, then idea.market_size
    tam_min = policy.num("market.tam_min_usd")
    if 0 < tam < tam_min:
        out.append((f"TAM ${tam:,.0f} is below the ${tam_min:,.0f} minimum", 1.0))
    return out


def _confidence_factors(sim: SimInputs, request, dims, price_source: str, policy: Policy) -> list[tuple[str, float]]:
    factors = []
    c = lambda key: policy.num(f"confidence.{key}")  # noqa: E731
    if request.HasField("bias_report"):
        if not request.bias_report.passed:
            factors.append(("persona bias report failed", c("bias_failed")))
        if request.bias_report.flags:
            f = max(c("per_bias_flag") ** len(request.bias_report.flags), c("min_flag_factor"))
            factors.append((f"bias flags: {', '.join(request.bias_report.flags)}", f))
    neutral = [d.name for d in dims if d.neutral]
    if neutral:
        factors.append((f"no evidence for {', '.join(neutral)}", c("per_neutral_dimension") ** len(neutral)))
    if sim.draws.source == "quantiles":
        factors.append(("no per-iteration samples (quantile scenarios only)", c("quantile_scenarios")))
    elif sim.draws.n < policy.num("risk.min_iterations"):
        factors.append((f"only {sim.draws.n} Monte Carlo samples", c("few_samples")))
    if price_source == "none":
        factors.append(("no proposed price", c("no_price")))
    grounding = request.idea.grounding
    if grounding.quality_warning and 0 < grounding.confidence_factor < 1:
        poor = sum(1 for q in grounding.quality if q.quality_warning)
        factors.append((f"{poor} grounding import(s) of poor data quality", grounding.confidence_factor))
    return factors


def _fmt_price(p: float) -> str:
    return f"${p:,.2f}/month"


def analyze(request: analysis_service_pb2.AnalyzeRequest, policy=None, render_documents: bool = True) -> analysis_service_pb2.AnalyzeResponse:
    """The decision with its evidence; `render_documents=False` skips the chart-bearing HTML / PDF."""
    pol = load_policy(policy)
    validate_request(request)
    memory = precedent.memory_findings(request, pol)
    warnings: list[str] = list(request.idea.warnings) + ([memory.warning] if memory.warning else [])
    proposed, price_source = proposed_price(request, warnings)
    config = request.simulation_config if request.HasField("simulation_config") else None
    sim = read_simulation(request.simulation, config, proposed)
    warnings += sim.warnings
    price = proposed if proposed > 0 else sim.sim_price
    if sim.prices.size and not (sim.prices[0] <= price <= sim.prices[-1]):
        warnings.append(f"the price {_fmt_price(price)} lies outside the simulated grid "
                        f"[{sim.prices[0]:,.2f}, {sim.prices[-1]:,.2f}]: demand is extrapolated flat")
    d = sim.draws
    cap = pol.num("pricing.elasticity_cap")

    # pricing
    wtp_q = request.simulation.wtp_usd
    wtp = pricing.wtp_quantiles(wtp_q.p10, wtp_q.p50, wtp_q.p90, sim.prices, sim.mean_share)
    warnings += wtp.notes
    optimum = pricing.revenue_maximising_price(sim.prices, sim.mean_share)
    if optimum.at_edge:
        warnings.append(f"the revenue-maximising price is at the edge of the simulated grid ({_fmt_price(optimum.price)}): the true optimum may lie beyond it")
    elasticity = pricing.elasticity_at(sim.prices, sim.mean_share, price, cap)
    per_e = pricing.elasticities_at_rows(sim.prices, d.demand_share, price, cap)
    level = pol.num("pricing.ci_level")
    e_lo, e_hi = (wquantile(per_e, d.weights, [(1 - level) / 2, (1 + level) / 2]) if per_e.size else (elasticity, elasticity))
    profile = pricing.elasticity_profile(sim.prices, sim.mean_share, d.demand_share, d.weights, level, cap)
    vw = surveys.van_westendorp(request.idea.grounding.van_westendorp)
    gg = surveys.gabor_granger(request.idea.grounding.gabor_granger)
    if vw is not None and vw.dropped:
        warnings.append(f"Van Westendorp: {vw.dropped} answer(s) with thresholds out of order were dropped")
    survey = (vw, gg)

    # scenarios at the used price and at the revenue-maximising price (same worlds, same costs)
    build = request.idea.estimated_build_months if request.idea.HasField("estimated_build_months") else None
    costs = cost_assumptions(pol, request.idea.domain, price, build,
                             request.cost_overrides if request.HasField("cost_overrides") else None)
    our_name = request.our_offering.name or (config.our_offering.name if config is not None else "")
    competition = competition_evidence(request, request.simulation, our_name)
    used = _scenario(price, sim, request, pol, costs, wtp, competition, survey)
    best_price = optimum.price if not optimum.no_demand else price
    best = _scenario(best_price, sim, request, pol, costs, wtp, competition, survey) if best_price != price else used

    # decision: the band of the composite; confidence = share of iterations whose composite lands in it
    recommendation = composite_band = band(used.composite, pol)
    knockouts = _knockouts(sim, used, best, request, pol)
    iteration_bands = band(used.composite_per_iteration, pol)
    band_shares = {b: wprob(iteration_bands == b, d.weights) for b in ("GO", "PIVOT", "KILL")}
    base_confidence = band_shares[recommendation]
    basis = f"{base_confidence:.0%} of Monte Carlo iterations land in the {recommendation} band"
    pivot_suggestions: list[str] = []
    price_change = (best.price - price) / price if price > 0 else 0.0
    gain = (best.finance.revenue_p50 - used.finance.revenue_p50) / used.finance.revenue_p50 if used.finance.revenue_p50 > 0 else pol.num("pricing.max_reported_gain")
    gain = min(gain, pol.num("pricing.max_reported_gain"))
    price_pivot = (abs(price_change) > pol.num("pricing.pivot_min_price_change")
                   and gain > pol.num("pricing.pivot_min_revenue_gain") and not optimum.no_demand)
    if knockouts:
        recommendation = "KILL"
        base_confidence = max(p for _, p in knockouts)
        basis = "show-stopper: " + "; ".join(t for t, _ in knockouts)
    elif recommendation == "KILL" and pol.get("decision.reprice_rescue") and price_pivot and best.composite >= pol.pivot_threshold:
        recommendation = "PIVOT"
        base_confidence = wprob(best.composite_per_iteration >= pol.pivot_threshold, d.weights)
        basis = (f"KILL at {_fmt_price(price)} (composite {used.composite:.1f}) but re-priced to {_fmt_price(best.price)} "
                 f"the same simulated worlds score {best.composite:.1f}; {base_confidence:.0%} of them reach PIVOT or better")
    factors = _confidence_factors(sim, request, used.dimensions, price_source, pol)
    confidence = min(max(finite(base_confidence), 0.0), 1.0)
    adjusted = min(max(finite(confidence * math.prod(f for _, f in factors)), 0.0), 1.0)

    if price_pivot and recommendation != "KILL":
        verb = "lower" if price_change < 0 else "raise"
        pivot_suggestions.append(
            f"price: {verb} to {_fmt_price(best.price)} ({price_change:+.0%}); simulated {sim.months}-month revenue P50 "
            f"{gain:+.0%}, composite {used.composite:.1f} -> {best.composite:.1f}")
    if recommendation == "PIVOT":
        def score(s, comp, wtp=wtp, market_scale=1.0):
            return _scenario(price, s, request, pol, costs, wtp, comp, survey, market_scale)

        suggested, left_out = pivots.non_price_pivots(request, used, sim, price, wtp, pol, competition, our_name, score)
        pivot_suggestions += suggested
        warnings += left_out

    # value of information
    voi: list[DriverValue] = []
    if d.source == "samples" and d.n >= pol.num("voi.min_iterations"):
        drivers = {k: getattr(d, k) for k in DRIVER_LABELS}
        voi = evppi(used.finance.npv, drivers, d.weights, int(pol.num("voi.bins")))

    tornado = sensitivity(price, sim, request, pol, costs, wtp, competition, survey, our_name, warnings)
    risks = risk.assess(used, pol, knockouts, memory.risk_part())

    decision = decision_pb2.Decision(
        recommendation=RECOMMENDATION[recommendation], confidence=confidence, composite_score=used.composite,
        policy_version=pol.version,
    )
    for dim in used.dimensions:
        decision.criteria.add(name=dim.name, weight=dim.weight, score=dim.score, evidence=dim.evidence, neutral=dim.neutral)
    m = used.market
    decision.market.CopyFrom(decision_pb2.MarketSizing(
        tam_usd=m.tam_usd, sam_usd=m.sam_usd, som_usd=m.som_usd, som_bottom_up_usd=m.som_bottom_up_usd, disagreement=m.disagreement,
        som_bottom_up_p10_usd=m.som_bottom_up_p10_usd, som_bottom_up_p90_usd=m.som_bottom_up_p90_usd,
        reconciliation_ratio=m.ratio, tam_source=m.source, notes=m.notes))
    decision.pricing.CopyFrom(decision_pb2.PricingInsight(
        proposed_price_usd=proposed, wtp_p10_usd=wtp.p10, wtp_p50_usd=wtp.p50, wtp_p90_usd=wtp.p90,
        revenue_maximising_price_usd=0.0 if optimum.no_demand else optimum.price,
        elasticity_at_price=elasticity, elasticity_ci_low=float(e_lo), elasticity_ci_high=float(e_hi),
        wtp_source=wtp.source, elasticity_ci_level=level))
    for i, p_i in enumerate(profile.prices):
        last = i >= profile.arc.size
        decision.pricing.elasticity_curve.add(
            price_usd=float(p_i), share=float(sim.mean_share[i]), point=float(profile.point[i]),
            point_ci_low=float(profile.point_low[i]), point_ci_high=float(profile.point_high[i]),
            arc_to_next=0.0 if last else float(profile.arc[i]), arc_ci_low=0.0 if last else float(profile.arc_low[i]),
            arc_ci_high=0.0 if last else float(profile.arc_high[i]))
    if vw is not None:
        decision.pricing.van_westendorp.CopyFrom(decision_pb2.VanWestendorpPoints(
            respondents=vw.respondents, pmc_usd=vw.pmc, pme_usd=vw.pme, opp_usd=vw.opp, ipp_usd=vw.ipp,
            inconsistent_dropped=vw.dropped))
    if gg is not None and not gg.optimum.no_demand:
        decision.pricing.survey_revenue_maximising_price_usd = gg.optimum.price
        decision.pricing.gabor_granger_respondents = gg.respondents
    f = used.finance
    decision.financials.CopyFrom(decision_pb2.Financials(
        revenue_p10_usd=f.revenue_p10, revenue_p50_usd=f.revenue_p50, revenue_p90_usd=f.revenue_p90,
        npv_p50_usd=f.npv_p50, probability_npv_positive=f.probability_npv_positive, roi_p50=f.roi_p50,
        payback_month_p50=f.payback_p50, probability_payback_within_24_months=f.probability_payback_within,
        discount_rate_annual=costs.discount_rate_annual, cac_usd=costs.cac_usd, gross_margin=costs.gross_margin,
        fixed_costs_monthly_usd=costs.fixed_costs_monthly_usd, probability_roi_positive=f.probability_roi_positive,
        break_even_month_p50=f.break_even_p50, npv_p10_usd=f.npv_p10, npv_p90_usd=f.npv_p90,
        initial_investment_usd=costs.initial_investment_usd, cost_basis=costs.basis,
        monthly_revenue_p10_usd=[float(x) for x in f.monthly_p10], monthly_revenue_p50_usd=[float(x) for x in f.monthly_p50],
        monthly_revenue_p90_usd=[float(x) for x in f.monthly_p90]))
    c5, c50, c95 = (float(x) for x in wquantile(used.composite_per_iteration, d.weights, [0.05, 0.5, 0.95]))
    decision.confidence_detail.CopyFrom(decision_pb2.Confidence(
        band_share=confidence, share_go=band_shares["GO"], share_pivot=band_shares["PIVOT"], share_kill=band_shares["KILL"],
        probability_npv_positive=f.probability_npv_positive, probability_payback_within_24_months=f.probability_payback_within,
        evidence_adjusted=adjusted, evidence_factors=[f"{t} x{v:.2f}" for t, v in factors], iterations=d.n, basis=d.source,
        composite_p5=c5, composite_p50=c50, composite_p95=c95))
    for sw in tornado:
        decision.sensitivity.add(driver=sw.driver, low_label=sw.low_label, high_label=sw.high_label, npv_low_usd=sw.npv_low,
                                 npv_high_usd=sw.npv_high, band_low=sw.band_low, band_high=sw.band_high,
                                 flips_recommendation=sw.flips(composite_band) and not knockouts, method=sw.method,
                                 composite_low=sw.composite_low, composite_high=sw.composite_high)
    for v in voi:
        item = decision.value_of_information.add(driver=v.driver, evppi_usd=v.evppi_usd, invest_above=bool(v.invest_above))
        if v.flip_value is not None:
            item.flip_value = v.flip_value
    for r in risks:
        decision.risks.add(category=r.category, score=r.score, level=r.level, evidence=r.evidence)
    decision.warnings.extend(dict.fromkeys(warnings))
    decision.memory.CopyFrom(memory.to_proto())
    decision.pivot_suggestions.extend(pivot_suggestions)
    decision.critical_success_factors.extend(_success_factors(used, pol, wtp, price))
    next_steps = _next_steps(recommendation, voi, pivot_suggestions, used, tornado)
    decision.next_steps.extend(next_steps)
    from services.analysis.gate import gate_decision  # local: gate depends on this module's outputs only
    decision.gate.CopyFrom(gate_decision(recommendation, confidence, used, knockouts, request, sim, pol, next_steps))
    decision.rationale = (
        f"{recommendation}: composite {used.composite:.1f} (GO >= {pol.go_threshold:g}, PIVOT >= {pol.pivot_threshold:g}); "
        f"{basis}; P(NPV > 0) = {f.probability_npv_positive:.0%}, P(payback <= {f.payback_window_months} months) = "
        f"{f.probability_payback_within:.0%}; evidence-adjusted confidence {adjusted:.0%}"
        + (" (" + "; ".join(f"{t} x{v:.2f}" for t, v in factors) + ")" if factors else "")
    )
    context = dict(
        request=request, decision=decision, recommendation=recommendation, used=used, best=best, sim=sim, wtp=wtp,
        optimum=optimum, profile=profile, costs=costs, voi=voi, tornado=tornado, warnings=warnings, factors=factors,
        base_confidence=base_confidence, basis=basis, price_source=price_source, policy=pol, vw=vw, gg=gg, risks=risks,
        memory=memory)
    response = analysis_service_pb2.AnalyzeResponse(decision=decision, report_markdown=report.render(**context))
    response.summary_json = report.summary_json(**context)
    if render_documents:
        from services.analysis import documents  # matplotlib is imported only when documents are rendered
        response.report_html, response.report_pdf = documents.render(**context)
    return response


@dataclass
class Swing:
    driver: str
    low_label: str
    high_label: str
    npv_low: float
    npv_high: float
    band_low: str
    band_high: str
    method: str = "same paths"  # | "re-simulated" | "approximated"
    composite_low: float = 0.0
    composite_high: float = 0.0

    def flips(self, base_band: str) -> bool:
        """True when either swing moves the composite out of `base_band`."""
        return self.band_low != base_band or self.band_high != base_band


RESIMULATED = "re-simulated"
SAME_PATHS = "same paths"
APPROXIMATED = "approximated"
# Factors of the fallback approximations (an old simulation output without re-simulated swings).
_FALLBACK_FACTORS = {resimulated.BASS_P: (0.75, 1.25), resimulated.BASS_Q: (0.75, 1.25),
                     resimulated.CHURN: (1.25, 0.75), resimulated.COMPETITOR_PRICES: (0.8, 1.2)}


def bass_active_share(p, q, churn, months: int) -> np.ndarray:
    """Active share of the market under discrete Bass diffusion with churn, per iteration (n, months).

    a_t = a_{t-1} (1 - churn) + (p + q a_{t-1}) (1 - a_{t-1}), a_0 = 0. Fallback only (see
    _bass_swing): used as a ratio, a driver's swing rescales each path by a_t(swung) / a_t(as drawn).
    """
    p, q, churn = (np.clip(np.asarray(x, dtype=float), 0.0, 1.0) for x in (p, q, churn))
    a = np.zeros_like(p)
    out = np.zeros((p.size, months))
    for t in range(months):
        a = np.clip(a * (1.0 - churn) + (p + q * a) * (1.0 - a), 0.0, 1.0)
        out[:, t] = a
    return out


def _bass_swing(sim: SimInputs, p=1.0, q=1.0, churn=1.0) -> SimInputs:
    """Fallback approximation of a Bass p / q / churn swing for a simulation output without
    re-simulated swings: each path rescaled by a closed-form Bass ratio, market dynamics ignored."""
    d = sim.draws
    base = bass_active_share(d.bass_p, d.bass_q, d.churn, sim.months)
    new_churn = np.clip(d.churn * churn, 0.0, 1.0)
    swung = bass_active_share(d.bass_p * p, d.bass_q * q, new_churn, sim.months)
    factor = np.where(base > 1e-12, safe_div(swung, base, 1.0), 1.0)
    return dataclasses.replace(sim, draws=dataclasses.replace(
        d, customers=d.customers * factor, revenue=d.revenue * factor, churn=new_churn))


def _competitor_price_swing(sim: SimInputs, factor: float) -> SimInputs:
    """Fallback approximation of a competitor-price swing for a simulation output without
    re-simulated swings: competitors' prices x factor taken as our relative price moving by
    1 / factor (exact only when choice depends on price ratios); the curve is q(p / factor)."""
    d = sim.draws
    x = sim.prices / factor
    shifted = np.array([np.interp(x, sim.prices, row) for row in d.demand_share])
    mean = np.interp(x, sim.prices, sim.mean_share)
    q_old = interp_rows(d.demand_share, sim.prices, sim.sim_price)
    q_new = interp_rows(shifted, sim.prices, sim.sim_price)
    r = np.where(q_old > pricing.Q_EPS, safe_div(q_new, q_old, 1.0), 1.0)[:, None]
    return dataclasses.replace(sim, mean_share=mean, draws=dataclasses.replace(
        d, demand_share=shifted, customers=d.customers * r, revenue=d.revenue * r))


def _approximated(sim: SimInputs, driver: int, factor: float) -> SimInputs:
    if driver == resimulated.COMPETITOR_PRICES:
        return _competitor_price_swing(sim, factor)
    name = {resimulated.BASS_P: "p", resimulated.BASS_Q: "q", resimulated.CHURN: "churn"}[driver]
    return _bass_swing(sim, **{name: factor})


def sensitivity(price, sim: SimInputs, request, policy: Policy, costs, wtp, competition, survey=None,
                our_name: str = "", warnings: list[str] | None = None) -> list[Swing]:
    """One-at-a-time swings of the key drivers on the same simulated worlds (common random numbers).

    Each swing re-scores the whole matrix, so a driver whose swing changes the band is visible.

    Re-simulated ("re-simulated"): Bass p, Bass q, churn and competitor prices, and our price when
    the result carries our-price swings (the orchestrator asks for them with competitive response
    on). The simulation service re-ran the market with the driver moved on the same seed
    (SimulationResult.swings), so awareness, adoption, churn's return to the unaware pool, choice
    shares and competitive response (competitors re-pricing against our swung price included) are
    what the simulator says, on the same customers and market draws.

    On the same paths ("same paths"), exact by construction:
    - market size: customers and revenue are the market size times a path of fractions that does
      not depend on it, so scaling every path scales the market;
    - CAC and fixed costs: they do not enter the simulation; the financials apply them to the paths;
    - price, without competitive response: every iteration's demand curve was evaluated at each
      grid price with the same customers, and our customers are our choice share times the
      aware-adopter path, which does not depend on our price, so re-pricing scales each path by
      that iteration's share ratio (exact at grid prices, interpolated between them).

    Fallback ("approximated"), only when the simulation output carries no re-simulated swing for a
    driver (e.g. a run resumed from a stage output stored before swings existed): Bass and churn
    swings rescale paths by a closed-form Bass ratio, competitor prices shift our relative price,
    and with competitive response on the price swing re-prices the same paths (the competitors'
    reaction to our new price left out).
    """
    d = sim.draws

    def scaled_market(f):
        return dataclasses.replace(sim, draws=dataclasses.replace(d, customers=d.customers * f, revenue=d.revenue * f))

    def run(p=price, s=sim, c=costs, comp=competition):
        sc = _scenario(p, s, request, policy, c, wtp, comp, survey)
        return sc.finance.npv_p50, band(sc.composite, policy), sc.composite

    approximated = []
    cases = [
        _price_case(price, sim, request, competition, our_name, run, approximated),
        ("market size", "-25%", "+25%", lambda: run(s=scaled_market(0.75)), lambda: run(s=scaled_market(1.25)), SAME_PATHS),
        ("CAC", "+50%", "-50%", lambda: run(c=dataclasses.replace(costs, cac_usd=costs.cac_usd * 1.5)),
         lambda: run(c=dataclasses.replace(costs, cac_usd=costs.cac_usd * 0.5)), SAME_PATHS),
        ("fixed costs", "+25%", "-25%",
         lambda: run(c=dataclasses.replace(costs, fixed_costs_monthly_usd=costs.fixed_costs_monthly_usd * 1.25,
                                           initial_investment_usd=costs.initial_investment_usd * 1.25)),
         lambda: run(c=dataclasses.replace(costs, fixed_costs_monthly_usd=costs.fixed_costs_monthly_usd * 0.75,
                                           initial_investment_usd=costs.initial_investment_usd * 0.75)), SAME_PATHS),
    ]
    for driver, info in resimulated.DRIVERS.items():
        factors = resimulated.adverse_and_favourable(request.simulation, driver)
        swung = [resimulated.swung_inputs(request.simulation, sim, driver, f) for f in factors] if factors else [None]
        if factors and all(s is not None for s in swung):
            comps = [resimulated.swung_competition(competition, request.simulation, driver, f, our_name) for f in factors]
            cases.append((info.label, *(resimulated.factor_label(f) for f in factors),
                          lambda s=swung[0], c=comps[0]: run(s=s, comp=c), lambda s=swung[1], c=comps[1]: run(s=s, comp=c),
                          RESIMULATED))
            continue
        # Fallback: the approximations, where they can be made (as before re-simulated swings existed).
        if driver == resimulated.COMPETITOR_PRICES:
            if not (sim.prices.size > 1 and competition[6]):
                continue
        elif not (d.source == "samples" and (d.bass_p > 0).any() and (d.bass_q >= 0).all()):
            continue
        lo, hi = _FALLBACK_FACTORS[driver]
        approximated.append(info.label)
        cases.append((info.label, resimulated.factor_label(lo), resimulated.factor_label(hi),
                      lambda dr=driver, f=lo: run(s=_approximated(sim, dr, f)),
                      lambda dr=driver, f=hi: run(s=_approximated(sim, dr, f)), APPROXIMATED))
    if approximated and warnings is not None:
        warnings.append(f"the tornado's {', '.join(approximated)} swing(s) are approximated, not re-simulated: "
                        "the simulation output carries no re-simulated swings for them")
    out = []
    for name, lo_label, hi_label, low, high, method in cases:
        (npv_lo, band_lo, comp_lo), (npv_hi, band_hi, comp_hi) = low(), high()
        out.append(Swing(name, lo_label, hi_label, npv_lo, npv_hi, band_lo, band_hi, method, comp_lo, comp_hi))
    return sorted(out, key=lambda s: -abs(s.npv_high - s.npv_low))


def _price_case(price, sim: SimInputs, request, competition, our_name: str, run, approximated: list[str]) -> tuple:
    """The tornado's price swing: re-simulated from our-price swings when the result carries them,
    else re-priced on the same paths (exact without competitive response, approximated with it)."""
    factors = resimulated.low_and_high(request.simulation, resimulated.OUR_PRICE)
    swung = [resimulated.swung_inputs(request.simulation, sim, resimulated.OUR_PRICE, f) for f in factors] if factors else [None]
    if factors and all(s is not None for s in swung):
        comps = [resimulated.swung_competition(competition, request.simulation, resimulated.OUR_PRICE, f, our_name)
                 for f in factors]
        return ("price", *(resimulated.factor_label(f) for f in factors),
                lambda: run(p=price * factors[0], s=swung[0], comp=comps[0]),
                lambda: run(p=price * factors[1], s=swung[1], comp=comps[1]), RESIMULATED)
    method = SAME_PATHS
    if request.simulation.competitive_response.enabled:
        method = APPROXIMATED
        approximated.append("price")
    return ("price", "-20%", "+20%", lambda: run(p=price * 0.8), lambda: run(p=price * 1.2), method)


def _success_factors(used: Scenario, policy: Policy, wtp, price: float) -> list[str]:
    f = used.finance
    out = []
    if f.break_even_cac_p50 > 0:
        out.append(f"keep CAC below ${f.break_even_cac_p50:,.0f} (NPV break-even, P50; assumed ${f.costs.cac_usd:,.0f})")
    if wtp.p50 > 0 and price > 0:
        out.append(f"hold the price near customers' WTP (median ${wtp.p50:,.2f} vs price ${price:,.2f})")
    if f.payback_p50 > 0:
        out.append(f"reach payback by month {f.payback_p50} (P50) - {f.probability_payback_within:.0%} chance within {f.payback_window_months} months")
    weakest = min(used.dimensions, key=lambda d: d.score)
    out.append(f"lift the weakest dimension, {weakest.name} ({weakest.score:.0f}/100): {weakest.evidence}")
    return out


def _next_steps(recommendation: str, voi: list[DriverValue], pivots: list[str], used: Scenario,
                tornado: list[Swing] | None = None) -> list[str]:
    steps = []
    if voi and voi[0].evppi_usd >= 1.0:
        top = voi[0]
        label = DRIVER_LABELS.get(top.driver, top.driver)
        text = f"test the {label} first: perfect information on it is worth ${top.evppi_usd:,.0f} of expected NPV"
        if top.flip_value is not None:
            side = "above" if top.invest_above else "below"
            text += f"; the investment case holds only {side} {top.flip_value:,.4g}"
        steps.append(text)
    flips = [sw for sw in (tornado or []) if sw.flips(recommendation)]
    if flips:
        sw = flips[0]
        moved = [(lbl, b) for lbl, b in ((sw.low_label, sw.band_low), (sw.high_label, sw.band_high)) if b != recommendation]
        steps.append(f"watch the {sw.driver}: a {moved[0][0]} swing turns the call into {moved[0][1]}")
    if recommendation == "GO":
        steps += ["proceed to detailed market analysis", "schedule the technical architecture review"]
    elif recommendation == "PIVOT":
        steps += [f"re-validate after the pivot: {p}" for p in pivots[:2]] or ["rework the weakest dimension and re-run the validation"]
    else:
        weakest = min(used.dimensions, key=lambda d: d.score)
        steps.append(f"stop; revisit only if the {weakest.name} evidence changes ({weakest.evidence})")
    return steps
