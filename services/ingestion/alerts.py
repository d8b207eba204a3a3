"""The guide's `quality_warning` alert for an idea whose grounding imports are of poor quality.

Ingestion decides *whether* the alert is due and what it says; delivering it (the callback outbox,
`validation.alert`) is the orchestrator's. `quality_alert(idea)` is None when no referenced import
raised quality_warning, else the alert's payload: which imports, why, and the confidence factor
downstream stages apply. Personal data never appears: reports hold only masked names and counts.
"""

from __future__ import annotations

from typing import Any

from smvm.v1 import idea_pb2

ALERT_TYPE = "quality_warning"


def quality_alert(idea: idea_pb2.Idea) -> dict[str, Any] | None:
    grounding = idea.grounding
    poor = [q for q in grounding.quality if q.quality_warning]
    if not poor:
        return None
    imports = [
        {
            "import_id": q.import_id,
            "kind": q.kind,
            "source_name": q.source_name,
            "rows_read": q.rows_read,
            "rows_accepted": q.rows_accepted,
            "quality_score": q.quality_score,
            "findings": [w for w in q.warnings if w.startswith("quality:")],
        }
        for q in poor
    ]
    kinds = sorted({q.kind for q in poor})
    return {
        "alert_type": ALERT_TYPE,
        "severity": "warning",
        "message": (f"{len(poor)} of {len(grounding.quality)} grounding import(s) have data-quality issues "
                    f"({', '.join(kinds)}); confidence is multiplied by {grounding.confidence_factor:g}"),
        "details": {"imports": imports, "confidence_factor": grounding.confidence_factor},
    }
