"""Hypothesis properties: shares are probabilities, demand falls with price, splits do not matter."""

from __future__ import annotations

import numpy as np
import pytest
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


@pytest.mark.parametrize("fanout", [2, 3])
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**63), cuts=st.lists(st.integers(1, 40), max_size=5), threads=st.integers(1, 3))
def test_split_invariance_over_a_deep_sums_tree(config_factory, monkeypatch, fanout, seed, cuts, threads):
    """With a small fanout the chunk-sums tree has several levels: shards complete different
    nodes, merge completes the rest, and the bytes are still those of one whole run."""
    monkeypatch.setattr(runner, "FANOUT", fanout)
    config = config_factory(seed=seed, iterations=41 * 4, chunk_iterations=4, months=4, sample_limit=3)
    spec = convert.spec_from_proto(config)
    whole_partial = runner.run_chunks(spec, 0, spec.n_chunks, threads=1)
    assert [(c.level, c.index) for c in whole_partial.chunks] == [(4 if fanout == 3 else 6, 0)]
    whole = _result(spec, [whole_partial])
    edges = [0, *sorted(set(c for c in cuts if c < spec.n_chunks)), spec.n_chunks]
    parts = [runner.run_chunks(spec, a, b - a, threads=threads) for a, b in zip(edges, edges[1:])]
    levels = 1 + max(c.level for p in parts for c in p.chunks)
    for part in parts:  # a shard keeps at most the unfinished edges of each level
        assert len(part.chunks) <= 2 * (fanout - 1) * levels + 1
    shards = [convert.shard_from_proto(convert.shard_to_proto(p)) for p in reversed(parts)]
    assert convert.deterministic_bytes(_result(spec, shards)) == convert.deterministic_bytes(whole)


def test_a_shard_holds_a_bounded_number_of_sums(config_factory):
    spec = convert.spec_from_proto(config_factory(iterations=3000, chunk_iterations=1, months=2, customers=2, grid=2))
    partial = runner.run_chunks(spec, 5, 2990)  # 2990 chunks: nodes of 64, 4096 chunks
    assert len(partial.chunks) <= 2 * 63 * 2
    assert sum(c.iterations for c in partial.chunks) == 2990
