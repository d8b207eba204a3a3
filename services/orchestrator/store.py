"""The orchestrator's run records, stage outputs and events, in the store's database.

A `RunRecord` is the single source of a run's status; every change goes through `RunStore.update`,
which in ONE transaction rewrites the run's row, appends the matching event to the append-only event
store, and (optionally) records a stage's output and the outbox messages the change causes. Only
after the commit are the run directory's mirrors written (meta.json, events.jsonl), so a crash can
leave a mirror one step behind the database, never ahead; `load` re-syncs them at start-up.

With several orchestrator replicas on one PostgreSQL database, each active run is driven by the
replica holding its lease (`run_leases`): taken at creation or resume, renewed while the replica
lives, dropped when the run leaves the active states. A replica that dies leaves leases that expire,
and another replica (or the same one, restarted: the owner id is stable per host and address) adopts
the run. A replica that lost a lease gets `LeaseLost` on its next write and stops driving the run.

The runs row is a projection: `rebuild` recomputes it from the run's events alone (every event
carries the fields it changed). Stage outputs are keyed by (run, stage): a stage whose output is
committed is never called again for that run, which is what lets a restarted orchestrator resume.

Every committed change of a row takes the next number of one global sequence (`runs.change_seq`,
from the one-row `run_change_seq` counter, as the transaction's last write): commit order is seq
order, so `changes_since` lets a poller follow every replica's changes (services/orchestrator/
run_watch.py) without ever skipping one.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from smvm import correlation
from smvm.db import Database, open_database
from smvm.db.database import Transaction, database_url_for
from smvm.db.outbox import SqlOutbox, enqueue_in
from smvm.errors import AlreadyExists, FailedPrecondition, NotFound
from smvm.outbox import OutboxMessage

from services.orchestrator.idempotency import IdempotencyKey, IdempotencyKeys, KeyedAnswer
from services.orchestrator.rundir import ArtifactCorrupt, RunDirectory, atomic_write_bytes, iso, new_event, utcnow

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
MIRROR_RESYNC_RECENT = 50
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

    def to_row(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "RunRecord":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in row.items() if k in fields})

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> "RunRecord":
        fields = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in meta.items() if k in fields}
        data["state"] = meta["status"]
        return cls(**data)


class LeaseLost(FailedPrecondition):
    """Another replica drives this run now; this one must stop."""


class RunStore:
    """Run records by run_id in the database; artifacts in each run's directory."""

    def __init__(self, runs_root: Path, db: Database | None = None, *, database_url: str = "",
                 owner: str = "", lease_s: float = 30.0, idempotency_ttl_s: float = 86_400.0):
        # owner: this orchestrator replica's id; empty = no leases (a store used by tools and tests)
        self.owner = owner
        self.lease_s = lease_s
        self.idempotency = IdempotencyKeys(idempotency_ttl_s)
        self.root = Path(runs_root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.db = db if db is not None else open_database(database_url_for(database_url, self.root))
        self.outbox = SqlOutbox(self.db)
        # Progress inside a stage changes many times a second: kept in memory, not in the database.
        self._live_progress: dict[str, float] = {}
        self._lock = asyncio.Lock()
        # Told after every committed run change and every live progress step (the run watch feed).
        self.on_change: Callable[[], None] | None = None
        self.on_progress: Callable[[str, float], None] | None = None

    # ------------------------------------------------------------------ reading
    def load(self) -> list[RunRecord]:
        """Start-up: import legacy run directories, rebuild lost rows, re-sync mirrors; return active runs."""
        self._import_legacy_directories()
        with self.db.transaction() as tx:
            orphans = [r[0] for r in tx.all(
                "SELECT DISTINCT e.run_id FROM events e LEFT JOIN runs r ON r.run_id = e.run_id WHERE r.run_id IS NULL")]
        for run_id in orphans:
            log.warning("run %s has events but no status row: rebuilding it from its events", run_id)
            self.rebuild(run_id)
        interrupted = []
        with self.db.transaction() as tx:
            # A crash can leave behind only the mirrors of runs it was writing: the active ones and
            # the last ones changed. Checking those keeps start-up time independent of history.
            recent = [r[0] for r in tx.all(
                "SELECT record FROM runs ORDER BY updated_at DESC LIMIT ?", (MIRROR_RESYNC_RECENT,))]
            active = [r[0] for r in tx.all(
                "SELECT record FROM runs WHERE state IN (?, ?) ORDER BY created_at, run_id", ACTIVE)]
        seen = set()
        for row in active + recent:
            record = RunRecord.from_row(json.loads(row))
            if record.run_id in seen:
                continue
            seen.add(record.run_id)
            self._resync_mirrors(record)
            if record.state in ACTIVE:
                interrupted.append(record)
        return interrupted

    def _row(self, tx: Transaction, run_id: str, *, lock: bool = False) -> RunRecord | None:
        row = tx.one(f"SELECT record FROM runs WHERE run_id = ?{tx.for_update() if lock else ''}", (run_id,))
        return RunRecord.from_row(json.loads(row[0])) if row else None

    def _with_live(self, record: RunRecord) -> RunRecord:
        live = self._live_progress.get(record.run_id)
        if live is not None and record.state in ACTIVE:
            record.progress = max(record.progress, live)
        return record

    def find(self, run_id: str) -> RunRecord | None:
        with self.db.reading() as tx:
            record = self._row(tx, run_id)
        return self._with_live(record) if record else None

    def record_version(self, run_id: str) -> tuple[str, int] | None:
        """The stored record of a run as its exact JSON text, and the change_seq of that version
        (None when there is no such run)."""
        with self.db.reading() as tx:
            row = tx.one("SELECT record, change_seq FROM runs WHERE run_id = ?", (run_id,))
        return (row[0], int(row[1])) if row else None

    def changes_since(self, change_seq: int, limit: int = 500) -> list[tuple[int, str, str]]:
        """(change_seq, run_id, record text) of every run whose last committed change is numbered
        after `change_seq`, in sequence order, at most `limit`."""
        with self.db.reading() as tx:
            rows = tx.all("SELECT change_seq, run_id, record FROM runs WHERE change_seq > ? ORDER BY change_seq LIMIT ?",
                          (int(change_seq), int(limit)))
        return [(int(seq), run_id, text) for seq, run_id, text in rows]

    def last_change_seq(self) -> int:
        """The number of the last committed run change (0 before any)."""
        with self.db.reading() as tx:
            row = tx.one("SELECT seq FROM run_change_seq WHERE id = 1")
        return int(row[0]) if row else 0

    def live_progress(self, run_id: str) -> float | None:
        """Progress inside the current stage, when newer than the stored one (kept in memory only)."""
        return self._live_progress.get(run_id)

    def with_live(self, record: RunRecord) -> RunRecord:
        return self._with_live(record)

    def run_path(self, record: RunRecord) -> Path:
        """The run's directory, from a stored record (its ids were checked when it was created)."""
        return self.root / record.project_id / "validation" / record.run_id

    def get(self, run_id: str) -> RunRecord:
        record = self.find(run_id)
        if record is None:
            raise NotFound(f"run {run_id} not found", reason="RUN_NOT_FOUND")
        return record

    def rundir(self, run_id: str) -> RunDirectory:
        record = self.get(run_id)
        return RunDirectory(self.root, record.project_id, run_id, ledger=self)

    def __iter__(self) -> Iterator[RunRecord]:
        with self.db.reading() as tx:
            rows = tx.all("SELECT record FROM runs ORDER BY created_at, run_id")
        return iter([self._with_live(RunRecord.from_row(json.loads(r[0]))) for r in rows])

    def events(self, run_id: str) -> list[dict]:
        """The run's events in order, from the event store."""
        with self.db.reading() as tx:
            rows = tx.all(
                "SELECT event_id, type, run_id, time, actor, correlation_id, payload FROM events WHERE run_id = ? ORDER BY seq",
                (run_id,),
            )
        project = self._project_of(run_id, rows)
        return [
            {"event_id": e, "type": t, "run_id": r, "project_id": project, "time": tm, "actor": a,
             "correlation_id": c, "payload": json.loads(p)}
            for e, t, r, tm, a, c, p in rows
        ]

    @staticmethod
    def _project_of(run_id: str, rows: list[tuple]) -> str:
        for row in rows:
            payload = json.loads(row[6])
            if "record" in payload:
                return payload["record"]["project_id"]
        return ""

    def stage_output(self, run_id: str, stage: str) -> bytes | None:
        """The committed output of (run, stage), or None when the stage has not completed."""
        with self.db.reading() as tx:
            row = tx.one("SELECT output, sha256 FROM stage_outputs WHERE run_id = ? AND stage = ?", (run_id, stage))
        if row is None:
            return None
        output = bytes(row[0])
        if hashlib.sha256(output).hexdigest() != row[1]:
            raise ArtifactCorrupt(f"stored output of stage {stage} of run {run_id} is corrupt", reason="STAGE_OUTPUT_CORRUPT")
        return output

    def keyed_answer(self, key: IdempotencyKey) -> KeyedAnswer | None:
        """What an unexpired Idempotency-Key stands for, or None."""
        with self.db.reading() as tx:
            return self.idempotency.find(tx, key)

    @property
    def lock(self) -> asyncio.Lock:
        """Serialises creation so two submissions of one run_id cannot both create it."""
        return self._lock

    # ------------------------------------------------------------------ artifact ledger (RunDirectory)
    def record_artifact(self, run_id: str, path: str, sha256: str, size: int) -> None:
        with self.db.transaction() as tx:
            self._record_artifact_in(tx, run_id, path, sha256, size)

    @staticmethod
    def _record_artifact_in(tx: Transaction, run_id: str, path: str, sha256: str, size: int) -> None:
        tx.execute("DELETE FROM artifacts WHERE run_id = ? AND path = ?", (run_id, path))
        tx.execute(
            "INSERT INTO artifacts (run_id, path, sha256, size, written_at) VALUES (?, ?, ?, ?, ?)",
            (run_id, path, sha256, size, iso(utcnow())),
        )

    def artifact_digest(self, run_id: str, path: str) -> tuple[str, int] | None:
        with self.db.reading() as tx:
            row = tx.one("SELECT sha256, size FROM artifacts WHERE run_id = ? AND path = ?", (run_id, path))
        return (row[0], int(row[1])) if row else None

    # ------------------------------------------------------------------ writing
    def create(
        self, record: RunRecord, rundir: RunDirectory, *, actor: str,
        stage_outputs: dict[str, bytes] | None = None,
        outbox: Sequence[OutboxMessage] | Callable[[RunRecord], Sequence[OutboxMessage]] = (),
        idempotency_key: IdempotencyKey | None = None,
    ) -> None:
        """Insert a new run with its run.initiated event (AlreadyExists if the run_id is taken).

        `outbox` (messages, or a function of the new record as in `update`) commits in the same
        transaction: a run exists exactly when its INITIATED callback does. So does the run's
        `idempotency_key`, standing for the request's digest and the run's submit_response
        (AlreadyExists if another run took the key first).

        A directory this call created is removed again, while still empty, when the run is not
        created (another replica took the Idempotency-Key first, the database refused): a refused
        submission leaves nothing behind. One that existed before is left alone (a run_id conflict:
        it is the other run's).
        """
        rundir.ledger = self
        created = not rundir.path.exists()
        rundir.create()
        try:
            self._create_row(record, rundir, actor, stage_outputs, outbox, idempotency_key)
        except BaseException:
            if created:
                rundir.remove_if_empty()
            raise

    def _create_row(self, record: RunRecord, rundir: RunDirectory, actor: str, stage_outputs: dict[str, bytes] | None,
                    outbox: Sequence[OutboxMessage] | Callable[[RunRecord], Sequence[OutboxMessage]],
                    idempotency_key: IdempotencyKey | None) -> None:
        event = new_event(
            rundir, "run.initiated", correlation_id=record.correlation_id, actor=actor,
            payload={"status": record.state, "seed": record.seed, "source_shape": record.source_shape,
                     "record": record.to_row()},
        )
        with self.db.transaction() as tx:
            if tx.one("SELECT 1 FROM runs WHERE run_id = ?", (record.run_id,)):
                raise AlreadyExists(f"run {record.run_id} already exists", reason="RUN_ID_CONFLICT")
            self._insert_row(tx, record)
            self._insert_event(tx, event)
            if self.owner and record.state in ACTIVE:
                tx.execute("DELETE FROM run_leases WHERE run_id = ?", (record.run_id,))
                tx.execute("INSERT INTO run_leases (run_id, owner, expires_at) VALUES (?, ?, ?)",
                           (record.run_id, self.owner, time.time() + self.lease_s))
            for stage, output in (stage_outputs or {}).items():
                self._insert_stage_output(tx, record.run_id, stage, output)
            enqueue_in(tx, outbox(copy.deepcopy(record)) if callable(outbox) else outbox)
            if idempotency_key is not None:
                self.idempotency.insert(tx, idempotency_key, record.request_sha256, record.run_id,
                                        record.submit_response)
        self._changed()
        self._mirror(record, rundir, event)

    def update(
        self, run_id: str, event_type: str, *, actor: str = "orchestrator", payload: dict | None = None,
        outbox: Sequence[OutboxMessage] | Callable[[RunRecord], Sequence[OutboxMessage]] = (),
        stage_output: tuple[str, bytes] | None = None,
        guard: Callable[[RunRecord], None] | None = None, files: dict[str, bytes] | None = None, **changes: Any,
    ) -> RunRecord:
        """Apply `changes`, append `event_type`, and store `stage_output` and `outbox` messages: one transaction.

        `outbox` may be a function of the changed record (callbacks describe the state they report);
        it is called inside the transaction, so a message exists exactly when its state change does.
        `guard` sees the run as it is under the transaction's row lock, before any change: it raises to
        refuse the change (nothing is written), so a check-then-act across replicas cannot race.
        `files` (run-directory path -> bytes) are written once the guard has passed, with their digests
        recorded in this transaction: of two replicas racing, only the one that makes the change writes.
        """
        for key in changes:
            if key not in _FIELDS:
                raise AttributeError(key)
        with self.db.transaction() as tx:
            record = self._row(tx, run_id, lock=True)
            if record is None:
                raise NotFound(f"run {run_id} not found", reason="RUN_NOT_FOUND")
            if guard is not None:
                guard(copy.deepcopy(record))
            for relative, data in (files or {}).items():
                atomic_write_bytes(RunDirectory(self.root, record.project_id, run_id).path / relative, data)
                self._record_artifact_in(tx, run_id, relative, hashlib.sha256(data).hexdigest(), len(data))
            if self.owner and record.state in ACTIVE:
                lease = tx.one("SELECT owner FROM run_leases WHERE run_id = ?", (run_id,))
                if lease is not None and lease[0] != self.owner:
                    raise LeaseLost(f"run {run_id} is driven by {lease[0]}", reason="LEASE_LOST")
            changes["updated_at"] = iso(utcnow())
            if "progress" in changes:
                changes["progress"] = round(float(changes["progress"]), 6)
            for key, value in changes.items():
                setattr(record, key, value)
            rundir = RunDirectory(self.root, record.project_id, run_id, ledger=self)
            body = {"status": record.state, "current_stage": record.current_stage, "progress": round(record.progress, 4)}
            body.update(payload or {})
            body["changes"] = changes
            event = new_event(rundir, event_type, correlation_id=correlation.get() or record.correlation_id,
                              actor=actor, payload=body)
            self._insert_event(tx, event)
            if stage_output is not None:
                self._insert_stage_output(tx, run_id, *stage_output)
            enqueue_in(tx, outbox(copy.deepcopy(record)) if callable(outbox) else outbox)
            if record.state not in ACTIVE:
                tx.execute("DELETE FROM run_leases WHERE run_id = ?", (run_id,))
            # Last, so the sequence counter's row lock is held only until the commit.
            tx.execute(
                "UPDATE runs SET state = ?, updated_at = ?, record = ?, change_seq = ? WHERE run_id = ?",
                (record.state, record.updated_at, json.dumps(record.to_row()), self._next_change_seq(tx), run_id),
            )
        if record.state not in ACTIVE:
            self._live_progress.pop(run_id, None)
        self._changed()
        self._mirror(record, rundir, event)
        return self._with_live(record)

    # ------------------------------------------------------------------ leases
    def claim(self, run_id: str) -> bool:
        """Take (or keep) the lease of an active run unless a live replica holds it."""
        now = time.time()
        with self.db.transaction() as tx:
            lease = tx.one(f"SELECT owner, expires_at FROM run_leases WHERE run_id = ?{tx.for_update()}", (run_id,))
            if lease is None:
                tx.execute("INSERT INTO run_leases (run_id, owner, expires_at) VALUES (?, ?, ?)",
                           (run_id, self.owner, now + self.lease_s))
                return True
            if lease[0] == self.owner or float(lease[1]) < now:
                tx.execute("UPDATE run_leases SET owner = ?, expires_at = ? WHERE run_id = ?",
                           (self.owner, now + self.lease_s, run_id))
                return True
            return False

    def renew_leases(self) -> int:
        """Extend every lease this replica holds; return how many."""
        with self.db.transaction() as tx:
            cursor = tx.execute("UPDATE run_leases SET expires_at = ? WHERE owner = ?", (time.time() + self.lease_s, self.owner))
            return cursor.rowcount

    def release_leases(self) -> None:
        """Graceful shutdown: hand this replica's runs over at once instead of after expiry."""
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM run_leases WHERE owner = ?", (self.owner,))

    def undocumented(self, within_s: float = 7 * 86_400.0, limit: int = 200) -> list[RunRecord]:
        """Decided runs changed within `within_s` whose report documents were neither rendered nor
        given up on (no reports.* event): an orchestrator stopped before their turn in the queue."""
        cutoff = iso(utcnow() - dt.timedelta(seconds=within_s))
        with self.db.reading() as tx:
            rows = tx.all(
                "SELECT r.record FROM runs r WHERE r.state IN (?, ?) AND r.updated_at >= ? AND NOT EXISTS "
                "(SELECT 1 FROM events e WHERE e.run_id = r.run_id AND e.type LIKE ?) "
                "ORDER BY r.updated_at, r.run_id LIMIT ?",
                ("DECISION_READY", "COMPLETED", cutoff, "reports.%", int(limit)))
        return [RunRecord.from_row(json.loads(r[0])) for r in rows]

    def orphaned(self) -> list[RunRecord]:
        """Active runs whose lease has expired or that have none (their replica died)."""
        with self.db.reading() as tx:
            rows = tx.all(
                "SELECT r.record FROM runs r LEFT JOIN run_leases l ON l.run_id = r.run_id "
                "WHERE r.state IN (?, ?) AND (l.run_id IS NULL OR l.expires_at < ?) ORDER BY r.created_at, r.run_id",
                (*ACTIVE, time.time()))
        return [RunRecord.from_row(json.loads(r[0])) for r in rows]

    def set_progress(self, run_id: str, progress: float) -> None:
        """Progress inside a stage: kept in memory only (no event per tick)."""
        current = self._live_progress.get(run_id, 0.0)
        value = max(current, min(1.0, progress))
        self._live_progress[run_id] = value
        if value > current and self.on_progress is not None:
            self.on_progress(run_id, value)

    def rebuild(self, run_id: str) -> RunRecord:
        """Recompute the run's status row from its events alone, and store it."""
        record = fold_events(self.events(run_id))
        if record is None:
            raise NotFound(f"run {run_id} has no events", reason="RUN_NOT_FOUND")
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
            self._insert_row(tx, record)
        self._changed()
        return record

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _next_change_seq(tx: Transaction) -> int:
        """The next number of the global change sequence, taken inside the changing transaction (on
        PostgreSQL the counter's row stays locked until it commits, so numbers commit in order)."""
        return int(tx.one("UPDATE run_change_seq SET seq = seq + 1 WHERE id = 1 RETURNING seq")[0])

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    @classmethod
    def _insert_row(cls, tx: Transaction, record: RunRecord) -> None:
        tx.execute(
            "INSERT INTO runs (run_id, project_id, state, created_at, updated_at, record, change_seq) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (record.run_id, record.project_id, record.state, record.created_at, record.updated_at,
             json.dumps(record.to_row()), cls._next_change_seq(tx)),
        )

    @staticmethod
    def _insert_event(tx: Transaction, event: dict) -> None:
        tx.execute(
            "INSERT INTO events (event_id, run_id, type, actor, correlation_id, time, payload) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (event["event_id"], event["run_id"], event["type"], event["actor"], event["correlation_id"] or "",
             event["time"], json.dumps(event["payload"], default=str)),
        )

    @staticmethod
    def _insert_stage_output(tx: Transaction, run_id: str, stage: str, output: bytes) -> None:
        if tx.one("SELECT 1 FROM stage_outputs WHERE run_id = ? AND stage = ?", (run_id, stage)):
            raise AlreadyExists(f"stage {stage} of run {run_id} already has an output", reason="STAGE_ALREADY_COMPLETED")
        tx.execute(
            "INSERT INTO stage_outputs (run_id, stage, output, sha256, completed_at) VALUES (?, ?, ?, ?, ?)",
            (run_id, stage, bytes(output), hashlib.sha256(output).hexdigest(), iso(utcnow())),
        )

    def _mirror(self, record: RunRecord, rundir: RunDirectory, event: dict) -> None:
        """Write the run directory's mirrors after a commit (a failure here loses nothing)."""
        try:
            rundir.path.mkdir(parents=True, exist_ok=True)
            rundir.mirror_event(event)
            rundir_meta(rundir, record)
        except OSError:
            log.exception("could not mirror run %s to its directory (the database has it)", record.run_id)

    def _resync_mirrors(self, record: RunRecord) -> None:
        rundir = RunDirectory(self.root, record.project_id, record.run_id, ledger=self)
        events = self.events(record.run_id)
        try:
            if [e["event_id"] for e in rundir.events()] != [e["event_id"] for e in events]:
                rundir.path.mkdir(parents=True, exist_ok=True)
                rundir.mirror_events(events)
            rundir_meta(rundir, record)
        except (OSError, ValueError):
            log.exception("could not re-sync the mirrors of run %s", record.run_id)

    def _import_legacy_directories(self) -> None:
        """Runs written before the database (meta.json + events.jsonl only) become rows once."""
        with self.db.transaction() as tx:
            known = {r[0] for r in tx.all("SELECT run_id FROM runs")}
        for meta_path in sorted(self.root.glob("*/validation/*/meta.json")):
            if meta_path.parent.name in known:
                continue
            try:
                rundir = RunDirectory(self.root, meta_path.parent.parent.parent.name, meta_path.parent.name)
                record = RunRecord.from_meta(rundir.read_json("meta.json"))
            except Exception:  # a foreign or damaged directory must not stop the service
                log.exception("skipping unreadable run directory %s", meta_path.parent)
                continue
            event = new_event(rundir, "run.imported", correlation_id=record.correlation_id, actor="store",
                              payload={"status": record.state, "record": record.to_row()})
            with self.db.transaction() as tx:
                self._insert_row(tx, record)
                self._insert_event(tx, event)
            self._changed()
            rundir.mirror_event(event)


_FIELDS = frozenset(f.name for f in dataclasses.fields(RunRecord))


def rundir_meta(rundir: RunDirectory, record: RunRecord) -> None:
    rundir.write_json_unrecorded("meta.json", record.to_meta(str(rundir.path)))


def fold_events(events: list[dict]) -> RunRecord | None:
    """A run's record from its events alone: the initial record, then each event's changes in order."""
    record: RunRecord | None = None
    for event in events:
        payload = event.get("payload", {})
        if "record" in payload:
            record = RunRecord.from_row(payload["record"])
        elif record is not None:
            for key, value in payload.get("changes", {}).items():
                if key in _FIELDS:
                    setattr(record, key, value)
    return record


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
