"""The engine's building blocks against their definitions: numpy's own draws, the C library's exp,
and the compile cache's stamp."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from numba import njit

from services.simulation import convert
from services.simulation.engine import binning, cache, kernel, reference, runner, streams
from services.simulation.engine.vexp import fma, vexp


@pytest.mark.parametrize("seed,chunk", [(0, 0), (7, 3), (2**63 - 1, 12345)])
def test_kernel_draws_are_numpys_draws_bit_for_bit(seed, chunk):
    ours = runner.chunk_generator(seed, chunk)
    numpys = runner.chunk_generator(seed, chunk)
    state = streams.state_of(ours)
    normals = np.empty(1_000_000)
    streams.fill_normals(state, normals)
    expected = numpys.standard_normal(1_000_000)
    assert np.array_equal(normals, expected)
    # The sample crosses the ziggurat's rare paths: the tail (|x| > r) and the wedges.
    assert np.sum(np.abs(normals) > 3.6541528853610087) > 50
    uniforms = np.empty(1000)
    streams.fill_doubles(state, uniforms)
    assert np.array_equal(uniforms, numpys.random(1000))
    streams.set_state(ours, state)
    assert np.array_equal(ours.random(5), numpys.random(5))  # both streams at the same place


def test_kernel_and_reference_consume_the_same_numbers(config_factory):
    spec = convert.spec_from_proto(config_factory(competitors=4, features=3, response=True))
    fast, slow = runner.chunk_generator(5, 1), runner.chunk_generator(5, 1)
    kernel.simulate(spec, fast, 9)
    reference.simulate(spec, slow, 9)
    assert np.array_equal(streams.state_of(fast), streams.state_of(slow))


def test_state_of_refuses_other_bit_generators():
    with pytest.raises(TypeError):
        streams.state_of(np.random.Generator(np.random.PCG64(1)))


@njit(cache=False)
def _vexp_all(x):
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        out[i] = vexp(x[i])
    return out


@njit(cache=False)
def _fma(a, b, c):
    return fma(a, b, c)


def test_vexp_is_within_one_ulp_of_the_c_library():
    rng = np.random.default_rng(3)
    x = np.concatenate([np.linspace(-708.0, 709.0, 400_001), rng.uniform(-50, 50, 200_000),
                        rng.normal(0, 1e-3, 10_000), [0.0, -0.0, 1e-300, math.log(2), -math.log(2) / 2]])
    got = _vexp_all(x)
    want = np.array([math.exp(v) for v in x])
    ulps = np.abs(got - want) / np.spacing(want)
    assert ulps.max() <= 1.0
    assert _vexp_all(np.array([0.0]))[0] == 1.0


def test_vexp_outside_the_range():
    got = _vexp_all(np.array([-708.5, -745.0, -1e6, 709.5, 1e6]))
    assert list(got[:3]) == [0.0, 0.0, 0.0]
    assert got[3] == got[4] and abs(got[3] / math.exp(709.0) - 1.0) < 1e-15  # clamped to exp(709), finite


def test_fma_rounds_once():
    a, b, c = 1.0 + 2.0**-30, 1.0 - 2.0**-30, -1.0
    exact = Fraction(a) * Fraction(b) + Fraction(c)
    assert _fma(a, b, c) == float(exact) == -(2.0**-60)
    assert a * b + c == 0.0  # two roundings lose it


def test_compile_cache_is_stamped_with_every_engine_source(tmp_path, monkeypatch):
    locator = kernel.simulate_chunk._cache._impl.locator
    assert isinstance(locator, cache.LOCATORS)
    assert isinstance(streams.fill_normals._cache._impl.locator, cache.LOCATORS)
    assert locator.get_source_stamp() == cache.sources_digest()
    # An edit in a module the kernel inlines (not kernel.py itself) changes the stamp.
    for path in cache.ENGINE_DIR.glob("*.py"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    monkeypatch.setattr(cache, "ENGINE_DIR", tmp_path)
    before = cache.sources_digest()
    with (tmp_path / "vexp.py").open("a") as f:
        f.write("\n# edited\n")
    assert cache.sources_digest() != before


def test_histogram_bins():
    is_log = np.array([False, True, True])
    lo, hi = np.array([0.0, 1.0, 10.0]), np.array([1.0, 1000.0, 1000.0])
    values = np.array([[0.0, 0.5, 0.0], [0.99999, 1.0, 0.0], [1.0, 1000.0, 0.0], [np.nan, 31.6, 0.0], [-3.0, 1e9, 0.0]])
    counts = binning.counts(values[:, :2].copy(), np.array([5.0, 10.0, 100.0, 999.0]), is_log, lo, hi, 10).reshape(3, 10)
    assert list(counts[0]) == [3, 0, 0, 0, 0, 0, 0, 0, 0, 2]  # 0, NaN, -3 -> bin 0; 0.99999 and 1.0 -> last
    assert list(counts[1]) == [1, 1, 0, 0, 0, 1, 0, 0, 0, 2]  # 0.5 < lo; 1.0 = lo; 31.6 mid-way; 1000, 1e9
    assert list(counts[2]) == [1, 1, 0, 0, 0, 1, 0, 0, 0, 1]  # 5 < lo; 10 = lo; 100 mid-way in log; 999 last
