"""numpy's SFC64 stream and its standard normals, inlined into numba code.

Each chunk's random stream is `numpy.random.SFC64` seeded with the chunk's child of
`SeedSequence(seed).spawn(n_chunks)`. The kernel does not call back into numpy for every number
(passing a Generator into njit costs about 10-25 ns per normal, a function-pointer call per
uint64); it copies the bit generator's 4-word state and runs the same SFC64 step inline, then
turns words into doubles and normals with exactly numpy's algorithms:

- `next_double`: `(u64 >> 11) * 2**-53`, as `Generator.random()`;
- `standard_normal`: numpy's 256-layer ziggurat (`random_standard_normal` in numpy's
  distributions.c), with numpy's own tables (numba ships them, copied from numpy's
  ziggurat_constants.h, for its Generator support).

So the kernel's draws are bit for bit what `numpy.random.Generator(SFC64(child))` returns from
`random()` and `standard_normal()` called in the same order (tests/simulation/test_streams.py);
the numpy reference engine simply calls numpy. The state is written back after the kernel so the
Generator ends where numpy's would.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.np.random._constants import fi_double, ki_double, wi_double, ziggurat_nor_inv_r, ziggurat_nor_r

_KI = np.ascontiguousarray(ki_double, dtype=np.uint64)
_WI = np.ascontiguousarray(wi_double, dtype=np.float64)
_FI = np.ascontiguousarray(fi_double, dtype=np.float64)
_NOR_R = float(ziggurat_nor_r)
_NOR_INV_R = float(ziggurat_nor_inv_r)
_TO_DOUBLE = 1.0 / 9007199254740992.0  # 2**-53

_S3 = np.uint64(3)
_S8 = np.uint64(8)
_S11 = np.uint64(11)
_S24 = np.uint64(24)
_S40 = np.uint64(40)
_ONE = np.uint64(1)
_LOW8 = np.uint64(0xFF)
_MANTISSA = np.uint64(0x000FFFFFFFFFFFFF)


def state_of(rng: np.random.Generator) -> np.ndarray:
    """A copy of an SFC64 Generator's state words [a, b, c, counter]."""
    state = rng.bit_generator.state
    if state["bit_generator"] != "SFC64":
        raise TypeError(f"the engine's streams are SFC64, not {state['bit_generator']}")
    return np.array(state["state"]["state"], dtype=np.uint64)


def set_state(rng: np.random.Generator, words: np.ndarray) -> None:
    """Advance `rng` to where the kernel left the stream."""
    state = rng.bit_generator.state
    state["state"]["state"] = np.array(words, dtype=np.uint64)
    state["has_uint32"], state["uinteger"] = 0, 0
    rng.bit_generator.state = state


@njit(inline="always")
def _step(a, b, c, w):
    """One SFC64 step (numpy's sfc64_next) on state words held in registers: (output, new state)."""
    out = a + b + w
    return out, b ^ (b >> _S11), c + (c << _S3), ((c << _S24) | (c >> _S40)) + out, w + _ONE


@njit(inline="always")
def _to_double(word):
    return np.float64(np.int64(word >> _S11)) * _TO_DOUBLE


@njit(cache=True, nogil=True)
def fill_doubles(s, out):
    """out[:] = Generator.random(len(out)) for 1-d `out`; s (the state words) advances."""
    a, b, c, w = s[0], s[1], s[2], s[3]
    for i in range(out.shape[0]):
        word, a, b, c, w = _step(a, b, c, w)
        out[i] = _to_double(word)
    s[0], s[1], s[2], s[3] = a, b, c, w


@njit(cache=True, nogil=True)
def _normal_slow_path(a, b, c, w, idx, rabs, x):
    """The ziggurat's rare cases (0.7 %), out of line so the fast loop stays small:
    (normal, accepted, new state). Layer 0 samples the tail; other layers test the wedge."""
    if idx == 0:
        while True:
            u1, a, b, c, w = _step(a, b, c, w)
            u2, a, b, c, w = _step(a, b, c, w)
            xx = -_NOR_INV_R * np.log1p(-_to_double(u1))
            yy = -np.log1p(-_to_double(u2))
            if yy + yy > xx * xx:
                break
        return (-(_NOR_R + xx) if (rabs >> _S8) & _ONE else _NOR_R + xx), True, a, b, c, w
    u1, a, b, c, w = _step(a, b, c, w)
    return x, (_FI[idx - 1] - _FI[idx]) * _to_double(u1) + _FI[idx] < np.exp(-0.5 * x * x), a, b, c, w


@njit(cache=True, nogil=True)
def fill_normals(s, out):
    """out[:] = Generator.standard_normal(len(out)) for 1-d `out`: numpy's ziggurat.

    The state lives in registers inside the loop (kept in the array between calls it would cost a
    store and a reload per word, 3x slower). 99.3 % of normals take one word and the fast path;
    the tail and wedge cases draw more words exactly as numpy does.
    """
    a, b, c, w = s[0], s[1], s[2], s[3]
    for i in range(out.shape[0]):
        while True:
            r, a, b, c, w = _step(a, b, c, w)
            idx = np.intp(r & _LOW8)
            r >>= _S8
            rabs = (r >> _ONE) & _MANTISSA
            # rabs < 2**52: a signed conversion is exact (one instruction); the sign multiplies by
            # +-1.0 (exact) instead of a branch that would mispredict half the time.
            x = np.float64(np.int64(rabs)) * _WI[idx] * (1.0 - 2.0 * np.float64(np.int64(r & _ONE)))
            if rabs < _KI[idx]:
                break
            x, accepted, a, b, c, w = _normal_slow_path(a, b, c, w, idx, rabs, x)
            if accepted:
                break
        out[i] = x
    s[0], s[1], s[2], s[3] = a, b, c, w
