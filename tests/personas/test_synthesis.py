"""Persona synthesis and bias controls: known answers and properties."""

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from services.personas import bias
from services.personas.priors import REQUIRED_DOMAINS, all_priors, load_prior, resolve_domain
from services.personas.synthesis import Z90, generate_personas, wtp_distribution
from smvm.errors import InvalidArgument
from smvm.v1 import idea_pb2, persona_service_pb2


def request(domain="", count=5, seed=7, **idea):
    return persona_service_pb2.GeneratePersonasRequest(
        idea=idea_pb2.Idea(domain=domain, **idea), count=count, seed=seed
    )


def test_every_required_domain_has_a_prior_that_loads():
    priors = all_priors()
    assert set(REQUIRED_DOMAINS) <= set(priors)
    for prior in priors.values():
        assert prior.segments and prior.features and prior.archetypes
        assert math.isclose(sum(c.p for c in prior.joint), 1.0, rel_tol=1e-9)


def test_domain_resolution_by_synonym_keywords_and_fallback():
    assert resolve_domain(idea_pb2.Idea(domain="fintech")).domain == "finance"
    fallback = resolve_domain(idea_pb2.Idea(domain="underwater basket weaving"))
    assert fallback.domain == "general" and fallback.method == "fallback"
    assert any(w.startswith("prior:fallback_general") for w in fallback.warnings)


def test_same_seed_same_bytes_different_seed_differs():
    a = generate_personas(request("finance", seed=11)).SerializeToString(deterministic=True)
    b = generate_personas(request("finance", seed=11)).SerializeToString(deterministic=True)
    c = generate_personas(request("finance", seed=12)).SerializeToString(deterministic=True)
    assert a == b and a != c


def test_unknown_domain_uses_general_prior_and_says_so():
    response = generate_personas(request("underwater basket weaving"))
    assert response.prior == "general" and response.domain_detection == "fallback"
    assert any("fallback_general" in w for w in response.warnings)


def test_wtp_quantiles_follow_the_lognormal():
    wtp = wtp_distribution(20.0, 0.5)
    assert wtp.p50_usd == pytest.approx(20.0)
    assert wtp.p10_usd == pytest.approx(20.0 * math.exp(-Z90 * 0.5))
    assert wtp.p90_usd == pytest.approx(20.0 * math.exp(Z90 * 0.5))


@pytest.mark.parametrize("domain", REQUIRED_DOMAINS)
def test_personas_respect_weights_cap_and_the_joint_table(domain):
    prior = load_prior(domain)
    response = generate_personas(request(domain, count=8, seed=3))
    assert len(response.personas) == 8
    weights = [p.weight for p in response.personas]
    assert math.isclose(sum(weights), 1.0, abs_tol=1e-9)
    assert max(weights) <= response.bias_report.segment_weight_cap + 1e-9
    cells = {(c.age, c.income, c.occupation) for c in prior.joint if c.p > 0}
    for p in response.personas:
        d = p.demographics
        # Drawn jointly: only cells with mass in the domain's table, never a forbidden combination.
        assert (d["age_band"], d["income_band"], d["occupation"]) in cells
        assert not prior.demographics.violations(d["age_band"], d["income_band"], d["occupation"])
        assert p.wtp.p10_usd < p.wtp.p50_usd < p.wtp.p90_usd
        assert set(p.feature_importance) == set(prior.feature_ids)
        assert p.sources["segment"].startswith(f"prior:{domain}#segments.")


def test_bias_report_passes_iff_no_flags():
    response = generate_personas(request("b2b_saas", count=6))
    report = response.bias_report
    assert report.passed == (not report.flags)
    assert 0.0 <= report.diversity_entropy <= 1.0


def test_count_limits_name_the_field():
    with pytest.raises(InvalidArgument) as err:
        generate_personas(request(count=10_000))
    assert err.value.field == "count"


def test_cap_redistributes_excess_in_proportion():
    result = bias.cap_weights([8, 1, 1], cap=0.5)
    assert result.feasible and result.capped == (0,)
    np.testing.assert_allclose(result.weights, [0.5, 0.25, 0.25])


def test_infeasible_cap_gives_uniform_weights():
    result = bias.cap_weights([5, 1], cap=0.4)
    assert not result.feasible
    np.testing.assert_allclose(result.weights, [0.5, 0.5])


def test_entropy_known_answers():
    assert bias.normalised_entropy([1, 1, 1, 1]) == pytest.approx(1.0)
    assert bias.normalised_entropy([1, 0, 0, 0]) == pytest.approx(0.0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=0.001, max_value=1000.0), min_size=2, max_size=12), st.floats(0.2, 1.0))
def test_cap_properties(weights, cap):
    result = bias.cap_weights(weights, cap)
    w = result.weights
    assert math.isclose(w.sum(), 1.0, abs_tol=1e-9)
    if result.feasible:
        assert w.max() <= cap + 1e-9
        # Order is preserved: a larger input weight never ends up smaller.
        order = np.argsort(weights, kind="stable")
        assert np.all(np.diff(w[order]) >= -1e-12)
