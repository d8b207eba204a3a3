"""WTP calibration: known-answer recovery of a lognormal from Van Westendorp and Gabor-Granger surveys,
the fidelity statistics, and personas calibrated to an idea's grounding data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from smvm.errors import InvalidArgument
from smvm.v1 import grounding_pb2, idea_pb2, persona_service_pb2

from services.personas import calibration
from services.personas.synthesis import generate_personas

MU, SIGMA = math.log(30.0), 0.6
# A fixed price ladder, as a Van Westendorp questionnaire presents it: the answer brackets the WTP.
LADDER = 0.5 * 1.25 ** np.arange(45)
GG_PRICES = (10.0, 20.0, 30.0, 45.0, 60.0)


def _vw_survey(n: int, seed: int, mu: float = MU, sigma: float = SIGMA) -> tuple[grounding_pb2.GroundingData, np.ndarray]:
    rng = np.random.default_rng(seed)
    wtp = np.exp(mu + sigma * rng.standard_normal(n))
    g = grounding_pb2.GroundingData()
    for i, w in enumerate(wtp):
        k = int(np.searchsorted(LADDER, w))
        g.van_westendorp.add(respondent_id=f"vw{i}", too_cheap=LADDER[k - 2] if k >= 2 else LADDER[0] / 2,
                             cheap=LADDER[k - 1], expensive=LADDER[k], too_expensive=LADDER[k + 1])
    g.quality.add(import_id="a" * 64, kind="van_westendorp")
    return g, wtp


def _gg_survey(n: int, seed: int, g: grounding_pb2.GroundingData | None = None) -> tuple[grounding_pb2.GroundingData, np.ndarray]:
    rng = np.random.default_rng(seed)
    wtp = np.exp(MU + SIGMA * rng.standard_normal(n))
    g = g or grounding_pb2.GroundingData()
    for i, w in enumerate(wtp):
        for p in GG_PRICES:
            g.gabor_granger.add(respondent_id=f"gg{i}", price=p, purchase_intent=float(w >= p))
    g.quality.add(import_id="b" * 64, kind="gabor_granger")
    return g, wtp


def test_van_westendorp_survey_from_a_known_lognormal_is_recovered():
    g, wtp = _vw_survey(1500, seed=1)
    fit = calibration.calibrate(g)
    assert fit.calibrated and fit.method == f"lognormal_mle:{calibration.METHOD_VW}"
    # Within 3 standard errors of the truth (se(mu) = sigma/sqrt(n) ~ 0.017 on the fit sample) ...
    assert fit.mu == pytest.approx(MU, abs=0.06) and fit.sigma == pytest.approx(SIGMA, abs=0.05)
    # ... and close to what the exact (uncensored) WTPs would have given.
    assert fit.mu == pytest.approx(float(np.log(wtp).mean()), abs=0.03)
    assert fit.median_usd == pytest.approx(math.exp(fit.mu), rel=1e-4)
    assert fit.fit_respondents + fit.holdout_respondents == 1500
    assert 0.12 < fit.holdout_respondents / 1500 < 0.28  # every 5th by hash
    assert 0 <= fit.ks_distance < 0.08 and fit.intent_mae == -1
    # The ladder is coarse (x1.25): midpoints sit off the truth by up to half a step, so this one is larger.
    assert fit.ks_distance <= fit.ks_midpoint_distance < 0.2
    assert fit.upper_range_usd == pytest.approx(np.quantile([a.too_expensive for a in g.van_westendorp], 0.9))


def test_gabor_granger_survey_is_recovered_and_its_intent_reproduced():
    g, wtp = _gg_survey(800, seed=5)
    fit = calibration.calibrate(g)
    assert fit.mu == pytest.approx(float(np.log(wtp).mean()), abs=0.05)
    assert fit.sigma == pytest.approx(SIGMA, abs=0.07)
    assert 0 <= fit.intent_mae < 0.04 and fit.ks_distance == -1
    assert [p.price_usd for p in fit.price_points] == list(GG_PRICES)
    for p in fit.price_points:
        assert p.predicted_intent == pytest.approx(1 - float(np.mean(np.log(p.price_usd) > np.log(wtp))), abs=0.08)


def test_both_kinds_fit_together():
    g, _ = _vw_survey(600, seed=2)
    g, _ = _gg_survey(300, seed=3, g=g)
    fit = calibration.calibrate(g)
    assert fit.method == f"lognormal_mle:{calibration.METHOD_VW}+{calibration.METHOD_GG}"
    assert fit.mu == pytest.approx(MU, abs=0.08) and fit.sigma == pytest.approx(SIGMA, abs=0.07)
    assert fit.ks_distance >= 0 and fit.intent_mae >= 0
    assert list(fit.import_ids) == ["a" * 64, "b" * 64]


def test_fidelity_exposes_a_wrong_model():
    g, _ = _vw_survey(1000, seed=4)
    low = np.array([a.cheap for a in g.van_westendorp])
    high = np.array([a.expensive for a in g.van_westendorp])
    right = calibration.interval_ks_distance(low, high, MU, SIGMA)
    wrong = calibration.interval_ks_distance(low, high, MU + 0.5, SIGMA)
    assert right < 0.05 < 0.25 < wrong


@given(st.lists(st.floats(0.5, 500.0), min_size=1, max_size=60), st.floats(-1, 6), st.floats(0.1, 2.0))
@settings(max_examples=100, deadline=None)
def test_interval_ks_equals_the_ks_statistic_for_points(points, mu, sigma):
    x = np.array(points)
    assert calibration.interval_ks_distance(x, x, mu, sigma) == pytest.approx(calibration.ks_distance(x, mu, sigma), abs=1e-9)
    # Widening the intervals can only bring the data closer to any model.
    assert calibration.interval_ks_distance(x / 1.5, x * 1.5, mu, sigma) <= calibration.ks_distance(x, mu, sigma) + 1e-12


@given(st.lists(st.tuples(st.floats(1, 1000), st.floats(0.1, 1.5), st.floats(0.01, 1)), min_size=1, max_size=10),
       st.floats(0, 7), st.floats(0.1, 2))
@settings(max_examples=100, deadline=None)
def test_calibrated_personas_mixture_has_the_fitted_log_moments(rows, mu, sigma):
    medians, sigmas, weights = (list(x) for x in zip(*rows))
    new_m, new_s = calibration.calibrated_wtp(medians, sigmas, weights, mu, sigma)
    w = np.array(weights) / sum(weights)
    logs = np.log(new_m)
    centre = float(np.sum(w * logs))
    assert centre == pytest.approx(mu, abs=1e-9)
    variance = float(np.sum(w * (logs - centre) ** 2) + np.sum(w * np.array(new_s) ** 2))
    assert variance == pytest.approx(sigma ** 2, rel=1e-9)
    # The prior's ordering of personas by median survives.
    for a, na in zip(medians, new_m):
        for b, nb in zip(medians, new_m):
            if a < b * (1 - 1e-9):
                assert na <= nb * (1 + 1e-9)


def test_too_few_respondents_leave_the_prior_and_say_so():
    g, _ = _vw_survey(6, seed=9)
    fit = calibration.calibrate(g)
    assert not fit.calibrated and fit.notes[0].startswith("calibration:skipped: 6 survey respondent(s)")


def _request(grounding: grounding_pb2.GroundingData, count: int = 6) -> persona_service_pb2.GeneratePersonasRequest:
    idea = idea_pb2.Idea(domain="b2b_saas", title="t", description="invoicing for agencies")
    idea.grounding.CopyFrom(grounding)
    return persona_service_pb2.GeneratePersonasRequest(idea=idea, count=count, seed=3)


def test_personas_are_calibrated_to_the_survey_and_name_it_as_their_source():
    g, _ = _vw_survey(400, seed=6)
    response = generate_personas(_request(g))
    fit = response.calibration
    assert fit.calibrated
    w = np.array([p.weight for p in response.personas])
    logs = np.log([p.wtp.median_usd for p in response.personas])
    sig = np.array([p.wtp.sigma for p in response.personas])
    centre = float(np.sum(w * logs))
    assert centre == pytest.approx(fit.mu, abs=1e-6)
    assert float(np.sum(w * (logs - centre) ** 2) + np.sum(w * sig ** 2)) == pytest.approx(fit.sigma ** 2, rel=1e-6)
    parameters = {"segment", "weight", "demographics", "needs", "wtp", "price_sensitivity", "feature_importance",
                  "innovation", "imitation", "churn_monthly", "brand_affinity", "narrative"}
    for p in response.personas:
        assert set(p.sources) == parameters and all(p.sources.values())
        assert p.sources["wtp"].startswith(f"grounding:{'a' * 12}#lognormal_mle:")
        assert p.sources["price_sensitivity"].startswith("prior:b2b_saas")
    assert response.bias_report.wtp_upper_range_usd == pytest.approx(fit.upper_range_usd)
    # Without grounding: prior WTP, prior upper range, nothing calibrated.
    plain = generate_personas(_request(grounding_pb2.GroundingData()))
    assert not plain.calibration.calibrated and plain.calibration.ks_distance == -1
    assert all(p.sources["wtp"].startswith("prior:b2b_saas") for p in plain.personas)


def test_persona_wtp_above_the_grounding_range_is_flagged_as_optimism():
    g = grounding_pb2.GroundingData()
    for i in range(5):  # too few to calibrate, but they bound what respondents will pay
        g.van_westendorp.add(respondent_id=f"r{i}", too_cheap=0.5, cheap=1.0, expensive=2.0, too_expensive=3.0)
    response = generate_personas(_request(g))
    assert not response.calibration.calibrated
    report = response.bias_report
    assert report.wtp_upper_range_usd == pytest.approx(3.0)
    flagged = [f for f in report.flags if f.startswith("optimism:wtp_p90_above_grounding_upper_range:")]
    assert len(flagged) == len(response.personas) and not report.passed


_PRICE = st.one_of(st.floats(1e-4, 1e6), st.sampled_from([1e-4, 1.0, 1e6]))


@given(st.lists(st.lists(_PRICE, min_size=4, max_size=4).map(sorted), max_size=40),
       st.lists(st.tuples(_PRICE, st.floats(0, 1)), max_size=40))
@settings(max_examples=80, deadline=None)
def test_any_valid_survey_gives_a_finite_fit_or_none(vw, gg):
    g = grounding_pb2.GroundingData()
    for i, (a, b, c, d) in enumerate(vw):
        g.van_westendorp.add(respondent_id=f"v{i}", too_cheap=a, cheap=b, expensive=c, too_expensive=d)
    for i, (p, q) in enumerate(gg):
        g.gabor_granger.add(respondent_id=f"g{i}", price=p, purchase_intent=q)
    fit = calibration.calibrate(g)
    if fit.calibrated:
        assert math.isfinite(fit.mu) and calibration.SIGMA_BOUNDS[0] - 1e-9 <= fit.sigma <= calibration.SIGMA_BOUNDS[1] + 1e-9
        assert fit.ks_distance == -1 or 0 <= fit.ks_distance <= 1
        assert fit.intent_mae == -1 or 0 <= fit.intent_mae <= 1


@pytest.mark.parametrize("mutate, field", [
    (lambda g: g.van_westendorp.add(too_cheap=1, cheap=2, expensive=float("nan"), too_expensive=4),
     "idea.grounding.van_westendorp[0].expensive"),
    (lambda g: g.van_westendorp.add(too_cheap=1, cheap=3, expensive=2, too_expensive=4),
     "idea.grounding.van_westendorp[0].expensive"),
    (lambda g: g.gabor_granger.add(price=-5, purchase_intent=0.5), "idea.grounding.gabor_granger[0].price"),
    (lambda g: g.gabor_granger.add(price=5, purchase_intent=1.5), "idea.grounding.gabor_granger[0].purchase_intent"),
])
def test_unusable_survey_answers_name_their_field(mutate, field):
    g = grounding_pb2.GroundingData()
    mutate(g)
    with pytest.raises(InvalidArgument) as err:
        generate_personas(_request(g))
    assert err.value.field == field
