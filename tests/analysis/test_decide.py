"""analyze() end to end on hand-built SimulationResult protos with answers known in advance."""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from services.analysis.decide import analyze
from services.analysis.policy import load_policy
from smvm.errors import InvalidArgument
from smvm.v1 import analysis_service_pb2, decision_pb2, market_pb2, simulation_pb2

GO, PIVOT, KILL = decision_pb2.RECOMMENDATION_GO, decision_pb2.RECOMMENDATION_PIVOT, decision_pb2.RECOMMENDATION_KILL


def q(x):
    return simulation_pb2.Quantiles(mean=x, p5=x, p10=x, p50=x, p90=x, p95=x)


def make_request(a=0.5, b=0.01, price=20.0, market_size=50_000.0, n=60, months=36, tam=1e8, grid=None,
                 build=None, team=None, competitors=0, our_share=None, competitor_share=None,
                 competitor_price=None, bias_passed=None, samples=True, seed=0):
    """A linear-demand market: share(p) = a - b p (floored at 0); Bass-like adoption at `price`."""
    grid = np.linspace(5.0, 45.0, 9) if grid is None else np.asarray(grid, float)
    share = lambda p: np.maximum(a - b * np.asarray(p), 0.0)  # noqa: E731
    rng = np.random.default_rng(seed)
    sim = simulation_pb2.SimulationResult(iterations=n, months=months, seed=seed)
    for p in grid:
        sim.demand_curve.add(price_usd=float(p), share=q(float(share(p))))
    t = np.arange(1, months + 1)
    paths = []
    for k in range(n):
        size = market_size * rng.uniform(0.7, 1.3)
        speed = rng.uniform(5, 12)
        cust = size * float(share(price)) * (1 - np.exp(-t / speed))
        paths.append(cust)
        if samples:
            sim.samples.add(iteration=k, market_size=size, bass_p=0.03, bass_q=1.0 / speed, churn=0.02,
                            price_scale=1.0, monthly_customers=cust.tolist(),
                            monthly_revenue_usd=(cust * price).tolist(), demand_share=share(grid).tolist())
    paths = np.array(paths)
    for m in range(months):
        c = paths[:, m]
        qs = lambda x: simulation_pb2.Quantiles(mean=float(np.mean(x)), **{f"p{l}": float(np.percentile(x, l)) for l in (5, 10, 50, 90, 95)})  # noqa: E731,E741
        sim.month_stats.add(month=m + 1, customers=qs(c), revenue_usd=qs(c * price), share=q(float(share(price))))
    if our_share is not None:
        sim.offering_shares.add(name="ours", share=q(our_share), final_price_usd=price)
        sim.offering_shares.add(name="rival", share=q(competitor_share), final_price_usd=competitor_price or price)
        sim.offering_shares.add(name="none", share=q(max(0.0, 1 - our_share - competitor_share)))
    req = analysis_service_pb2.AnalyzeRequest(simulation=sim)
    req.idea.title = "test idea"
    req.idea.price.amount = price
    req.idea.price.currency = "USD"
    req.idea.price.billing_period = "monthly"
    req.idea.market_size.tam_usd = tam
    if build is not None:
        req.idea.estimated_build_months = build
    if team is not None:
        req.idea.team_coverage = team
    req.our_offering.name = "ours"
    req.our_offering.monthly_price_usd = price
    for i in range(competitors):
        req.competitors.add(name=f"rival{i}", monthly_price_usd=competitor_price or price, provenance="imported")
    if bias_passed is not None:
        req.bias_report.CopyFrom(market_pb2.BiasReport(passed=bias_passed))
    return req


def great(**kw):
    args = dict(a=0.95, b=0.004, price=20.0, market_size=400_000.0, tam=1e9, build=3, team=1.0, competitors=5,
                our_share=0.5, competitor_share=0.1, competitor_price=40.0, bias_passed=True)
    args.update(kw)
    return make_request(**args)


def test_clearly_great_market_is_go_and_gate_proceeds():
    d = analyze(great()).decision
    assert d.recommendation == GO, d.rationale
    assert d.composite_score >= 75
    assert d.gate.gate_decision == "proceed"
    assert all(c.passed for c in d.gate.criteria)
    assert d.confidence > 0.5
    assert d.financials.probability_npv_positive > 0.9
    assert len(d.criteria) == 7 and not any(c.neutral for c in d.criteria)
    assert d.policy_version.startswith("1.3.0+")


def test_no_demand_is_kill_and_gate_rejects():
    d = analyze(great(a=0.0006, b=0.00001)).decision
    assert d.recommendation == KILL
    assert d.gate.gate_decision == "reject"
    failed = {c.name for c in d.gate.criteria if not c.passed}
    assert "no_show_stopping_risk" in failed


def test_tam_below_one_million_is_kill():
    d = analyze(great(tam=5e5)).decision
    assert d.recommendation == KILL and d.gate.gate_decision == "reject"
    assert not next(c for c in d.gate.criteria if c.name == "market_size_tam_at_least_1m").passed


def test_middling_market_is_pivot():
    d = analyze(make_request()).decision
    assert d.recommendation == PIVOT, d.rationale
    assert 45 <= d.composite_score < 75


def test_good_product_priced_far_above_wtp_pivots_on_price():
    # share(p) = 0.9 - 0.02 p: revenue peaks at 22.5, the founder asks 42 (share 0.06).
    req = great(a=0.9, b=0.02, price=42.0, grid=np.linspace(5, 45, 17), market_size=100_000.0)
    d = analyze(req).decision
    assert d.recommendation == PIVOT, d.rationale
    assert d.pricing.revenue_maximising_price_usd == pytest.approx(22.5, rel=1e-6)
    assert any(s.startswith("price: lower to $22.50") for s in d.pivot_suggestions)


def test_pricing_insight_is_the_analytic_answer():
    d = analyze(make_request(a=0.5, b=0.01, price=20.0)).decision
    assert d.pricing.proposed_price_usd == 20.0
    assert d.pricing.revenue_maximising_price_usd == pytest.approx(25.0, rel=1e-9)
    assert d.pricing.elasticity_at_price == pytest.approx(-0.01 * 20 / (0.5 - 0.2), rel=1e-9)
    assert d.pricing.elasticity_ci_low <= d.pricing.elasticity_at_price <= d.pricing.elasticity_ci_high


def test_bands_and_weights_change_the_decision():
    req = make_request(team=1.0)
    base = analyze(req).decision
    assert base.recommendation == PIVOT
    lenient = analyze(req, policy={"bands": {"go": base.composite_score - 1, "pivot": 10}}).decision
    assert lenient.recommendation == GO
    strict = analyze(req, policy={"bands": {"go": 99, "pivot": base.composite_score + 1}}).decision
    assert strict.recommendation == KILL
    assert len({base.policy_version, lenient.policy_version, strict.policy_version}) == 3
    all_team = {name: 0.0 for name in load_policy().weights}
    all_team["team_capability"] = 1.0
    assert analyze(req, policy={"weights": all_team}).decision.recommendation == GO
    no_team = make_request(team=0.0)
    assert analyze(no_team, policy={"weights": all_team}).decision.recommendation == KILL


def test_evidence_adjusted_confidence_drops_with_bias_flags_and_thin_inputs():
    # Decision.confidence is the band share alone (the definition); what the simulation cannot
    # see (bias flags, quantile-only inputs) lowers the evidence-adjusted figure reported beside it.
    clean = analyze(great(), render_documents=False).decision.confidence_detail.evidence_adjusted
    flagged = great(bias_passed=False)
    flagged.bias_report.flags.extend(["optimism:wtp_above_grounding", "coverage:age"])
    assert analyze(flagged, render_documents=False).decision.confidence_detail.evidence_adjusted < clean
    thin = analyze(great(samples=False), render_documents=False)
    assert thin.decision.confidence_detail.evidence_adjusted < clean
    assert "quantile scenarios" in thin.report_markdown


def test_missing_price_degrades_with_a_warning():
    req = make_request()
    req.idea.ClearField("price")
    req.our_offering.monthly_price_usd = 0
    resp = analyze(req)
    assert resp.decision.pricing.proposed_price_usd == 0.0
    assert resp.decision.pricing.revenue_maximising_price_usd == pytest.approx(25.0)
    assert "no price" in resp.report_markdown


@pytest.mark.parametrize("mutate, field", [
    (lambda r: r.ClearField("simulation"), "simulation"),
    (lambda r: r.simulation.ClearField("demand_curve"), "simulation.demand_curve"),
    (lambda r: setattr(r.simulation.demand_curve[2], "price_usd", float("nan")), "simulation.demand_curve[2].price_usd"),
    (lambda r: setattr(r.simulation.demand_curve[1].share, "mean", 1.7), "simulation.demand_curve[1].share.mean"),
    (lambda r: setattr(r.idea, "team_coverage", 1.5), "idea.team_coverage"),
    (lambda r: setattr(r.idea.price, "amount", -3.0), "idea.price.amount"),
])
def test_malformed_inputs_name_the_field(mutate, field):
    req = make_request(n=5)
    mutate(req)
    with pytest.raises(InvalidArgument) as err:
        analyze(req)
    assert err.value.field == field


def test_report_has_the_figures():
    resp = analyze(great())
    md = resp.report_markdown
    for heading in ("Decision matrix", "T0+3 gate", "Pricing", "Market sizing", "Financials", "Next steps"):
        assert f"## {heading}" in md
    assert f"{resp.decision.composite_score:.1f}" in md
    assert "$20.00" in md


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=st.floats(0.001, 1.0), slope=st.floats(0.0, 1.0), price=st.floats(2.0, 60.0),
       size=st.floats(10.0, 1e6), tam=st.sampled_from([0.0, 2e5, 5e6, 1e9]), n=st.integers(1, 12),
       build=st.one_of(st.none(), st.floats(0, 40)), team=st.one_of(st.none(), st.floats(0, 1)))
def test_properties(a, slope, price, size, tam, n, build, team):
    b = slope * a / 45.0  # share stays in [0, a] over the grid
    d = analyze(make_request(a=a, b=b, price=price, market_size=size, tam=tam, n=n, months=12,
                             build=build, team=team), render_documents=False).decision
    assert 0.0 <= d.confidence <= 1.0
    assert 0.0 <= d.composite_score <= 100.0
    assert all(0.0 <= c.score <= 100.0 for c in d.criteria)
    assert sum(c.weight for c in d.criteria) == pytest.approx(1.0)
    assert d.composite_score == pytest.approx(sum(c.weight * c.score for c in d.criteria), abs=1e-6)
    assert all(math.isfinite(x) for x in (d.pricing.elasticity_at_price, d.financials.npv_p50_usd, d.market.som_bottom_up_usd))
    knocked = not next(c for c in d.gate.criteria if c.name == "no_show_stopping_risk").passed or 0 < tam < 1e6
    if knocked:
        assert d.recommendation == KILL
    elif d.composite_score >= 75:
        assert d.recommendation == GO
    elif d.composite_score >= 45:
        assert d.recommendation == PIVOT
    else:
        assert d.recommendation in (KILL, PIVOT)  # PIVOT only by the re-pricing rescue
        if d.recommendation == PIVOT:
            assert any(s.startswith("price:") for s in d.pivot_suggestions)
    assert (d.gate.gate_decision == "reject") == (d.recommendation == KILL)


def test_sensitivity_moves_npv_the_right_way_and_reports_flips():
    from services.analysis.decide import sensitivity  # noqa: F401  (public for reuse)
    req = make_request()
    md = analyze(req).report_markdown
    assert "## Sensitivity" in md
    # a GO that only just clears the bar: a market-size or price swing should be able to flip it
    base = analyze(req).decision
    tight = analyze(req, policy={"bands": {"go": base.composite_score - 0.5, "pivot": 10}})
    assert tight.decision.recommendation == GO
    assert "**yes**" in tight.report_markdown


def test_servicer_runs_analyze_in_a_thread():
    import asyncio

    from services.analysis.servicer import AnalysisServicer
    resp = asyncio.run(AnalysisServicer().Analyze(great(), None))
    assert resp.decision.recommendation == GO and resp.report_markdown.startswith("# Validation report")
