"""The orchestrator's run records: kept in memory, persisted as each run's meta.json.

A `RunRecord` is the single source of a run's status; every change goes through `RunStore.update`,
which rewrites meta.json atomically and appends the matching event to events.jsonl. On start-up the
store re-reads every meta.json under the runs root, so status and results survive a restart. (A
database-backed store is the durable-state issue's work; this interface is what it will implement.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from pathlib import Path
from typing import Any, Iterator

from smvm import correlation
from smvm.errors import NotFound

from services.orchestrator.rundir import RunDirectory, iso, utcnow

log = logging.getLogger(__name__)

STAGES = ("ingestion", "personas", "competitors", "simulation", "analysis", "overwatch")
# Share of overall progress each stage represents (simulation dominates the wall time).
STAGE_WEIGHTS = {
    "ingestion": 0.05,
    "personas": 0.10,
    "competitors": 0.10,
    "simulation": 0.55,
    "analysis": 0.10,
    "overwatch": 0.10,
}
TERMINAL = ("COMPLETED", "FAILED", "TIMEOUT")
ACTIVE = ("INITIATED", "RUNNING")


@dataclasses.dataclass
class RunRecord:
    run_id: str
    project_id: str
    state: str
    created_at: str
    updated_at: str
    estimated_completion: str
    request_sha256: str
    correlation_id: str
    seed: int
    source_shape: str
    initiated_by: str = ""
    callback_url: str = ""
    timeout_seconds: int = 3600
    current_stage: str = ""
    progress: float = 0.0
    stage_results: dict[str, str] = dataclasses.field(default_factory=lambda: {s: "pending" for s in STAGES})
    error: str = ""
    recommendation: str = ""
    review_verdict: str = ""
    completed_at: str = ""
    finalized_at: str = ""
    configuration: dict[str, Any] = dataclasses.field(default_factory=dict)
    submit_response: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_meta(self, run_directory: str) -> dict[str, Any]:
        meta = dataclasses.asdict(self)
        meta["status"] = meta.pop("state")
        meta["run_directory"] = run_directory
        meta["source_system"] = "tractionbuild"
        return meta

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> "RunRecord":
        fields = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in meta.items() if k in fields}
        data["state"] = meta["status"]
        return cls(**data)


class RunStore:
    """Run records by run_id, each backed by its run directory."""

    def __init__(self, runs_root: Path):
        self.root = Path(runs_root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._records: dict[str, RunRecord] = {}
        self._dirs: dict[str, RunDirectory] = {}
        self._lock = asyncio.Lock()

    def load(self) -> list[RunRecord]:
        """Re-read every run under the root; return those that were active (interrupted)."""
        interrupted = []
        for meta_path in sorted(self.root.glob("*/validation/*/meta.json")):
            try:
                rundir = RunDirectory(self.root, meta_path.parent.parent.parent.name, meta_path.parent.name)
                record = RunRecord.from_meta(rundir.read_json("meta.json"))
            except Exception:  # a foreign or damaged directory must not stop the service
                log.exception("skipping unreadable run directory %s", meta_path.parent)
                continue
            self._records[record.run_id] = record
            self._dirs[record.run_id] = rundir
            if record.state in ACTIVE:
                interrupted.append(record)
        return interrupted

    def get(self, run_id: str) -> RunRecord:
        try:
            return self._records[run_id]
        except KeyError:
            raise NotFound(f"run {run_id} not found", reason="RUN_NOT_FOUND") from None

    def find(self, run_id: str) -> RunRecord | None:
        return self._records.get(run_id)

    def rundir(self, run_id: str) -> RunDirectory:
        self.get(run_id)
        return self._dirs[run_id]

    def __iter__(self) -> Iterator[RunRecord]:
        return iter(list(self._records.values()))

    @property
    def lock(self) -> asyncio.Lock:
        """Serialises creation so two submissions of one run_id cannot both create it."""
        return self._lock

    def create(self, record: RunRecord, rundir: RunDirectory, *, actor: str) -> None:
        rundir.create()
        self._records[record.run_id] = record
        self._dirs[record.run_id] = rundir
        self._persist(record)
        rundir.append_event(
            "run.initiated",
            correlation_id=record.correlation_id,
            actor=actor,
            payload={"status": record.state, "seed": record.seed, "source_shape": record.source_shape},
        )

    def update(self, run_id: str, event_type: str, *, actor: str = "orchestrator", payload: dict | None = None, **changes: Any) -> RunRecord:
        """Apply `changes`, persist meta.json, and append `event_type` to the event log."""
        record = self.get(run_id)
        for key, value in changes.items():
            if not hasattr(record, key):
                raise AttributeError(key)
            setattr(record, key, value)
        record.updated_at = iso(utcnow())
        self._persist(record)
        body = {"status": record.state, "current_stage": record.current_stage, "progress": round(record.progress, 4)}
        body.update(payload or {})
        self._dirs[run_id].append_event(
            event_type, correlation_id=correlation.get() or record.correlation_id, actor=actor, payload=body
        )
        return record

    def set_progress(self, run_id: str, progress: float) -> None:
        """Progress inside a stage: kept in memory only (no event per tick)."""
        record = self.get(run_id)
        record.progress = max(record.progress, min(1.0, progress))

    def _persist(self, record: RunRecord) -> None:
        rundir = self._dirs[record.run_id]
        rundir.write_json("meta.json", record.to_meta(str(rundir.path)))


def progress_before(stage: str) -> float:
    """Overall progress when `stage` starts."""
    total = 0.0
    for name in STAGES:
        if name == stage:
            break
        total += STAGE_WEIGHTS[name]
    return total


def parse_time(value: str) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
