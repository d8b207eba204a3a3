"""Monte Carlo market simulation engine: numba kernel, numpy reference, chunked runner."""
