"""Memoised status bodies (services/gateway/jsonview.JsonBodies): byte for byte what JSONResponse
renders, a new body for any change, bounded."""

from __future__ import annotations

from fastapi.responses import JSONResponse
from hypothesis import given, settings, strategies as st

from smvm.v1 import run_pb2
from services.gateway.jsonview import JsonBodies, message_to_json

STATES = [v.number for v in run_pb2.RunState.DESCRIPTOR.values]


def _status(**fields) -> run_pb2.RunStatus:
    status = run_pb2.RunStatus(run_id="RUN-1", validation_id="VAL-RUN-1", project_id="PROJ-1", **fields)
    status.created_at.FromJsonString("2026-11-22T10:00:00Z")
    return status


@settings(max_examples=60, deadline=None)
@given(state=st.sampled_from(STATES), progress=st.floats(0, 1), stage=st.text(max_size=20),
       results=st.dictionaries(st.sampled_from(["personas", "simulation", "analysis"]),
                               st.sampled_from(["pending", "in_progress", "completed", "failed"])))
def test_a_body_is_what_jsonresponse_renders_and_changes_with_the_message(state, progress, stage, results):
    bodies = JsonBodies()
    status = _status(state=state, progress=progress, current_stage=stage, stage_results=results)
    expected = JSONResponse(message_to_json(status)).body
    assert bodies(status) == expected
    assert bodies(status) == expected  # from the memo
    changed = run_pb2.RunStatus()
    changed.CopyFrom(status)
    changed.progress = progress / 2 + 0.25 if progress != 0.5 else 0.75
    assert bodies(changed) == JSONResponse(message_to_json(changed)).body != expected


def test_the_memo_is_bounded_and_keeps_the_recent_bodies():
    bodies = JsonBodies(size=2)
    for i in range(5):
        bodies(_status(progress=i / 10))
    assert len(bodies) == 2
