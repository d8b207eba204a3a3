"""Ceilings: at the ceiling passes, one over is refused, 0 means the service default, 80 % warns."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from smvm.config import Settings
from smvm.errors import InvalidArgument, ResourceExhausted
from smvm.v1 import overwatch_service_pb2 as pb

from services.overwatch.budget import BudgetDefaults, check_budget

DEFAULTS = BudgetDefaults(max_utility_evaluations=1_000, max_tokens_per_run=10_000, warn_fraction=0.8)


def check(**fields) -> pb.CheckBudgetResponse:
    return check_budget(pb.CheckBudgetRequest(run_id="RUN-B", **fields), DEFAULTS)


def test_exactly_at_each_ceiling_passes_with_full_utilisation():
    response = check(requested_utility_evaluations=500, max_utility_evaluations=500)
    assert response.utilisation == 1.0
    assert list(response.warnings) == ["resource_constraint: compute at 100% of ceiling (500 of 500 utility evaluations)"]
    response = check(requested_tokens=10_000)
    assert response.utilisation == 1.0 and response.warnings[0].startswith("resource_constraint: tokens at 100%")


def test_one_over_the_compute_ceiling_is_resource_exhausted_naming_it():
    with pytest.raises(ResourceExhausted) as err:
        check(requested_utility_evaluations=501, max_utility_evaluations=500)
    assert err.value.code == "RESOURCE_EXHAUSTED"
    assert err.value.field == "requested_utility_evaluations"
    assert "compute ceiling exceeded: requested 501 utility evaluations > allowed 500" in err.value.message
    assert err.value.reason == "MAX_UTILITY_EVALUATIONS_EXCEEDED"


def test_one_over_the_token_ceiling_is_resource_exhausted_naming_it():
    with pytest.raises(ResourceExhausted) as err:
        check(requested_tokens=2_001, max_tokens_per_run=2_000)
    assert err.value.field == "requested_tokens"
    assert "tokens ceiling exceeded: requested 2001 tokens > allowed 2000 (max_tokens_per_run)" in err.value.message


def test_zero_ceilings_mean_the_service_defaults():
    response = check(requested_utility_evaluations=10)
    assert (response.max_utility_evaluations, response.max_tokens_per_run) == (1_000, 10_000)
    assert response.utilisation == pytest.approx(0.01) and list(response.warnings) == []
    check(requested_utility_evaluations=1_000)
    with pytest.raises(ResourceExhausted):
        check(requested_utility_evaluations=1_001)


def test_a_run_ceiling_replaces_the_default_either_way():
    response = check(requested_utility_evaluations=5_000, max_utility_evaluations=10_000)
    assert response.max_utility_evaluations == 10_000 and response.utilisation == 0.5
    with pytest.raises(ResourceExhausted):
        check(requested_utility_evaluations=101, max_utility_evaluations=100)


def test_warning_starts_at_80_percent():
    assert check(requested_utility_evaluations=799).warnings == []
    assert list(check(requested_utility_evaluations=800).warnings) == [
        "resource_constraint: compute at 80% of ceiling (800 of 1000 utility evaluations)"]
    both = check(requested_utility_evaluations=850, requested_tokens=9_000)
    assert [w.split(" (")[0] for w in both.warnings] == [
        "resource_constraint: compute at 85% of ceiling", "resource_constraint: tokens at 90% of ceiling"]
    assert both.utilisation == pytest.approx(0.9)


@pytest.mark.parametrize("field", ["requested_utility_evaluations", "requested_tokens",
                                   "max_utility_evaluations", "max_tokens_per_run"])
def test_negative_values_name_the_field(field):
    with pytest.raises(InvalidArgument) as err:
        check(**{field: -1})
    assert err.value.field == field


def test_defaults_come_from_settings_and_the_policy():
    defaults = BudgetDefaults.from_settings(Settings(profile="test", max_utility_evaluations=12_345))
    assert defaults == BudgetDefaults(max_utility_evaluations=12_345, max_tokens_per_run=10_000, warn_fraction=0.8)


counts = st.integers(min_value=0, max_value=10**12)
ceilings = st.integers(min_value=1, max_value=10**12)


@settings(max_examples=300, deadline=None)
@given(a=counts, b=counts, tokens=counts, max_evals=ceilings, max_tokens=ceilings)
def test_utilisation_is_monotone_in_the_request_and_is_the_largest_fraction(a, b, tokens, max_evals, max_tokens):
    low, high = sorted((a, b))

    def outcome(evals: int):
        try:
            return check(requested_utility_evaluations=evals, requested_tokens=tokens,
                         max_utility_evaluations=max_evals, max_tokens_per_run=max_tokens)
        except ResourceExhausted:
            return None

    small, large = outcome(low), outcome(high)
    if small is None:
        assert large is None  # refusing a smaller request means refusing any larger one
        return
    assert small.utilisation == max(low / max_evals, tokens / max_tokens)
    assert small.utilisation <= 1.0
    assert bool(small.warnings) == (small.utilisation >= 0.8 and small.utilisation > 0) or \
        abs(small.utilisation - 0.8) < 1e-12  # float rounding at exactly 80 % is decided exactly in integers
    if large is not None:
        assert large.utilisation >= small.utilisation
        assert len(large.warnings) >= len(small.warnings)
