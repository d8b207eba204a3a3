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
target, so a reader never sees a half-written file and a crash leaves the previous version. When a
`ledger` (the run store) is attached, each write records the file's SHA-256 and size in the
database and each read checks them, so a file truncated or edited behind SMVM's back is reported
(DATA_LOSS) instead of being served. meta.json and events.jsonl are mirrors of the database.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any, Protocol

from smvm.errors import SmvmError
from smvm.ids import check_id

from services.orchestrator import artifact_json

OUTPUT_FILES = (
    "personas.output.json",
    "competitors.output.json",
    "simulation.config.json",
    "simulation.result.json",
    "decision.output.json",
)


class ArtifactCorrupt(SmvmError):
    """A recorded artifact is missing or no longer has the digest it was written with."""

    code = "DATA_LOSS"


class ArtifactLedger(Protocol):
    """Where artifact digests are kept (the run store's database)."""

    def record_artifact(self, run_id: str, path: str, sha256: str, size: int) -> None: ...

    def artifact_digest(self, run_id: str, path: str) -> tuple[str, int] | None: ...


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


def json_bytes(obj: Any) -> bytes:
    """How every JSON artifact of a run directory is spelled: `json.dumps(obj, indent=2, default=str)`
    and a newline (artifact_json.dumps writes that text, faster)."""
    return (artifact_json.dumps(obj) + "\n").encode()


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json_bytes(obj))


class RunDirectory:
    """Paths and writes for one run; ids are checked before they touch the filesystem."""

    def __init__(self, root: Path, project_id: str, run_id: str, ledger: ArtifactLedger | None = None):
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
        self.ledger = ledger

    @property
    def outputs(self) -> Path:
        return self.path / "outputs"

    @property
    def reports(self) -> Path:
        return self.path / "reports"

    def create(self) -> None:
        self.outputs.mkdir(parents=True, exist_ok=True)
        self.reports.mkdir(parents=True, exist_ok=True)

    def remove_if_empty(self) -> None:
        """Remove the directory `create` made, unless anything was written in it since (rmdir
        refuses a directory that is not empty, so a concurrent writer's files are never lost)."""
        for folder in (self.outputs, self.reports, self.path):
            try:
                folder.rmdir()
            except OSError:
                return

    def exists(self) -> bool:
        return (self.path / "meta.json").exists()

    def write_json(self, relative: str, obj: Any) -> Path:
        return self.write_bytes(relative, json_bytes(obj))

    def write_text(self, relative: str, text: str) -> Path:
        return self.write_bytes(relative, text.encode())

    def write_json_unrecorded(self, relative: str, obj: Any) -> Path:
        """A mirror of the database (meta.json): written atomically, no digest recorded."""
        target = self.path / relative
        atomic_write_json(target, obj)
        return target

    def write_bytes(self, relative: str, data: bytes) -> Path:
        target = self.path / relative
        atomic_write_bytes(target, data)
        if self.ledger is not None:
            self.ledger.record_artifact(self.run_id, relative, hashlib.sha256(data).hexdigest(), len(data))
        return target

    def read_bytes(self, relative: str) -> bytes:
        """The file's bytes, checked against the digest recorded when it was written (if any)."""
        expected = self.ledger.artifact_digest(self.run_id, relative) if self.ledger is not None else None
        try:
            data = (self.path / relative).read_bytes()
        except FileNotFoundError:
            if expected is None:
                raise
            raise ArtifactCorrupt(f"artifact {relative} of run {self.run_id} is missing", reason="ARTIFACT_MISSING") from None
        if expected is not None:
            sha256, size = expected
            if len(data) != size or hashlib.sha256(data).hexdigest() != sha256:
                raise ArtifactCorrupt(
                    f"artifact {relative} of run {self.run_id} does not match its recorded SHA-256 "
                    f"(size {len(data)}, recorded {size})",
                    reason="ARTIFACT_TAMPERED",
                )
        return data

    def read_json(self, relative: str) -> Any:
        return json.loads(self.read_bytes(relative).decode("utf-8"))

    def has(self, relative: str) -> bool:
        return (self.path / relative).exists()

    def append_event(self, event_type: str, *, correlation_id: str, actor: str, payload: dict | None = None) -> dict:
        """Append one new event line (written whole and fsynced) and return it."""
        return self.mirror_event(new_event(self, event_type, correlation_id=correlation_id, actor=actor, payload=payload))

    def mirror_events(self, events: list[dict]) -> None:
        """Replace events.jsonl by exactly `events` (the store's copy), atomically."""
        atomic_write_bytes(self.path / "events.jsonl", b"".join((json.dumps(e, default=str) + "\n").encode() for e in events))

    def mirror_event(self, event: dict) -> dict:
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


def new_event(rundir: RunDirectory, event_type: str, *, correlation_id: str, actor: str, payload: dict | None = None) -> dict:
    """An event of the run's log: id, type, actor, correlation id, time and payload."""
    return {
        "event_id": uuid.uuid4().hex,
        "type": event_type,
        "run_id": rundir.run_id,
        "project_id": rundir.project_id,
        "time": iso(utcnow()),
        "actor": actor,
        "correlation_id": correlation_id,
        "payload": payload or {},
    }
