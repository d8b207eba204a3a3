"""The bodies SMVM sends TractionBuild, shaped so the guide's handler and gate check read them as is.

Update (`POST {callback_url}/validation/update`): the guide's callback payload (validation_id,
status, progress, current_stage, estimated_completion, stage_results) plus the fields its webhook
handler reads (timestamp, step_name, and on DECISION_READY / COMPLETED `decision` with
recommendation, confidence and critical_success_factors). `status` is the run state in capitals
(INITIATED, RUNNING, DECISION_READY, COMPLETED, FAILED, TIMEOUT) because the handler compares it to
"DECISION_READY" and the gate check to "COMPLETED" / "FAILED". `sequence` increases with every
update of a run, so a receiver can ignore an update that arrives after a newer one.

Alert (`POST {callback_url}/validation/alert`): alert_type is one of ALERT_TYPES.
Results (`POST {tractionbuild}/api/v1/projects/{project_id}/validation-results`): the guide's
persistence payload, `files` read from the run directory.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from smvm.ids import validation_id
from smvm.outbox import OutboxMessage

ALERT_TYPES = ("quality_warning", "risk_escalation", "timeline_slip", "resource_constraint")
UPDATE_KIND, ALERT_KIND, RESULTS_KIND = "validation.update", "validation.alert", "validation.results"
# States after which TractionBuild must look at the run by hand.
MANUAL_REVIEW_STATES = ("TIMEOUT", "INCOMPLETE")

# The guide's result files (key -> path in the run directory).
RESULT_FILES = {
    "decision_output": "outputs/decision.output.json",
    "validation_report": "reports/validation_report.md",
    "simulation_results": "outputs/simulation.result.json",
    "personas_output": "outputs/personas.output.json",
    "competitors_output": "outputs/competitors.output.json",
    "run_metadata": "meta.json",
    "events_log": "events.jsonl",
}


def utc_iso(ts: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() if ts is None else ts)) + "Z"


def new_event_id() -> str:
    return "evt_" + uuid.uuid4().hex


def decision_summary(decision_doc: dict[str, Any]) -> dict[str, Any]:
    """What the gate check needs from decision.output.json, and a little context."""
    return {
        "recommendation": decision_doc["recommendation"],
        "confidence": decision_doc["confidence"],
        "critical_success_factors": list(decision_doc.get("critical_success_factors", [])),
        "next_steps": list(decision_doc.get("next_steps", [])),
        "composite_score": decision_doc.get("composite_score"),
        "gate_decision": decision_doc.get("gate_decision", ""),
        "review_verdict": decision_doc.get("review", {}).get("verdict", ""),
        "released": decision_doc.get("released", True),
    }


def update_payload(record, *, step_name: str = "", decision: dict | None = None,
                   extra: dict | None = None, now: float | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "event_type": UPDATE_KIND,
        "run_id": record.run_id,
        "validation_id": validation_id(record.run_id),
        "project_id": record.project_id,
        "status": record.state,
        "progress": round(record.progress, 4),
        "current_stage": record.current_stage,
        "step_name": step_name,
        "stage_results": dict(record.stage_results),
        "estimated_completion": record.estimated_completion,
        "timestamp": utc_iso(now),
        "sequence": time.time_ns(),
        "correlation_id": record.correlation_id,
        "manual_review_required": record.state in MANUAL_REVIEW_STATES,
    }
    if record.error:
        payload["error"] = record.error
    if decision is not None:
        payload["decision"] = decision
    payload.update(extra or {})
    return payload


def alert_payload(record, alert_type: str, severity: str, message: str, details: dict | None = None,
                  now: float | None = None) -> dict[str, Any]:
    if alert_type not in ALERT_TYPES:
        raise ValueError(f"unknown alert type {alert_type!r}")
    return {
        "event_type": ALERT_KIND,
        "alert_type": alert_type,
        "severity": severity,
        "run_id": record.run_id,
        "validation_id": validation_id(record.run_id),
        "project_id": record.project_id,
        "status": record.state,
        "message": message,
        "details": details or {},
        "timestamp": utc_iso(now),
        "correlation_id": record.correlation_id,
        "manual_review_required": record.state in MANUAL_REVIEW_STATES,
    }


def results_payload(project_id: str, run_id: str, run_dir: Path, now: float | None = None) -> dict[str, Any]:
    """The guide's persist_validation_results payload: every result file that exists."""
    files: dict[str, Any] = {}
    for key, relative in RESULT_FILES.items():
        path = run_dir / relative
        if not path.exists():
            continue
        text = path.read_text(encoding="utf-8")
        if relative.endswith(".json"):
            files[key] = json.loads(text)
        else:
            files[key] = text
    return {"project_id": project_id, "run_id": run_id, "timestamp": utc_iso(now), "files": files}


def message(kind: str, run_id: str, url: str, payload: dict[str, Any], *, event_id: str | None = None,
            now: float | None = None) -> OutboxMessage:
    created = time.time() if now is None else now
    return OutboxMessage(event_id=event_id or new_event_id(), run_id=run_id, kind=kind, url=url, payload=payload,
                         created_at=created, next_attempt_at=created)
