"""The tornado on re-simulated swings: a real simulation (personas, landscape, the orchestrator's
config, the numba engine) analysed; swings at factor 1 score like the base; a swing across a band
edge is flagged; an output without swings falls back to the labelled approximations."""

from __future__ import annotations

import pytest

from services.analysis.decide import analyze
from services.analysis.servicer import AnalysisServicer
from services.competitors.landscape import build_landscape
from services.orchestrator import simconfig
from services.personas.synthesis import generate_personas
from services.simulation.servicer import SimulationServicer
from smvm.v1 import (analysis_service_pb2, competitor_service_pb2, decision_pb2, idea_pb2, persona_service_pb2,
                     run_pb2, simulation_pb2, simulation_service_pb2)

RESIMULATED_DRIVERS = {"Bass p (innovation)", "Bass q (word of mouth)", "churn", "competitor prices"}
SAM = 1e9
PRICE = idea_pb2.Price(amount=29, currency="USD", billing_period="monthly")


def _config(swings=None) -> tuple[simulation_pb2.SimulationConfig, object, object]:
    idea = idea_pb2.Idea(title="team budgeting", domain="b2b_saas", price=PRICE, features=["budgets", "reports", "sso"])
    landscape = build_landscape(competitor_service_pb2.BuildLandscapeRequest(idea=idea, count=5, seed=7))
    personas = generate_personas(persona_service_pb2.GeneratePersonasRequest(idea=idea, count=4, seed=1))
    config = simconfig.build_simulation_config(
        sam_usd=SAM, personas=personas, landscape=landscape,
        configuration=run_pb2.RunConfiguration(simulation_iterations=200), seed=3, max_utility_evaluations=0)
    if swings is not None:
        del config.swings[:]
        config.swings.extend(swings)
    return config, personas, landscape


async def _simulate(config) -> simulation_pb2.SimulationResult:
    """Through the simulation servicer (the code the service runs), without a server."""
    servicer = SimulationServicer(max_iterations=10_000)
    request = simulation_service_pb2.RunSimulationRequest(config=config)
    return [e async for e in servicer.RunSimulation(request, None)][-1].result


def _request(config, personas, landscape, result) -> analysis_service_pb2.AnalyzeRequest:
    req = analysis_service_pb2.AnalyzeRequest(
        simulation=result, simulation_config=config, our_offering=landscape.our_offering,
        competitors=landscape.competitors, personas=personas.personas)
    req.idea.price.CopyFrom(PRICE)
    req.idea.market_size.tam_usd, req.idea.market_size.sam_usd = 3 * SAM, SAM
    req.idea.estimated_build_months, req.idea.team_coverage = 6, 0.8
    return req


@pytest.fixture(scope="module")
async def resimulated():
    config, personas, landscape = _config()
    return _request(config, personas, landscape, await _simulate(config))


def _by_driver(decision) -> dict[str, decision_pb2.SensitivitySwing]:
    return {s.driver: s for s in decision.sensitivity}


async def test_the_decision_tornado_comes_from_re_simulation(resimulated):
    """Through the analysis servicer: the market drivers are marked re-simulated, nothing approximated."""
    assert len(resimulated.simulation_config.swings) == 10 and len(resimulated.simulation.swings) == 10  # 8 + 2 pivot scenarios
    response = await AnalysisServicer().Analyze(resimulated, None)
    d = response.decision
    swings = _by_driver(d)
    assert {name for name, s in swings.items() if s.method == "re-simulated"} == RESIMULATED_DRIVERS
    assert {name for name, s in swings.items() if s.method == "same paths"} == {"price", "market size", "CAC", "fixed costs"}
    assert not any("approximated" in w for w in d.warnings)
    assert (swings["churn"].low_label, swings["churn"].high_label) == ("+25%", "-25%")
    assert (swings["competitor prices"].low_label, swings["competitor prices"].high_label) == ("-20%", "+20%")
    for name in RESIMULATED_DRIVERS:  # the low label is the adverse side
        assert swings[name].npv_low_usd < swings[name].npv_high_usd, name
    assert "re-simulated" in response.report_markdown


@pytest.mark.parametrize("iterations, sample_limit", [(200, 1000), (600, 150)])
async def test_swings_at_factor_one_score_exactly_like_the_base(iterations, sample_limit):
    """Common random numbers end to end: unswung re-simulations give the base NPV and composite, also
    when the run has more iterations than it samples (the swings cover only the sampled ones, and the
    competitor shares are compared like for like: without that the composites differ)."""
    drivers = [simulation_pb2.SWING_DRIVER_BASS_P, simulation_pb2.SWING_DRIVER_BASS_Q,
               simulation_pb2.SWING_DRIVER_CHURN, simulation_pb2.SWING_DRIVER_COMPETITOR_PRICES,
               simulation_pb2.SWING_DRIVER_OUR_PRICE]
    config, personas, landscape = _config([simulation_pb2.DriverSwing(driver=d, factor=1.0) for d in drivers])
    config.iterations, config.sample_limit = iterations, sample_limit
    d = analyze(_request(config, personas, landscape, await _simulate(config)), render_documents=False).decision
    swings = _by_driver(d)
    for name in RESIMULATED_DRIVERS | {"price"}:
        s = swings[name]
        assert s.method == "re-simulated"
        assert s.npv_low_usd == pytest.approx(d.financials.npv_p50_usd, rel=1e-9), name
        assert s.npv_high_usd == pytest.approx(d.financials.npv_p50_usd, rel=1e-9), name
        assert s.composite_low == pytest.approx(d.composite_score, abs=1e-9), name
        assert s.composite_high == pytest.approx(d.composite_score, abs=1e-9), name
        assert not s.flips_recommendation


def test_a_re_simulated_swing_across_the_band_edge_flips_the_call(resimulated):
    base = analyze(resimulated, render_documents=False).decision
    churn = _by_driver(base)["churn"]
    assert churn.composite_low < base.composite_score < churn.composite_high  # more churn scores lower
    # Put the GO threshold between the base and the adverse churn swing: GO, and churn flips it.
    edge = 0.5 * (base.composite_score + churn.composite_low)
    tight = analyze(resimulated, policy={"bands": {"go": edge, "pivot": 10}}, render_documents=False).decision
    assert tight.recommendation == decision_pb2.RECOMMENDATION_GO
    swings = _by_driver(tight)
    assert swings["churn"].flips_recommendation and swings["churn"].band_low == "PIVOT"
    assert swings["churn"].band_high == "GO"
    steady = [s for s in tight.sensitivity if min(s.composite_low, s.composite_high) >= edge]
    assert steady and not any(s.flips_recommendation for s in steady)  # the band holds for drivers that stay above
    assert any(s.flips_recommendation for s in tight.sensitivity if s.method == "re-simulated")


def test_an_output_without_swings_falls_back_to_labelled_approximations(resimulated):
    old = analysis_service_pb2.AnalyzeRequest()
    old.CopyFrom(resimulated)
    del old.simulation.swings[:]  # a stage output stored before swings existed
    d = analyze(old, render_documents=False).decision
    swings = _by_driver(d)
    assert {name for name, s in swings.items() if s.method == "approximated"} == RESIMULATED_DRIVERS
    assert any("approximated, not re-simulated" in w for w in d.warnings)
    fresh = _by_driver(analyze(resimulated, render_documents=False).decision)
    # The approximation is not what the simulator says (the point of re-simulating).
    assert any(swings[n].npv_low_usd != pytest.approx(fresh[n].npv_low_usd, rel=1e-6) for n in RESIMULATED_DRIVERS)


def test_misaligned_swing_paths_are_not_used(resimulated):
    bad = analysis_service_pb2.AnalyzeRequest()
    bad.CopyFrom(resimulated)
    churn = [s for s in bad.simulation.swings if s.swing.driver == simulation_pb2.SWING_DRIVER_CHURN]
    churn[0].monthly_customers_f64 = churn[0].monthly_customers_f64[:-40]  # truncated: cannot line up with the samples
    swings = _by_driver(analyze(bad, render_documents=False).decision)
    assert swings["churn"].method == "approximated" and swings["Bass p (innovation)"].method == "re-simulated"


@pytest.fixture(scope="module")
async def responding():
    """The orchestrator's config with competitive response on: it asks for our-price swings too."""
    config, personas, landscape = _config()
    config.competitive_response = True
    del config.swings[:]
    config.swings.extend(simconfig.default_swings(config))
    return _request(config, personas, landscape, await _simulate(config))


def test_with_competitive_response_the_price_swing_is_re_simulated(responding):
    assert [(s.driver, s.factor) for s in responding.simulation_config.swings if s.driver == simulation_pb2.SWING_DRIVER_OUR_PRICE] == [
        (simulation_pb2.SWING_DRIVER_OUR_PRICE, 0.8), (simulation_pb2.SWING_DRIVER_OUR_PRICE, 1.2)]
    d = analyze(responding, render_documents=False).decision
    price = _by_driver(d)["price"]
    assert (price.method, price.low_label, price.high_label) == ("re-simulated", "-20%", "+20%")
    assert not any("approximated" in w for w in d.warnings)
    # Without the our-price swings the same output can only re-price the paths, which leaves the
    # competitors' reaction out: labelled approximated, and not what the simulator says.
    old = analysis_service_pb2.AnalyzeRequest()
    old.CopyFrom(responding)
    kept = [s for s in old.simulation.swings if s.swing.driver != simulation_pb2.SWING_DRIVER_OUR_PRICE]
    del old.simulation.swings[:]
    old.simulation.swings.extend(kept)
    approximated = analyze(old, render_documents=False).decision
    repriced = _by_driver(approximated)["price"]
    assert repriced.method == "approximated" and any("price" in w and "approximated" in w for w in approximated.warnings)
    assert repriced.npv_low_usd != pytest.approx(price.npv_low_usd, rel=1e-6)
