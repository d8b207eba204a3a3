"""Hypothesis properties: shares are probabilities, demand falls with price, splits do not matter."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

from services.simulation import convert
from services.simulation.engine import runner

SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _result(spec, partials):
    return convert.output_to_proto(runner.merge(spec, partials))


@SETTINGS
@given(seed=st.integers(0, 2**63), competitors=st.integers(0, 5), response=st.booleans(),
       wtp_sigma=st.floats(0.0, 1.5), price=st.floats(1.0, 500.0))
def test_shares_are_probabilities_and_demand_falls(config_factory, seed, competitors, response, wtp_sigma, price):
    spec = convert.spec_from_proto(config_factory(seed=seed, competitors=competitors, response=response,
                                               wtp_sigma=wtp_sigma, price=price, iterations=20, months=6))
    result = _result(spec, [runner.run_chunks(spec, 0, spec.n_chunks)])
    shares = result.offering_shares
    assert [s.name for s in shares][-1] == "none" and len(shares) == competitors + 2
    for s in shares:
        q = s.share
        assert 0.0 <= q.p5 <= q.p10 <= q.p50 <= q.p90 <= q.p95 <= 1.0
        assert 0.0 <= q.mean <= 1.0
    assert abs(sum(s.share.mean for s in shares) - 1.0) < 1e-12
    means = [p.share.mean for p in result.demand_curve]
    assert all(b <= a + 1e-15 for a, b in zip(means, means[1:]))
    for sample in result.samples:
        d = list(sample.demand_share)
        assert all(0.0 <= x <= 1.0 for x in d)
        assert all(b <= a + 1e-15 for a, b in zip(d, d[1:]))
    if response and competitors:
        assert result.competitive_response.share_with_response <= result.competitive_response.share_without_response + 1e-12
        assert result.competitive_response.mean_price_change <= 0.0


@SETTINGS
@given(seed=st.integers(0, 2**63), cuts=st.lists(st.integers(1, 6), max_size=4), threads=st.integers(1, 3),
       response=st.booleans())
def test_split_invariance(config_factory, seed, cuts, threads, response):
    config = config_factory(seed=seed, iterations=100, chunk_iterations=14, response=response, months=8, sample_limit=30)
    spec = convert.spec_from_proto(config)
    whole = _result(spec, [runner.run_chunks(spec, 0, spec.n_chunks, threads=1)])
    bounds = sorted(set(c for c in cuts if c < spec.n_chunks))
    edges = [0, *bounds, spec.n_chunks]
    parts = [runner.run_chunks(spec, a, b - a, threads=threads) for a, b in zip(edges, edges[1:])]
    # Through the wire format, and in reverse order: merge must not care.
    shards = [convert.shard_from_proto(convert.shard_to_proto(p)) for p in reversed(parts)]
    split = _result(spec, shards)
    assert convert.deterministic_bytes(whole) == convert.deterministic_bytes(split)
    assert [s.iteration for s in split.samples] == list(range(30))
    assert split.utility_evaluations == whole.utility_evaluations


def test_same_seed_same_bytes_other_seed_differs(config_factory):
    spec = convert.spec_from_proto(config_factory(seed=5))
    runs = [_result(spec, [runner.run_chunks(spec, 0, spec.n_chunks)]) for _ in range(2)]
    assert convert.deterministic_bytes(runs[0]) == convert.deterministic_bytes(runs[1])
    other = convert.spec_from_proto(config_factory(seed=6))
    assert convert.deterministic_bytes(_result(other, [runner.run_chunks(other, 0, other.n_chunks)])) != \
        convert.deterministic_bytes(runs[0])
