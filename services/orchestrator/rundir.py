"""The on-disk run directory of the integration guide, written atomically.

runs/{project_id}/validation/{run_id}/
    meta.json                  run record (status, timestamps, request digest)
    idea.input.json            the canonical, PII-masked idea and the request shape it came in
    events.jsonl               one JSON event per state change, append-only
    outputs/personas.output.json, competitors.output.json, simulation.config.json,
            simulation.result.json, decision.output.json, review.output.json,
            completion.json, finalization.json
    reports/validation_report.md, validation_summary.json

Every whole-file write goes to a temp file in the same directory, is fsynced and renamed over the
target, so a reader never sees a half-written file and a crash leaves the previous version.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

from smvm.ids import check_id

OUTPUT_FILES = (
    "personas.output.json",
    "competitors.output.json",
    "simulation.config.json",
    "simulation.result.json",
    "decision.output.json",
)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def iso(ts: dt.datetime) -> str:
    return ts.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode())


class RunDirectory:
    """Paths and writes for one run; ids are checked before they touch the filesystem."""

    def __init__(self, root: Path, project_id: str, run_id: str):
        check_id("project_id", project_id)
        check_id("run_id", run_id)
        self.root = Path(root)
        self.project_id = project_id
        self.run_id = run_id
        self.path = self.root / project_id / "validation" / run_id
        # Belt and braces: the resolved path must stay under the runs root.
        if self.root.resolve() not in self.path.resolve().parents:
            raise ValueError(f"run directory escapes the runs root: {self.path}")
        self._events_lock = threading.Lock()

    @property
    def outputs(self) -> Path:
        return self.path / "outputs"

    @property
    def reports(self) -> Path:
        return self.path / "reports"

    def create(self) -> None:
        self.outputs.mkdir(parents=True, exist_ok=True)
        self.reports.mkdir(parents=True, exist_ok=True)

    def exists(self) -> bool:
        return (self.path / "meta.json").exists()

    def write_json(self, relative: str, obj: Any) -> Path:
        target = self.path / relative
        atomic_write_json(target, obj)
        return target

    def write_text(self, relative: str, text: str) -> Path:
        target = self.path / relative
        atomic_write_bytes(target, text.encode())
        return target

    def read_json(self, relative: str) -> Any:
        with open(self.path / relative, encoding="utf-8") as fh:
            return json.load(fh)

    def has(self, relative: str) -> bool:
        return (self.path / relative).exists()

    def append_event(self, event_type: str, *, correlation_id: str, actor: str, payload: dict | None = None) -> dict:
        """Append one event line (written whole and fsynced) and return it."""
        event = {
            "event_id": uuid.uuid4().hex,
            "type": event_type,
            "run_id": self.run_id,
            "project_id": self.project_id,
            "time": iso(utcnow()),
            "actor": actor,
            "correlation_id": correlation_id,
            "payload": payload or {},
        }
        line = (json.dumps(event, default=str) + "\n").encode()
        with self._events_lock:
            fd = os.open(self.path / "events.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        return event

    def events(self) -> list[dict]:
        path = self.path / "events.jsonl"
        if not path.exists():
            return []
        with open(path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
