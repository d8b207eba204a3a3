"""Fixtures of the persona tests: the OpenAI-compatible provider double (tests/personas/openai_double.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from openai_double import OpenAIDouble  # noqa: E402


@pytest.fixture(scope="module")
def provider():
    with OpenAIDouble() as double:
        yield double
