"""Monte Carlo market simulation engine: numba kernel, numpy reference, chunked runner."""

from services.simulation.engine import cache

cache.install()
