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
OUR_PRICE, PARITY, SEGMENT = (simulation_pb2.SWING_DRIVER_OUR_PRICE, simulation_pb2.SWING_DRIVER_FEATURE_PARITY,
                              simulation_pb2.SWING_DRIVER_SEGMENT_FOCUS)


def _with_swings(config, swings):
    for driver, factor, *segment in swings:
        config.swings.add(driver=driver, factor=factor, segment=segment[0] if segment else 0)
    return config


def _run(config, simulate=None):
    spec = convert.spec_from_proto(config)
    return spec, runner.merge(spec, [runner.run_chunks(spec, 0, spec.n_chunks, simulate=simulate)])


def _base_paths(output):
    return np.array([s.monthly_customers for s in output.samples]), np.array([s.demand_share for s in output.samples])


@pytest.mark.parametrize("response", [False, True])
def test_a_swing_at_factor_one_reproduces_the_base_run_bit_for_bit(config_factory, response):
    config = _with_swings(config_factory(iterations=50, chunk_iterations=16, sample_limit=37, response=response),
                          [(BASS_P, 1.0), (BASS_Q, 1.0), (CHURN, 1.0), (COMPETITORS, 1.0), (OUR_PRICE, 1.0)])
    _, out = _run(config)
    customers, demand = _base_paths(out)
    churn = np.array([s.churn for s in out.samples])
    final_share = np.array([s.final_share for s in out.samples])
    assert customers.shape == (37, 12) and final_share.shape == (37, 5)
    for swing in out.swings:
        assert swing.iterations == 37 and swing.first_iteration == 0
        assert swing.customers.tobytes() == customers.tobytes()
        assert swing.churn.tobytes() == churn.tobytes()
        assert swing.final_share.tobytes() == final_share.tobytes()  # the samples carry the base's final shares
        if swing.driver == COMPETITORS:
            assert swing.demand.tobytes() == demand.tobytes()
        else:
            assert swing.demand is None  # the demand curve does not depend on Bass p, q, churn or our list price


@pytest.mark.parametrize("response", [False, True])
def test_scenarios_that_change_nothing_reproduce_the_base_run_bit_for_bit(config_factory, response):
    """Feature parity when we already lead on every feature, a segment focus on a one-segment market."""
    config = _with_swings(config_factory(iterations=40, sample_limit=40, segments=1, response=response),
                          [(PARITY, 1.0), (SEGMENT, 1.0, 0)])
    config.our_offering.features[:] = [1.0] * len(config.feature_taxonomy)
    _, out = _run(config)
    customers, demand = _base_paths(out)
    for swing in out.swings:
        assert swing.customers.tobytes() == customers.tobytes() and swing.demand.tobytes() == demand.tobytes()
        assert swing.final_share.tobytes() == np.array([s.final_share for s in out.samples]).tobytes()


def test_feature_parity_raises_our_share_in_every_world(config_factory):
    """Our coverage rises to the competitors' mean where it trails; feature importances are positive, so
    every customer's utility for us rises: share and the demand curve go up in every iteration."""
    config = _with_swings(config_factory(iterations=40, sample_limit=40, response=False), [(PARITY, 1.0), (PARITY, 0.5)])
    config.our_offering.features[:] = [0.0] * len(config.feature_taxonomy)
    spec, out = _run(config)
    full, half = out.swings
    base = np.array([s.final_share for s in out.samples])
    _, demand = _base_paths(out)
    target = spec.off_features[1:].mean(axis=0)
    assert swings.swung_spec(spec, spec.swings[0]).off_features[0] == pytest.approx(target, rel=1e-15)
    assert swings.swung_spec(spec, spec.swings[1]).off_features[0] == pytest.approx(0.5 * target, rel=1e-15)
    assert np.all(half.final_share[:, 0] > base[:, 0]) and np.all(full.final_share[:, 0] > half.final_share[:, 0])
    assert np.all(full.demand > demand) and np.all(full.customers[:, -1] > half.customers[:, -1])


def _one_segment_market(config, index):
    """The config's market restricted to one segment, written as a config of its own: what a segment
    focus re-simulates (reachable customers x the segment's weight, priors x its multipliers)."""
    weights = np.array([s.weight for s in config.segments])
    weights /= weights.sum()
    churn = np.array([s.churn_monthly for s in config.segments])
    segment = config.segments[index]
    alone = simulation_pb2.SimulationConfig()
    alone.CopyFrom(config)
    del alone.swings[:], alone.segments[:]
    alone.segments.add().CopyFrom(segment)
    alone.segments[0].weight = 1.0
    alone.priors.market_size_low *= weights[index]
    alone.priors.market_size_high *= weights[index]
    alone.priors.churn_mean *= segment.churn_monthly / float(weights @ churn)
    return alone


@pytest.mark.parametrize("response", [False, True])
def test_a_segment_focus_is_the_market_of_that_segment_alone(config_factory, response):
    """Known answer: the focus swing's paths are the base run of a one-segment config holding that
    segment, its share of the reachable customers, and the priors moved by its multipliers; same seed,
    same uniforms and normals, so equal to rounding."""
    config = config_factory(iterations=40, chunk_iterations=16, sample_limit=40, segments=3, response=response)
    config.segments[1].innovation, config.segments[1].imitation, config.segments[1].churn_monthly = 1.6, 0.7, 0.05
    _with_swings(config, [(SEGMENT, 1.0, 1)])
    _, out = _run(config)
    focus = out.swings[0]
    assert focus.segment == 1 and convert.output_to_proto(out).swings[0].swing.segment == 1
    _, alone = _run(_one_segment_market(config, 1))
    np.testing.assert_allclose(focus.customers, _base_paths(alone)[0], rtol=1e-9)
    np.testing.assert_allclose(focus.demand, _base_paths(alone)[1], rtol=1e-9)
    np.testing.assert_allclose(focus.churn, [s.churn for s in alone.samples], rtol=1e-12)
    np.testing.assert_allclose(focus.final_share, [s.final_share for s in alone.samples], rtol=1e-9)
    assert not np.allclose(focus.customers, _base_paths(out)[0], rtol=1e-3)


def test_with_competitive_response_a_price_cut_is_partly_eaten_by_the_competitors(config_factory):
    """Our price -20 %, re-simulated: with competitive response the competitors re-price against the
    share we take, so our share after the cut is at most what it is without response in every world,
    and the gain in customers is smaller."""
    def run(response):
        config = _with_swings(config_factory(iterations=60, sample_limit=60, months=24, response=response),
                              [(OUR_PRICE, 0.8)])
        config.competitor_reprice_step = 0.15  # competitors regain their pre-entry share within the horizon
        _, out = _run(config)
        return out.swings[0], _base_paths(out)[0]

    (responded, base_responded), (alone, base_alone) = run(True), run(False)
    assert responded.utility_evaluations > 0 and responded.demand is None
    assert np.all(responded.final_share[:, 0] <= alone.final_share[:, 0] + 1e-15)
    gain_with = responded.customers[:, -1].mean() - base_responded[:, -1].mean()
    gain_without = alone.customers[:, -1].mean() - base_alone[:, -1].mean()
    assert 0 < gain_with < gain_without


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
                          [(BASS_Q, 1.25), (COMPETITORS, 0.8), (CHURN, 0.75), (SEGMENT, 1.0, 1)])
    spec, whole = _run(config)
    again = _run(config)[1]
    whole_bytes = convert.deterministic_bytes(convert.output_to_proto(whole))
    assert whole_bytes == convert.deterministic_bytes(convert.output_to_proto(again))
    edges = [0, *sorted(set(c for c in cuts if c < spec.n_chunks)), spec.n_chunks]
    parts = [runner.run_chunks(spec, a, b - a, threads=2) for a, b in zip(edges, edges[1:])]
    shards = [convert.shard_from_proto(convert.shard_to_proto(p)) for p in reversed(parts)]
    split = convert.output_to_proto(runner.merge(spec, shards))
    assert convert.deterministic_bytes(split) == whole_bytes
    assert [s.iterations for s in split.swings] == [45, 45, 45, 45]
    config.seed = seed ^ 1
    other = convert.output_to_proto(_run(config)[1])
    assert other.swings[0].monthly_customers_f64 != split.swings[0].monthly_customers_f64


@pytest.mark.parametrize("response", [False, True])
def test_only_the_sampled_chunks_are_re_run_and_every_evaluation_is_counted(config_factory, response):
    config = _with_swings(config_factory(iterations=100, chunk_iterations=16, sample_limit=20, response=response),
                          [(BASS_P, 0.75), (COMPETITORS, 1.25), (CHURN, 1.25), (OUR_PRICE, 0.8), (PARITY, 1.0),
                           (SEGMENT, 1.0, 1)])
    spec, out = _run(config)
    assert spec.swing_chunks == 2  # iterations 0..19 live in chunks 0 and 1
    per_iteration = spec.evaluations_per_iteration()
    # Without response Bass and churn re-run only the recurrence; prices and the scenarios re-run the kernel.
    reruns = [1] * 6 if response else [0, 1, 0, 1, 1, 1]
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


@pytest.mark.parametrize("swing, sample_limit, competitors, price, field", [  # price: our list price
    ((BASS_P, 0.0), 5, 3, 30.0, "config.swings[0].factor"),
    ((BASS_P, float("nan")), 5, 3, 30.0, "config.swings[0].factor"),
    ((CHURN, 11.0), 5, 3, 30.0, "config.swings[0].factor"),
    ((simulation_pb2.SWING_DRIVER_UNSPECIFIED, 1.2), 5, 3, 30.0, "config.swings[0].driver"),
    ((COMPETITORS, 1.2), 5, 0, 30.0, "config.swings[0].driver"),
    ((BASS_Q, 1.2), 0, 3, 30.0, "config.sample_limit"),
    ((OUR_PRICE, 0.8), 5, 3, 0.0, "config.swings[0].driver"),
    ((PARITY, 1.0), 5, 0, 30.0, "config.swings[0].driver"),
    ((PARITY, 1.5), 5, 3, 30.0, "config.swings[0].factor"),
    ((SEGMENT, 0.5, 1), 5, 3, 30.0, "config.swings[0].factor"),
    ((SEGMENT, 1.0, 2), 5, 3, 30.0, "config.swings[0].segment"),
    ((SEGMENT, 1.0, -1), 5, 3, 30.0, "config.swings[0].segment"),
    ((CHURN, 1.2, 1), 5, 3, 30.0, "config.swings[0].segment"),
])
def test_invalid_swings_are_refused_naming_the_field(config_factory, swing, sample_limit, competitors, price, field):
    config = _with_swings(config_factory(sample_limit=sample_limit, competitors=competitors), [swing])
    config.our_offering.monthly_price_usd = price
    with pytest.raises(InvalidArgument) as err:
        convert.spec_from_proto(config)
    assert err.value.field == field


def test_a_segment_focus_on_a_segment_without_weight_is_refused(config_factory):
    config = _with_swings(config_factory(segments=2), [(SEGMENT, 1.0, 0)])
    config.segments[0].weight = 0.0
    with pytest.raises(InvalidArgument) as err:
        convert.spec_from_proto(config)
    assert err.value.field == "config.swings[0].segment"


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
    """The default config carries the tornado's swings and the pivots' scenarios; the reservation
    covers the kernel re-runs."""
    from services.orchestrator import pipeline, simconfig

    tornado = [(BASS_P, 0.75), (BASS_P, 1.25), (BASS_Q, 0.75), (BASS_Q, 1.25), (CHURN, 1.25), (CHURN, 0.75),
               (COMPETITORS, 0.8), (COMPETITORS, 1.2)]
    assert [(s.driver, s.factor) for s in simconfig.tornado_swings(True)] == tornado
    assert [(s.driver, s.factor) for s in simconfig.tornado_swings(True, True)] == tornado + [(OUR_PRICE, 0.8), (OUR_PRICE, 1.2)]
    assert all(s.driver != COMPETITORS for s in simconfig.tornado_swings(False, True))
    for response in (False, True):
        config = config_factory(iterations=600, chunk_iterations=256, sample_limit=300, response=response)
        config.our_offering.features[:] = [0.0] * len(config.feature_taxonomy)  # we trail on every feature
        plain = pipeline.planned_utility_evaluations(config)
        config.swings.extend(simconfig.default_swings(config))
        asked = [(s.driver, s.factor, s.segment) for s in config.swings]
        # Segment 1 (WTP median 40) accepts the $30 price more often than segment 0 (median 25).
        assert asked[-2:] == [(PARITY, 1.0, 0), (SEGMENT, 1.0, 1)]
        # Swings that re-run the kernel, each on 512 iterations (2 chunks): competitor prices, the two
        # scenarios, and with response every swing, our price's two included.
        reruns = 12 if response else 4
        assert simconfig.swing_iterations(config) == reruns * 512
        assert pipeline.planned_utility_evaluations(config) == plain * (600 + reruns * 512) // 600
        assert budget.planned_utility_evaluations(config) == convert.spec_from_proto(config).planned_utility_evaluations()


def test_the_orchestrator_asks_for_scenarios_only_where_they_can_differ(config_factory):
    from services.orchestrator import simconfig

    leader = config_factory(segments=1)
    leader.our_offering.features[:] = [1.0] * len(leader.feature_taxonomy)  # no gap, one segment
    assert simconfig.scenario_swings(leader) == []
    config = config_factory(segments=3, price=30.0)
    for segment, (median, sigma) in zip(config.segments, [(25.0, 0.4), (40.0, 1.5), (40.0, 0.2)]):
        segment.wtp_median_usd, segment.wtp_sigma = median, sigma
    assert simconfig.focus_segment(config) == 2  # P(WTP >= 30) is highest where the spread is smallest
    config.our_offering.monthly_price_usd = 100.0
    assert simconfig.focus_segment(config) == 1  # far above every median: the widest spread reaches it
