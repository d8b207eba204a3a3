"""numba's on-disk cache for the engine, invalidated when any engine source changes.

numba stamps a cached function with the content hash of its own file only. The kernel is compiled
together with what it calls from streams.py and vexp.py, so after an edit there numba would load
a stale kernel from the cache without noticing. These locators (numba's own two, for
NUMBA_CACHE_DIR and for __pycache__) stamp every function defined in this package with one
digest of all the package's sources instead. `install()` must run before the engine's modules
are imported (the package's __init__ does it): numba picks a locator when a function is decorated.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from numba.core import caching

ENGINE_DIR = Path(__file__).resolve().parent


def sources_digest() -> str:
    """sha256 over the engine's Python sources (names and bytes, in name order)."""
    digest = hashlib.sha256()
    for path in sorted(ENGINE_DIR.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


class _EngineStamp:
    @classmethod
    def from_function(cls, py_func, py_file):
        if Path(py_file).resolve().parent != ENGINE_DIR:
            return None
        return super().from_function(py_func, py_file)

    def get_source_stamp(self):
        return sources_digest()


class EngineUserProvidedCacheLocator(_EngineStamp, caching.UserProvidedCacheLocator):
    """NUMBA_CACHE_DIR (SMVM_NUMBA_CACHE_DIR), stamped with the engine's digest."""


class EngineInTreeCacheLocator(_EngineStamp, caching.InTreeCacheLocator):
    """__pycache__ next to the sources, stamped with the engine's digest."""


LOCATORS = (EngineUserProvidedCacheLocator, EngineInTreeCacheLocator)


def install() -> None:
    """Put the engine's locators first in numba's list (others' functions fall through to numba's)."""
    classes = caching.CacheImpl._locator_classes
    for cls in reversed(LOCATORS):
        if cls not in classes:
            classes.insert(0, cls)
