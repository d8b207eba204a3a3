"""Fixtures for the ingestion tests: the example payloads and a JSON-body -> request builder."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from google.protobuf import json_format

from smvm.v1 import ingestion_service_pb2

REPO = Path(__file__).resolve().parents[2]
BUSINESS_EXAMPLE = json.loads((REPO / "examples" / "idea.json").read_text())["business_idea"]
T0_EXAMPLE = json.loads((REPO / "examples" / "idea_t0_shape.json").read_text())["idea"]


def _request(shape: str, body: dict) -> ingestion_service_pb2.NormalizeIdeaRequest:
    return json_format.ParseDict({shape: body}, ingestion_service_pb2.NormalizeIdeaRequest())


@pytest.fixture
def to_request():
    """(shape, REST-style JSON body) -> NormalizeIdeaRequest, as the gateway would build it."""
    return _request


@pytest.fixture
def business_body() -> dict:
    return copy.deepcopy(BUSINESS_EXAMPLE)


@pytest.fixture
def t0_body() -> dict:
    return copy.deepcopy(T0_EXAMPLE)
