"""The numba kernel against the numpy oracle on the same draws, and the chunk streams."""

from __future__ import annotations

import numpy as np
import pytest

from services.simulation import convert
from services.simulation.engine import kernel, reference, runner


@pytest.mark.parametrize("response", [False, True])
@pytest.mark.parametrize("competitors,segments,features", [(0, 1, 0), (3, 2, 3), (6, 4, 5)])
def test_kernel_matches_reference(config_factory, response, competitors, segments, features):
    spec = convert.spec_from_proto(config_factory(competitors=competitors, segments=segments, features=features,
                                                  response=response, months=10, iterations=12))
    fast = kernel.simulate(spec, runner.chunk_generator(11, 2), 12)
    slow = reference.simulate(spec, runner.chunk_generator(11, 2), 12)
    names = ["market", "customers", "share", "revenue", "final_shares", "final_prices", "base_share", "demand", "wtp"]
    for name, a, b in zip(names, fast[:-1], slow[:-1]):
        assert a.shape == b.shape, name
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12, err_msg=name)
    assert fast[-1] == slow[-1] == 12 * spec.evaluations_per_iteration()
    if response and competitors:
        assert np.all(fast[5][:, 1:] < spec.off_price[1:] + 1e-12)  # competitors only cut prices


def test_chunk_generator_is_the_spawned_child():
    children = np.random.SeedSequence(99).spawn(5)
    for c in range(5):
        ours = runner.chunk_generator(99, c).random(4)
        spawned = np.random.Generator(np.random.SFC64(children[c])).random(4)
        assert np.array_equal(ours, spawned)
