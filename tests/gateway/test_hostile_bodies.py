"""Hostile request bodies and ids: each is a 400 naming what is wrong, never a 5xx or a dropped
connection, and none reaches the orchestrator."""

from __future__ import annotations

import pytest

from smvm.config import Settings

ERROR_KEYS = {"error", "message", "details", "run_id"}
VALID = '{"project_id": "P1", "business_idea": {"title": "t", "description": "d"}'


@pytest.mark.parametrize(
    "name, body, field",
    [
        ("deep array", "[" * 100_000 + "]" * 100_000, "body"),
        ("deep object", '{"a":' * 50_000 + "1" + "}" * 50_000, "body"),
        ("deep value in a field", VALID + ', "metadata": ' + '{"a":' * 5_000 + "1" + "}" * 5_000 + "}", "body"),
        ("integer of 5000 digits", '{"project_id": "P1", "business_idea": {"title": "t", "estimated_tam": ' + "9" * 5000 + "}}", "body"),
        ("lone surrogate", '{"project_id": "P1", "business_idea": {"title": "\\ud800"}}', "business_idea.title"),
        ("NUL in an id", '{"project_id": "P1\\u0000", "business_idea": {"title": "t", "description": "d"}}', "project_id"),
        ("invalid UTF-8", b'{"project_id": "P1", "business_idea": {"title": "\xff\xfe"}}', "body"),
    ],
)
async def test_hostile_bodies_are_400_naming_the_field(make_client, upstream, name, body, field):
    content = body if isinstance(body, bytes) else body.encode()
    # Under the real default size limit (1 MiB), so the body itself is judged, not its size.
    client = make_client(Settings(profile="test", api_tokens="gateway-test-token", max_request_bytes=1_048_576))
    assert len(content) < 1_048_576
    response = await client.post("/api/v1/validation/runs", content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, (name, response.status_code, response.text[:300])
    answer = response.json()
    assert set(answer) == ERROR_KEYS and answer["error"] == "INVALID_ARGUMENT"
    assert answer["details"]["field"] == field, (name, answer)
    assert upstream.fake.calls == []


@pytest.mark.parametrize("path_id", ["RUN%00x", "A" * 5000, "%F0%9F%98%80", "..", "%2e%2e"])
async def test_hostile_path_ids_are_refused_before_any_call(client, upstream, path_id):
    response = await client.get(f"/api/v1/validation/{path_id}/status")
    assert response.status_code in (400, 404), (path_id, response.status_code)
    assert set(response.json()) == ERROR_KEYS
    assert upstream.fake.calls == []
