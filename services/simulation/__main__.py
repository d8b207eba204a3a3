"""`python -m services.simulation`: serve the simulation stage until SIGTERM.

numba reads NUMBA_CACHE_DIR when it is first imported, so it is set from SMVM_NUMBA_CACHE_DIR
before the engine is imported.
"""

import os

from smvm.config import load_settings

os.environ.setdefault("NUMBA_CACHE_DIR", str(load_settings().numba_cache_dir.resolve()))

from smvm.server import run_service  # noqa: E402
from services.simulation.servicer import build_host  # noqa: E402

if __name__ == "__main__":
    run_service("simulation", build_host)
