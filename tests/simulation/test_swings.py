"""Sensitivity swings re-simulated with common random numbers: identity at factor 1, monotone in the
driver, deterministic by seed, split-invariant, metered, validated."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from services.simulation import budget, convert
from services.simulation.engine import kernel, reference, runner, swings
from services.simulation.servicer import SimulationServicer
from smvm.errors import InvalidArgument, ResourceExhausted
from smvm.v1 import simulation_pb2, simulation_service_pb2 as pb

SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
BASS_P, BASS_Q, CHURN, COMPETITORS = (simulation_pb2.SWING_DRIVER_BASS_P, simulation_pb2.SWING_DRIVER_BASS_Q,
                                      simulation_pb2.SWING_DRIVER_CHURN, simulation_pb2.SWING_DRIVER_COMPETITOR_PRICES)


def _with_swings(config, swings):
    for driver, factor in swings:
        config.swings.add(driver=driver, factor=factor)
    return config


def _run(config, simulate=None):
    spec = convert.spec_from_proto(config)
    return spec, runner.merge(spec, [runner.run_chunks(spec, 0, spec.n_chunks, simulate=simulate)])


def _base_paths(output):
    return np.array([s.monthly_customers for s in output.samples]), np.array([s.demand_share for s in output.samples])


@pytest.mark.parametrize("response", [False, True])
def test_a_swing_at_factor_one_reproduces_the_base_run_bit_for_bit(config_factory, response):
    config = _with_swings(config_factory(iterations=50, chunk_iterations=16, sample_limit=37, response=response),
                          [(BASS_P, 1.0), (BASS_Q, 1.0), (CHURN, 1.0), (COMPETITORS, 1.0)])
    _, out = _run(config)
    customers, demand = _base_paths(out)
    churn = np.array([s.churn for s in out.samples])
    assert customers.shape == (37, 12)
    for swing in out.swings:
        assert swing.iterations == 37 and swing.first_iteration == 0
        assert swing.customers.tobytes() == customers.tobytes()
        assert swing.churn.tobytes() == churn.tobytes()
        if swing.driver == COMPETITORS:
            assert swing.demand.tobytes() == demand.tobytes()
        else:
            assert swing.demand is None  # the demand curve does not depend on Bass p, q or churn


def test_swings_on_the_numpy_reference_engine_match_its_base_run(config_factory):
    """Kernel re-runs go through the engine given (bit for bit); the recurrence-only swings use the
    kernel's recurrence on the reference's draws (equal to rounding)."""
    config = _with_swings(config_factory(iterations=40, sample_limit=40), [(CHURN, 1.0), (COMPETITORS, 1.0)])
    _, out = _run(config, reference.simulate)
    customers, demand = _base_paths(out)
    churn, competitors = out.swings
    assert competitors.customers.tobytes() == customers.tobytes() and competitors.demand.tobytes() == demand.tobytes()
    np.testing.assert_allclose(churn.customers, customers, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("driver, factor", [(BASS_P, 0.75), (BASS_Q, 1.25), (CHURN, 1.25), (CHURN, 0.5)])
def test_a_recurrence_only_swing_equals_the_whole_kernel_re_run(config_factory, driver, factor):
    """Without competitive response Bass p, q and churn enter only the adoption recurrence: re-running
    it on the base draws gives what re-running the whole kernel on the swung spec gives."""
    config = _with_swings(config_factory(iterations=40, chunk_iterations=16, sample_limit=40), [(driver, factor)])
    spec, out = _run(config)
    assert out.swings[0].utility_evaluations == 0  # nothing but the recurrence ran
    whole = swings.concatenate([swings.run_chunk(spec, 0, c, kernel.simulate) for c in range(spec.n_chunks)])
    assert whole.utility_evaluations == 40 * spec.evaluations_per_iteration()
    np.testing.assert_allclose(out.swings[0].customers, whole.customers, rtol=1e-12)
    np.testing.assert_allclose(out.swings[0].churn, whole.churn, rtol=1e-14)
    assert out.swings[0].final_share.tobytes() == whole.final_share.tobytes()
    assert not np.allclose(whole.customers, _base_paths(out)[0], rtol=1e-6)


def test_a_swing_moves_only_its_driver(config_factory):
    """Same customers and market draws: market size identical, churn scaled, demand moved only by prices."""
    config = _with_swings(config_factory(iterations=40, sample_limit=40),
                          [(CHURN, 1.3), (BASS_P, 0.7), (COMPETITORS, 1.2)])
    _, out = _run(config)
    base_churn = np.array([s.churn for s in out.samples])
    churn, bass_p, competitors = out.swings
    assert churn.churn == pytest.approx(np.minimum(base_churn * 1.3, 0.5), rel=1e-12)
    assert bass_p.churn.tobytes() == base_churn.tobytes()
    base_customers, base_demand = _base_paths(out)
    assert not np.array_equal(bass_p.customers, base_customers)
    assert np.all(competitors.demand >= base_demand - 1e-15)
    assert np.any(competitors.demand > base_demand)


@SETTINGS
@given(seed=st.integers(0, 2**63), low=st.floats(0.2, 1.5), step=st.floats(0.05, 1.5))
def test_higher_churn_never_raises_adopters(config_factory, seed, low, step):
    config = _with_swings(config_factory(seed=seed, iterations=30, sample_limit=30, months=24),
                          [(CHURN, low), (CHURN, low + step)])
    _, out = _run(config)
    less, more = out.swings
    assert np.all(more.churn >= less.churn)
    assert np.all(more.customers <= less.customers * (1 + 1e-12) + 1e-9)
    assert np.any(more.customers < less.customers)


@SETTINGS
@given(seed=st.integers(0, 2**63), low=st.floats(0.3, 2.0), step=st.floats(0.05, 1.0), competitors=st.integers(1, 5))
def test_higher_competitor_prices_never_lower_our_share_without_response(config_factory, seed, low, step, competitors):
    config = _with_swings(config_factory(seed=seed, iterations=30, sample_limit=30, competitors=competitors),
                          [(COMPETITORS, low), (COMPETITORS, low + step)])
    _, out = _run(config)
    cheap, dear = out.swings
    assert np.all(dear.final_share[:, 0] >= cheap.final_share[:, 0] - 1e-15)
    assert np.all(dear.demand >= cheap.demand - 1e-15)
    assert np.all(dear.customers >= cheap.customers * (1 - 1e-12) - 1e-9)
    assert dear.final_share[:, 0].mean() > cheap.final_share[:, 0].mean()


@SETTINGS
@given(seed=st.integers(0, 2**63), cuts=st.lists(st.integers(1, 7), max_size=3), response=st.booleans())
def test_swings_are_deterministic_by_seed_and_split_invariant(config_factory, seed, cuts, response):
    config = _with_swings(config_factory(seed=seed, iterations=100, chunk_iterations=14, sample_limit=45,
                                         response=response, months=8),
                          [(BASS_Q, 1.25), (COMPETITORS, 0.8), (CHURN, 0.75)])
    spec, whole = _run(config)
    again = _run(config)[1]
    whole_bytes = convert.deterministic_bytes(convert.output_to_proto(whole))
    assert whole_bytes == convert.deterministic_bytes(convert.output_to_proto(again))
    edges = [0, *sorted(set(c for c in cuts if c < spec.n_chunks)), spec.n_chunks]
    parts = [runner.run_chunks(spec, a, b - a, threads=2) for a, b in zip(edges, edges[1:])]
    shards = [convert.shard_from_proto(convert.shard_to_proto(p)) for p in reversed(parts)]
    split = convert.output_to_proto(runner.merge(spec, shards))
    assert convert.deterministic_bytes(split) == whole_bytes
    assert [s.iterations for s in split.swings] == [45, 45, 45]
    config.seed = seed ^ 1
    other = convert.output_to_proto(_run(config)[1])
    assert other.swings[0].monthly_customers_f64 != split.swings[0].monthly_customers_f64


@pytest.mark.parametrize("response", [False, True])
def test_only_the_sampled_chunks_are_re_run_and_every_evaluation_is_counted(config_factory, response):
    config = _with_swings(config_factory(iterations=100, chunk_iterations=16, sample_limit=20, response=response),
                          [(BASS_P, 0.75), (COMPETITORS, 1.25), (CHURN, 1.25)])
    spec, out = _run(config)
    assert spec.swing_chunks == 2  # iterations 0..19 live in chunks 0 and 1
    per_iteration = spec.evaluations_per_iteration()
    reruns = [1, 1, 1] if response else [0, 1, 0]  # without response Bass and churn re-run only the recurrence
    assert [s.utility_evaluations for s in out.swings] == [r * 32 * per_iteration for r in reruns]
    assert out.utility_evaluations == (100 + sum(reruns) * 32) * per_iteration
    assert budget.planned_utility_evaluations(config) == out.utility_evaluations == spec.planned_utility_evaluations()
    assert budget.swing_iterations(config) == 32 and budget.swing_rerun_iterations(config) == sum(reruns) * 32


def test_a_budget_that_fits_the_base_run_but_not_the_swings_is_refused_before_work(config_factory):
    config = config_factory(iterations=40, chunk_iterations=16, sample_limit=40)
    base = budget.planned_utility_evaluations(config)
    _with_swings(config, [(COMPETITORS, 1.25), (COMPETITORS, 0.75), (CHURN, 1.25)])
    config.max_utility_evaluations = base + 1  # the base run alone would fit
    servicer = SimulationServicer(max_iterations=10_000)
    with pytest.raises(ResourceExhausted) as err:
        servicer._spec(config)
    assert err.value.field == "config.max_utility_evaluations"
    assert str(3 * base) in str(err.value)


async def test_the_servicer_streams_swing_progress_and_returns_the_paths(config_factory):
    config = _with_swings(config_factory(iterations=40, chunk_iterations=16, sample_limit=40),
                          [(BASS_P, 0.75), (COMPETITORS, 1.2)])
    servicer = SimulationServicer(max_iterations=10_000)
    events = [e async for e in servicer.RunSimulation(pb.RunSimulationRequest(config=config), None)]
    progress = [e.progress for e in events[:-1]]
    assert [p.chunks_done for p in progress] == list(range(1, 7)) and progress[-1].fraction == 1.0
    assert {p.chunks_total for p in progress} == {3 + 3}  # base chunks + the competitor swing's re-runs
    result = events[-1].result
    assert [(s.swing.driver, s.swing.factor) for s in result.swings] == [(BASS_P, 0.75), (COMPETITORS, 1.2)]
    assert len(result.swings[0].monthly_customers_f64) == 8 * 40 * 12 and not result.swings[0].demand_share_f64
    assert len(result.swings[1].demand_share_f64) == 8 * 40 * 5 and len(result.swings[1].final_share_f64) == 8 * 40 * 5
    decoded = convert.swing_rows(result.swings[1], "demand_share_f64", "swings[1]")
    assert decoded.shape == (40, 5) and np.all((decoded >= 0) & (decoded <= 1))


@pytest.mark.parametrize("swing, sample_limit, competitors, field", [
    ((BASS_P, 0.0), 5, 3, "config.swings[0].factor"),
    ((BASS_P, float("nan")), 5, 3, "config.swings[0].factor"),
    ((CHURN, 11.0), 5, 3, "config.swings[0].factor"),
    ((simulation_pb2.SWING_DRIVER_UNSPECIFIED, 1.2), 5, 3, "config.swings[0].driver"),
    ((COMPETITORS, 1.2), 5, 0, "config.swings[0].driver"),
    ((BASS_Q, 1.2), 0, 3, "config.sample_limit"),
])
def test_invalid_swings_are_refused_naming_the_field(config_factory, swing, sample_limit, competitors, field):
    config = _with_swings(config_factory(sample_limit=sample_limit, competitors=competitors), [swing])
    with pytest.raises(InvalidArgument) as err:
        convert.spec_from_proto(config)
    assert err.value.field == field


def test_merge_refuses_shards_whose_swings_do_not_cover_the_samples(config_factory):
    config = _with_swings(config_factory(iterations=40, chunk_iterations=16, sample_limit=40), [(CHURN, 1.25)])
    spec = convert.spec_from_proto(config)
    first, rest = runner.run_chunks(spec, 0, 1), runner.run_chunks(spec, 1, 2)
    rest.swings = []
    with pytest.raises(InvalidArgument, match="covers 16 of 40"):
        runner.merge(spec, [first, rest])
    first_again = runner.run_chunks(spec, 0, 1)
    first_again.swings[0].factor = 1.3
    with pytest.raises(InvalidArgument) as err:
        runner.merge(spec, [first_again, runner.run_chunks(spec, 1, 2)])
    assert err.value.field == "shards[0].swings[0]"


def test_the_orchestrator_asks_for_the_swings_and_reserves_their_evaluations(config_factory):
    """The default config carries the tornado's swings; the reservation covers the kernel re-runs."""
    from services.orchestrator import pipeline, simconfig

    with_competitors = [(s.driver, s.factor) for s in simconfig.default_swings(True)]
    assert with_competitors == [(BASS_P, 0.75), (BASS_P, 1.25), (BASS_Q, 0.75), (BASS_Q, 1.25),
                                (CHURN, 1.25), (CHURN, 0.75), (COMPETITORS, 0.8), (COMPETITORS, 1.2)]
    assert all(s.driver != COMPETITORS for s in simconfig.default_swings(False))
    for response in (False, True):
        config = config_factory(iterations=600, chunk_iterations=256, sample_limit=300, response=response)
        plain = pipeline.planned_utility_evaluations(config)
        config.swings.extend(simconfig.default_swings(True))
        reruns = 8 if response else 2  # swings that re-run the kernel, each on 512 iterations (2 chunks)
        assert simconfig.swing_iterations(config) == reruns * 512
        assert pipeline.planned_utility_evaluations(config) == plain * (600 + reruns * 512) // 600
        assert budget.planned_utility_evaluations(config) == convert.spec_from_proto(config).planned_utility_evaluations()
