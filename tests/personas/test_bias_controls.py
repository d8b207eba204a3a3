"""Each bias control fails on its own when its rule is broken, and says so in a machine-readable flag."""

from __future__ import annotations

import pytest

from services.personas import bias

AGES = ("18-24", "25-34", "35-44", "45-54")
INCOMES = ("low", "mid", "high")


def _report(checks, weights, *, cap=0.5, upper=100.0, source="prior", min_entropy=0.7):
    return bias.build_bias_report(
        personas=checks, weights=weights, cap=bias.cap_weights(weights, cap), segment_cap=cap,
        age_bands=AGES, income_bands=INCOMES, age_bands_with_mass=4, income_bands_with_mass=3,
        wtp_upper_range_usd=upper, upper_range_source=source, min_entropy=min_entropy,
    )


def _checks(bands, p90=50.0):
    return [bias.PersonaCheck(f"p{i}", a, inc, p90) for i, (a, inc) in enumerate(bands)]


def test_a_diverse_covered_modest_set_passes():
    report = _report(_checks([("18-24", "low"), ("25-34", "mid"), ("35-44", "high"), ("45-54", "mid")]),
                     [0.25, 0.25, 0.25, 0.25])
    assert report.passed and not report.flags
    assert report.required_age_bands == 2 and report.required_income_bands == 2
    assert report.coverage["age:18-24"] and not report.coverage.get("age:55-64", False)


def test_coverage_below_the_required_bands_is_flagged():
    report = _report(_checks([("25-34", "mid")] * 4), [0.25] * 4)
    assert "coverage:age_bands_below_minimum:1<2" in report.flags
    assert "coverage:income_bands_below_minimum:1<2" in report.flags and not report.passed


def test_low_entropy_is_flagged():
    checks = _checks([("18-24", "low"), ("25-34", "mid"), ("35-44", "high")])
    report = _report(checks, [0.9, 0.05, 0.05], cap=1.0)
    assert report.diversity_entropy == pytest.approx(bias.normalised_entropy([0.9, 0.05, 0.05]))
    assert any(f.startswith("diversity:entropy_below_minimum:") for f in report.flags)


def test_segment_cap_is_enforced_not_just_reported():
    weights = [0.8, 0.1, 0.1]
    capped = bias.cap_weights(weights, 0.5)
    assert max(capped.weights) == pytest.approx(0.5) and sum(capped.weights) == pytest.approx(1.0)
    report = _report(_checks([("18-24", "low"), ("25-34", "mid"), ("35-44", "high")]), list(capped.weights))
    assert not any(f.startswith("segment_cap") for f in report.flags)
    infeasible = _report(_checks([("18-24", "low")]), [1.0], cap=0.5)
    assert any(f.startswith("segment_cap:infeasible") for f in infeasible.flags)


@pytest.mark.parametrize("source", ["prior", "grounding"])
def test_wtp_above_the_upper_range_is_flagged_with_its_source(source):
    checks = _checks([("18-24", "low"), ("25-34", "mid"), ("35-44", "high")], p90=150.0)
    report = _report(checks, [1 / 3] * 3, upper=100.0, source=source)
    assert [f for f in report.flags if f.startswith("optimism")] == [
        f"optimism:wtp_p90_above_{source}_upper_range:p{i}" for i in range(3)]
