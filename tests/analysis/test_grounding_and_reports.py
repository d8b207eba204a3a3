"""Surveys and market figures from Idea.grounding, cost overrides, confidence, risks and the rendered reports."""

import io
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from pypdf import PdfReader

from services.analysis import charts, surveys
from services.analysis.decide import analyze, bass_active_share
from smvm.errors import InvalidArgument
from tests.analysis.test_decide import GO, KILL, PIVOT, great, make_request


def vw_answer(tc, c, e, te):
    return SimpleNamespace(too_cheap=tc, cheap=c, expensive=e, too_expensive=te)


def symmetric_survey():
    """Curves symmetric about known prices: PMC = 12, PME = 28, OPP = IPP = 20 by construction.

    With d in {1..4}: too_cheap = 12 - d falls to 0 just above 11 while not_cheap (cheap = 12 + d)
    rises from 13, so they coincide (at 0) on [11, 13]: PMC = 12. Likewise not_expensive
    (expensive = 28 - d) and too_expensive (28 + d) coincide on [27, 29]: PME = 28; too_cheap and
    too_expensive on [11, 29]: OPP = 20; cheap and expensive on [16, 24]: IPP = 20.
    """
    ds = [1, 2, 3, 4, 1, 2, 3, 4]
    return [vw_answer(12 - d, 12 + ds[(i + 1) % 8], 28 - ds[(i + 2) % 8], 28 + ds[(i + 3) % 8]) for i, d in enumerate(ds)]


def test_van_westendorp_points_of_a_symmetric_survey():
    vw = surveys.van_westendorp(symmetric_survey())
    assert vw.respondents == 8 and vw.dropped == 0
    grid_step = (32 - 8) / (surveys.GRID_POINTS - 1)
    assert vw.pmc == pytest.approx(12.0, abs=grid_step)
    assert vw.pme == pytest.approx(28.0, abs=grid_step)
    assert vw.opp == pytest.approx(20.0, abs=grid_step)
    assert vw.ipp == pytest.approx(20.0, abs=grid_step)
    assert vw.pmc < vw.opp < vw.pme and vw.pmc < vw.ipp < vw.pme


def test_van_westendorp_of_a_uniform_survey_matches_the_continuous_answer():
    # too_cheap ~ U(0, 20), too_expensive ~ U(10, 30): 1 - p/20 = (p - 10)/20 at p = 15 (OPP)
    # cheap ~ U(5, 25), expensive ~ U(15, 35): 1 - (p - 5)/20 = (p - 15)/20 at p = 20 (IPP)
    n = 2000
    u = (np.arange(n) + 0.5) / n
    rows = [vw_answer(20 * a, 5 + 20 * a, 15 + 20 * a, 10 + 20 * a + 0.0) for a in u]
    # keep thresholds ordered: too_expensive must be >= expensive, so shift it by the same quantile
    rows = [vw_answer(r.too_cheap, r.cheap, r.expensive, max(r.too_expensive, r.expensive)) for r in rows]
    vw = surveys.van_westendorp(rows)
    too_exp = np.array([r.too_expensive for r in rows])
    tc = np.array([r.too_cheap for r in rows])
    grid = np.linspace(0, 40, 400001)
    diff = (tc[None, :] >= grid[::100, None]).mean(1) - (too_exp[None, :] <= grid[::100, None]).mean(1)
    expected_opp = grid[::100][np.argmax(diff <= 0)]
    assert vw.opp == pytest.approx(expected_opp, abs=0.02)
    assert vw.ipp == pytest.approx(20.0, abs=0.02)


def test_inconsistent_van_westendorp_answers_are_dropped_and_counted():
    rows = symmetric_survey() + [vw_answer(30, 20, 10, 5), vw_answer(float("nan"), 1, 2, 3)]
    vw = surveys.van_westendorp(rows)
    assert vw.respondents == 8 and vw.dropped == 2
    assert surveys.van_westendorp([vw_answer(3, 2, 1, 0)]) is None


def test_gabor_granger_survey_optimum_is_a_over_2b():
    # intent(p) = 0.9 - 0.02 p on 10 prices, 3 respondents each: revenue peaks at 22.5
    answers = [SimpleNamespace(respondent_id=f"r{k}", price=float(p), purchase_intent=0.9 - 0.02 * p)
               for p in np.linspace(5, 40, 8) for k in range(3)]
    gg = surveys.gabor_granger(answers)
    assert gg.respondents == 3
    assert gg.optimum.price == pytest.approx(22.5, rel=1e-9)


def _with_surveys(req, price_scale=1.0):
    for r in symmetric_survey():
        req.idea.grounding.van_westendorp.add(too_cheap=r.too_cheap * price_scale, cheap=r.cheap * price_scale,
                                              expensive=r.expensive * price_scale, too_expensive=r.too_expensive * price_scale)
    for p in np.linspace(5, 40, 8):
        req.idea.grounding.gabor_granger.add(respondent_id="r1", price=float(p), purchase_intent=float(0.9 - 0.02 * p))
    return req


def test_surveys_reach_the_decision_and_the_wtp_dimension():
    d = analyze(_with_surveys(great()), render_documents=False).decision
    assert d.pricing.van_westendorp.respondents == 8
    assert d.pricing.van_westendorp.opp_usd == pytest.approx(20.0, abs=2e-3)
    assert d.pricing.survey_revenue_maximising_price_usd == pytest.approx(22.5, rel=1e-9)
    wtp = next(c for c in d.criteria if c.name == "wtp_validation")
    assert "Van Westendorp" in wtp.evidence and "Gabor-Granger" in wtp.evidence
    # the same market with a survey that finds $20 far too expensive scores WTP lower
    cheap = analyze(_with_surveys(great(), price_scale=0.25), render_documents=False).decision
    assert next(c for c in cheap.criteria if c.name == "wtp_validation").score < wtp.score


def test_grounding_market_sizes_override_the_idea_and_can_kill():
    req = great(tam=1e9)
    req.idea.grounding.market_sizes.add(metric="tam", value_usd=4e5, source="analyst report")
    req.idea.grounding.market_sizes.add(metric="tam", value_usd=6e5, source="survey")
    d = analyze(req, render_documents=False).decision
    assert d.market.tam_usd == pytest.approx(5e5)  # median of the imported figures
    assert "grounding" in d.market.tam_source
    assert d.recommendation == KILL and d.gate.gate_decision == "reject"
    tam = next(c for c in d.gate.criteria if c.name == "market_size_tam_at_least_1m")
    assert not tam.passed
    market_risk = next(r for r in d.risks if r.category == "market")
    assert market_risk.score == 100 and any("TAM" in e for e in market_risk.evidence)


def test_cost_overrides_replace_defaults_and_are_checked():
    base = analyze(great(), render_documents=False).decision
    req = great()
    req.cost_overrides.cac_usd = 1.0
    req.cost_overrides.fixed_costs_monthly_usd = 1000.0
    d = analyze(req, render_documents=False).decision
    assert d.financials.cac_usd == 1.0 and d.financials.fixed_costs_monthly_usd == 1000.0
    assert d.financials.npv_p50_usd > base.financials.npv_p50_usd
    assert any("request override" in b for b in d.financials.cost_basis)
    bad = great()
    bad.cost_overrides.gross_margin = 1.5
    with pytest.raises(InvalidArgument) as err:
        analyze(bad)
    assert err.value.field == "cost_overrides.gross_margin"


def test_confidence_is_the_share_of_iterations_in_the_band():
    for req in (great(), make_request(), make_request(team=1.0, build=30)):
        d = analyze(req, render_documents=False).decision
        c = d.confidence_detail
        assert c.share_go + c.share_pivot + c.share_kill == pytest.approx(1.0)
        band_share = {GO: c.share_go, PIVOT: c.share_pivot, KILL: c.share_kill}[d.recommendation]
        knocked = not next(g for g in d.gate.criteria if g.name == "no_show_stopping_risk").passed
        if not knocked:
            assert d.confidence == pytest.approx(band_share)
        assert c.probability_npv_positive == d.financials.probability_npv_positive
        assert c.evidence_adjusted <= d.confidence + 1e-12
        assert c.iterations == 60


def test_a_composite_near_a_threshold_splits_the_iterations():
    req = make_request(team=1.0)
    base = analyze(req, render_documents=False).decision
    # put the GO threshold at the composite itself: iterations fall on both sides of it
    split = analyze(req, policy={"bands": {"go": base.composite_score, "pivot": 10}}, render_documents=False).decision
    assert 0.0 < split.confidence_detail.share_go < 1.0
    assert 0.0 < split.confidence_detail.share_pivot < 1.0


def test_bass_model_and_tornado_drivers():
    a = bass_active_share(np.array([0.03]), np.array([0.4]), np.array([0.0]), 60)[0]
    assert np.all(np.diff(a) >= 0) and a[-1] > 0.95  # an S-curve to saturation without churn
    mid = np.argmax(np.diff(a))
    assert 0 < mid < 59  # the steepest month is inside the horizon (inflection)
    d = analyze(make_request(competitors=5, competitor_price=25.0), render_documents=False).decision
    drivers = {s.driver for s in d.sensitivity}
    assert {"price", "market size", "CAC", "fixed costs", "Bass p (innovation)", "Bass q (word of mouth)", "churn",
            "competitor prices"} <= drivers
    churn = next(s for s in d.sensitivity if s.driver == "churn")
    assert churn.npv_low_usd < churn.npv_high_usd  # more churn (the low label) is worse


def test_risks_have_scores_levels_and_evidence():
    d = analyze(great(), render_documents=False).decision
    assert [r.category for r in d.risks] == ["market", "competitive", "execution"]
    for r in d.risks:
        assert 0 <= r.score <= 100 and r.level in ("low", "medium", "high") and r.evidence


def _context(req):
    """The analysis context that decide.analyze hands to the renderers, captured from a real run."""
    from services.analysis import documents
    captured = {}
    original = documents.render

    def spy(**context):
        captured.update(context)
        return original(**context)

    documents.render = spy
    try:
        resp = analyze(req)
    finally:
        documents.render = original
    return resp, captured


def test_every_chart_has_data_and_the_pdf_has_pages():
    req = _with_surveys(make_request(competitors=5, competitor_price=25.0))
    for i, c in enumerate(req.competitors):
        c.feature_vector["a"] = 0.2 * i
    req.our_offering.feature_vector["a"] = 0.7
    resp, ctx = _context(req)
    figs = charts.build_all(ctx)
    assert set(figs) == {"demand_revenue", "revenue_fan", "adoption", "tornado", "positioning", "van_westendorp"}
    vw_lines = {line.get_label(): line for line in figs["van_westendorp"].axes[0].lines}
    assert vw_lines["too cheap"].get_ydata()[0] == 100.0 and vw_lines["too expensive"].get_ydata()[-1] == 100.0
    demand = figs["demand_revenue"].axes[0]
    curve = demand.lines[0]
    np.testing.assert_allclose(curve.get_xdata(), ctx["sim"].prices)
    np.testing.assert_allclose(curve.get_ydata(), 100 * ctx["sim"].mean_share)
    assert any(len(line.get_xdata()) == 2 and np.allclose(line.get_xdata(), [20.0, 20.0]) for line in demand.lines)
    fan = figs["revenue_fan"].axes[0]
    np.testing.assert_allclose(fan.lines[0].get_ydata(), ctx["used"].finance.monthly_p50)
    assert fan.lines[0].get_ydata().max() > 0
    adoption = figs["adoption"].axes[0].lines[0].get_ydata()
    assert adoption[-1] > adoption[0] >= 0
    tornado = figs["tornado"].axes[0]
    assert len(tornado.patches) == 2 * len(ctx["tornado"]) and len(ctx["tornado"]) >= 8
    assert any(abs(p.get_width()) > 0 for p in tornado.patches)
    positioning = figs["positioning"].axes[0]
    offsets = np.vstack([c.get_offsets() for c in positioning.collections])
    assert offsets.shape[0] == 6  # five competitors and us
    reader = PdfReader(io.BytesIO(resp.report_pdf))
    assert len(reader.pages) == 7  # summary + six charts
    assert "Recommendation" in reader.pages[0].extract_text()
    assert resp.report_html.count("data:image/png;base64,") == 6
    assert "<table>" in resp.report_html and "Van Westendorp" in resp.report_html


def test_offer_dominating_every_attribute_at_a_lower_price_is_go():
    req = great(competitors=5, competitor_price=40.0)  # we charge 20, every rival 40
    for i, c in enumerate(req.competitors):
        for k, v in {"sync": 0.5, "reports": 0.4, "alerts": 0.3 + 0.05 * i}.items():
            c.feature_vector[k] = v
    for k in ("sync", "reports", "alerts"):
        req.our_offering.feature_vector[k] = 1.0  # better on every attribute
    d = analyze(req, render_documents=False).decision
    assert d.recommendation == GO and d.gate.gate_decision == "proceed", d.rationale
    comp = next(c for c in d.criteria if c.name == "competitive_position")
    assert comp.score >= 90 and not comp.neutral
    assert next(r for r in d.risks if r.category == "competitive").level == "low"


def test_without_simulated_scenarios_the_pivots_fall_back_to_the_matrix_and_wtp_and_say_so():
    """A hand-built simulation output carries no feature-parity or segment-focus scenario
    (test_pivots.py has the simulated ones): the earlier evidence, labelled not simulated."""
    from smvm.v1 import market_pb2
    req = make_request(competitors=5, competitor_price=20.0)
    for c in req.competitors:
        c.feature_vector["sync"] = 0.9
    req.our_offering.feature_vector["sync"] = 0.2
    req.personas.add(name="power users", weight=0.2, wtp=market_pb2.WtpDistribution(median_usd=60.0, sigma=0.3))
    req.personas.add(name="students", weight=0.8, wtp=market_pb2.WtpDistribution(median_usd=8.0, sigma=0.3))
    d = analyze(req, render_documents=False).decision
    assert d.recommendation == PIVOT, d.rationale
    positioning = next(s for s in d.pivot_suggestions if s.startswith("positioning:"))
    assert "first on sync" in positioning and f"{d.composite_score:.1f} -> " in positioning
    after = float(positioning.split(" -> ")[1].split(" ")[0])
    assert after > d.composite_score
    segment = next(s for s in d.pivot_suggestions if s.startswith("segment:"))
    assert "'power users'" in segment and "market-wide" in segment
    assert "not simulated" in positioning and "not simulated" in segment


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(*[st.floats(1.0, 100.0)] * 4), min_size=3, max_size=30), st.floats(0.5, 4.0))
def test_van_westendorp_points_scale_with_the_currency(rows, k):
    answers = [vw_answer(*sorted(r)) for r in rows]
    a = surveys.van_westendorp(answers)
    b = surveys.van_westendorp([vw_answer(*(k * x for x in sorted(r))) for r in rows])
    span = max(max(r) for r in rows) - min(min(r) for r in rows)
    tol = 2 * k * span / (surveys.GRID_POINTS - 1) + 1e-9
    for name in ("pmc", "pme", "opp", "ipp"):
        assert getattr(b, name) == pytest.approx(k * getattr(a, name), abs=tol), name
        assert min(min(r) for r in rows) - 1e-9 <= getattr(a, name) <= max(max(r) for r in rows) + 1e-9
