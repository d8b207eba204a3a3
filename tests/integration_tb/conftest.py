"""Fixtures of the TractionBuild integration tests: the double, and a mesh that calls it back."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tractionbuild_double import TractionBuildDouble  # noqa: E402

SECRET = "whsec_" + "dGVzdC1zZWNyZXQtZm9yLXRoZS1pbnRlZ3JhdGlvbi10ZXN0cw=="


@pytest.fixture
def double():
    tb = TractionBuildDouble(SECRET)
    tb.start()
    yield tb
    tb.stop()
