"""Budget: the pure count equals what the engine does, refusal before work; validation names fields."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from smvm.errors import Cancelled, InvalidArgument, ResourceExhausted
from services.simulation import budget, convert
from services.simulation.engine import runner


@pytest.mark.parametrize("competitors,response,months", [(0, False, 5), (0, True, 5), (4, False, 7), (4, True, 7), (2, True, 1)])
def test_utility_evaluations_equal_planned(config_factory, competitors, response, months):
    config = config_factory(competitors=competitors, response=response, months=months, iterations=37)
    spec = convert.spec_from_proto(config)
    result = convert.output_to_proto(runner.merge(spec, [runner.run_chunks(spec, 0, spec.n_chunks)]))
    planned = budget.planned_utility_evaluations(config)
    assert result.utility_evaluations == planned == spec.planned_utility_evaluations()
    per_customer = 1 + competitors + 5 + ((months - 1) * competitors if response else 0)
    assert planned == 37 * 16 * per_customer


def test_budget_module_imports_no_numpy():
    code = "import sys, services.simulation.budget; sys.exit('numpy' in sys.modules or 'numba' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=str(__import__("pathlib").Path(__file__).parents[2])).returncode == 0


def test_budget_refused_before_any_work(config_factory, monkeypatch):
    config = config_factory()
    planned = budget.planned_utility_evaluations(config)
    config.max_utility_evaluations = planned - 1
    spec = convert.spec_from_proto(config)
    with pytest.raises(ResourceExhausted):
        spec.check_budget()
    from services.simulation import servicer

    def no_work(*args, **kwargs):
        raise AssertionError("the engine ran despite the budget")

    monkeypatch.setattr(servicer.runner, "run_chunks", no_work)
    with pytest.raises(ResourceExhausted):
        servicer.SimulationServicer(max_iterations=10**6)._spec(config)
    config.max_utility_evaluations = planned
    convert.spec_from_proto(config).check_budget()  # exactly at the budget is allowed


def _mutate(config, path, value):
    target = config
    parts = path.split(".")
    for part in parts[:-1]:
        if "[" in part:
            name, index = part[:-1].split("[")
            target = getattr(target, name)[int(index)]
        else:
            target = getattr(target, part)
    last = parts[-1]
    if "[" in last:
        name, index = last[:-1].split("[")
        getattr(target, name)[int(index)] = value
    elif isinstance(value, list):
        del getattr(target, last)[:]
        getattr(target, last).extend(value)
    else:
        setattr(target, last, value)


@pytest.mark.parametrize("path,value,field", [
    ("iterations", 0, "config.iterations"),
    ("months", 0, "config.months"),
    ("our_offering.monthly_price_usd", -1.0, "config.our_offering.monthly_price_usd"),
    ("our_offering.monthly_price_usd", math.nan, "config.our_offering.monthly_price_usd"),
    ("competitors[1].features[0]", math.inf, "config.competitors[1].features[0]"),
    ("competitors[0].features", [0.5], "config.competitors[0].features"),
    ("segments[1].weight", -0.5, "config.segments[1].weight"),
    ("segments[0].wtp_median_usd", 0.0, "config.segments[0].wtp_median_usd"),
    ("segments[1].feature_importance[2]", math.nan, "config.segments[1].feature_importance[2]"),
    ("priors.market_size_high", math.nan, "config.priors.market_size_high"),
    ("priors.bass_p_mean", 0.0, "config.priors.bass_p_mean"),
    ("priors.churn_mean", 0.9, "config.priors.churn_mean"),
    ("price_grid", [10.0, 5.0], "config.price_grid"),
    ("price_grid", [], "config.price_grid"),
    ("price_grid[0]", math.nan, "config.price_grid[0]"),
    ("competitor_reprice_step", 1.5, "config.competitor_reprice_step"),
    ("max_utility_evaluations", -1, "config.max_utility_evaluations"),
])
def test_invalid_config_names_the_field(config_factory, path, value, field):
    config = config_factory()
    _mutate(config, path, value)
    with pytest.raises(InvalidArgument) as error:
        convert.spec_from_proto(config)
    assert error.value.field == field


def test_empty_segments_and_missing_offering(config_factory):
    config = config_factory()
    del config.segments[:]
    with pytest.raises(InvalidArgument) as error:
        convert.spec_from_proto(config)
    assert error.value.field == "config.segments"
    config = config_factory()
    config.ClearField("our_offering")
    with pytest.raises(InvalidArgument) as error:
        convert.spec_from_proto(config)
    assert error.value.field == "config.our_offering"


def test_progress_and_stop_between_chunks(config_factory):
    spec = convert.spec_from_proto(config_factory(iterations=64, chunk_iterations=8))
    seen = []
    partial = runner.run_chunks(spec, 0, spec.n_chunks, on_progress=lambda *a: seen.append(a), threads=2)
    assert [s[0] for s in seen] == list(range(1, 9)) and all(s[1] == 8 for s in seen)
    assert seen[-1][2] == partial.utility_evaluations
    calls = []

    def stop_after_two():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        runner.run_chunks(spec, 0, spec.n_chunks, should_stop=stop_after_two, threads=1)
    assert len(calls) == 3  # checked before each chunk, stopped before the third


def test_merge_refuses_missing_or_duplicate_chunks(config_factory):
    spec = convert.spec_from_proto(config_factory(iterations=48, chunk_iterations=16))
    first = runner.run_chunks(spec, 0, 1)
    rest = runner.run_chunks(spec, 1, 2)
    with pytest.raises(InvalidArgument):
        runner.merge(spec, [rest])
    with pytest.raises(InvalidArgument):
        runner.merge(spec, [first, first, rest])
    other = convert.spec_from_proto(config_factory(iterations=48, chunk_iterations=16, months=5))
    with pytest.raises(InvalidArgument) as error:
        runner.merge(other, [first, rest])
    assert error.value.field == "shards[0].layout"


def _numeric_fields(config) -> list[str]:
    """Every float field of a config built by make_config, as the dotted path the errors use."""
    offering = ["monthly_price_usd", "brand"]
    segment = ["weight", "wtp_median_usd", "wtp_sigma", "price_sensitivity", "brand_affinity", "innovation",
               "imitation", "churn_monthly"]
    paths = [f"our_offering.{f}" for f in offering]
    paths += [f"our_offering.features[{i}]" for i in range(len(config.our_offering.features))]
    for c, competitor in enumerate(config.competitors):
        paths += [f"competitors[{c}].{f}" for f in offering]
        paths += [f"competitors[{c}].features[{i}]" for i in range(len(competitor.features))]
    for s, seg in enumerate(config.segments):
        paths += [f"segments[{s}].{f}" for f in segment]
        paths += [f"segments[{s}].feature_importance[{i}]" for i in range(len(seg.feature_importance))]
    paths += [f"priors.{f.name}" for f in config.priors.DESCRIPTOR.fields]
    paths += [f"price_grid[{g}]" for g in range(len(config.price_grid))]
    return paths + ["competitor_reprice_step"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), bad=st.sampled_from([math.nan, math.inf, -math.inf]),
       competitors=st.integers(0, 3), segments=st.integers(1, 3), features=st.integers(1, 3))
def test_any_non_finite_number_is_refused_naming_its_field(config_factory, data, bad, competitors, segments, features):
    config = config_factory(competitors=competitors, segments=segments, features=features)
    path = data.draw(st.sampled_from(_numeric_fields(config)))
    _mutate(config, path, bad)
    with pytest.raises(InvalidArgument) as error:
        convert.spec_from_proto(config)
    assert error.value.field == f"config.{path}"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), price=st.floats(max_value=-1e-300, allow_nan=False, allow_infinity=False),
       competitors=st.integers(0, 4))
def test_any_negative_price_is_refused_naming_its_field(config_factory, data, price, competitors):
    config = config_factory(competitors=competitors)
    paths = ["our_offering.monthly_price_usd"] + [f"competitors[{c}].monthly_price_usd" for c in range(competitors)]
    path = data.draw(st.sampled_from(paths))
    _mutate(config, path, price)
    with pytest.raises(InvalidArgument) as error:
        convert.spec_from_proto(config)
    assert error.value.field == f"config.{path}"
    config = config_factory(competitors=competitors)
    _mutate(config, f"price_grid[{data.draw(st.integers(0, len(config.price_grid) - 1))}]", price)
    with pytest.raises(InvalidArgument) as error:
        convert.spec_from_proto(config)
    assert error.value.field == "config.price_grid"
