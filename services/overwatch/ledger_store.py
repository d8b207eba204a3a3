"""Where the budget ledger and the audit trail persist: the store's database (smvm.db), SQLite or PostgreSQL.

Kept behind `LedgerStore` so the ledger's rules (services.overwatch.ledger) never see SQL. The tables
(reservations, project_period_totals, audit_events) are migration 5 of smvm/db/migrations.py; the
database is the one every other service uses (`SMVM_DATABASE_URL`, or `smvm.db` in SMVM_RUNS_DIR), so
any number of overwatch replicas share one ledger.

Atomicity is the store's job. On SQLite every transaction is `BEGIN IMMEDIATE` (smvm.db.Database):
one writer at a time, across threads and processes. On PostgreSQL a reservation, commit or release
first calls `lock_budget`, which locks the project-period totals row (created if missing, then
`SELECT ... FOR UPDATE`) and takes a transaction-scoped advisory lock keyed by the run: two replicas
reserving for one project period (or one run) queue, and the second reads what the first wrote.
Locks are always taken in one order - reservation row, project period, run - so they cannot deadlock.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from smvm.db import Database, Transaction, open_database
from smvm.db.database import POSTGRESQL, database_url_for

RESERVATION_COLUMNS = (
    "reservation_id", "run_id", "project_id", "purpose", "period", "state", "reserved_evaluations", "reserved_tokens",
    "actual_evaluations", "actual_tokens", "actual_cpu_seconds", "run_max_evaluations", "run_max_tokens",
    "created_at", "expires_at", "settled_at",
)
AUDIT_COLUMNS = ("seq", "time", "kind", "actor", "run_id", "project_id", "correlation_id", "payload_json")

# What a run's reservations count for while held (reserved, not yet expired) or once committed.
_RUN_COUNTED = (
    "SELECT "
    "COALESCE(SUM(CASE WHEN state = 'committed' THEN actual_evaluations ELSE 0 END), 0), "
    "COALESCE(SUM(CASE WHEN state = 'committed' THEN actual_tokens ELSE 0 END), 0), "
    "COALESCE(SUM(CASE WHEN state = 'committed' THEN actual_cpu_seconds ELSE 0 END), 0), "
    "COALESCE(SUM(CASE WHEN state = 'reserved' AND expires_at > ? THEN reserved_evaluations ELSE 0 END), 0), "
    "COALESCE(SUM(CASE WHEN state = 'reserved' AND expires_at > ? THEN reserved_tokens ELSE 0 END), 0) "
    "FROM reservations WHERE run_id = ?"
)


@dataclass(frozen=True)
class Totals:
    committed_evaluations: int
    committed_tokens: int
    committed_cpu_seconds: float
    reserved_evaluations: int
    reserved_tokens: int

    @classmethod
    def of(cls, row) -> "Totals":
        """PostgreSQL sums BIGINTs as NUMERIC (Decimal): normalise to int / float."""
        return cls(int(row[0]), int(row[1]), float(row[2]), int(row[3]), int(row[4]))

    @property
    def evaluations(self) -> int:
        return self.committed_evaluations + self.reserved_evaluations

    @property
    def tokens(self) -> int:
        return self.committed_tokens + self.reserved_tokens


@dataclass(frozen=True)
class AuditRow:
    sequence: int
    time: str
    kind: str
    actor: str
    run_id: str
    project_id: str
    correlation_id: str
    payload: dict

    @classmethod
    def of(cls, row) -> "AuditRow":
        return cls(int(row[0]), *row[1:7], json.loads(row[7]))


def advisory_key(text: str) -> int:
    """A stable signed 64-bit key for pg_advisory_xact_lock (Python's hash() differs per process)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True)


class LedgerTransaction:
    """The reads and writes the ledger makes inside one transaction of the store's database."""

    def __init__(self, tx: Transaction):
        self.tx = tx

    def lock_budget(self, project_id: str, period: str, run_id: str) -> None:
        """Serialise every write to this project period and this run until the transaction ends.

        SQLite's write transaction already excludes every other writer; PostgreSQL needs the row
        lock (replicas reserving for one project period) and the run's advisory lock (one run's
        reservations in different projects or periods, which share the run ceiling)."""
        if self.tx.dialect != POSTGRESQL:
            return
        self.tx.execute(
            "INSERT INTO project_period_totals (project_id, period) VALUES (?, ?) ON CONFLICT (project_id, period) DO NOTHING",
            (project_id, period))
        self.tx.execute(
            "SELECT evaluations FROM project_period_totals WHERE project_id = ? AND period = ? FOR UPDATE",
            (project_id, period))
        self.tx.execute("SELECT pg_advisory_xact_lock(?)", (advisory_key(f"smvm.ledger.run:{run_id}"),))

    def _reservation(self, where: str, params: tuple, lock: bool) -> dict | None:
        row = self.tx.one(f"SELECT {', '.join(RESERVATION_COLUMNS)} FROM reservations WHERE {where}"
                          f"{self.tx.for_update() if lock else ''}", params)
        return dict(zip(RESERVATION_COLUMNS, row)) if row else None

    def reservation(self, reservation_id: str, *, lock: bool = False) -> dict | None:
        """lock: hold the row (PostgreSQL) so that two replicas settling it queue."""
        return self._reservation("reservation_id = ?", (reservation_id,), lock)

    def reservation_for(self, run_id: str, purpose: str) -> dict | None:
        return self._reservation("run_id = ? AND purpose = ?", (run_id, purpose), False)

    def run_totals(self, run_id: str, now: float) -> Totals:
        return Totals.of(self.tx.one(_RUN_COUNTED, (now, now, run_id)))

    def run_ceilings(self, run_id: str) -> tuple[int, int] | None:
        """The run's ceilings as its latest reservation recorded them (None: the run reserved nothing)."""
        row = self.tx.one("SELECT run_max_evaluations, run_max_tokens FROM reservations WHERE run_id = ? "
                          "ORDER BY created_at DESC, reservation_id LIMIT 1", (run_id,))
        return (int(row[0]), int(row[1])) if row else None

    def project_totals(self, project_id: str, period: str, now: float) -> Totals:
        """Committed (one totals row) and held (the few live reservations), in ONE statement so that
        PostgreSQL reads both from one snapshot even where no lock is held (usage reports)."""
        return Totals.of(self.tx.one(
            "SELECT COALESCE(t.evaluations, 0), COALESCE(t.tokens, 0), COALESCE(t.cpu_seconds, 0), h.evaluations, "
            "h.tokens FROM (SELECT COALESCE(SUM(reserved_evaluations), 0) AS evaluations, "
            "COALESCE(SUM(reserved_tokens), 0) AS tokens FROM reservations "
            "WHERE project_id = ? AND period = ? AND state = 'reserved' AND expires_at > ?) h "
            "LEFT JOIN project_period_totals t ON t.project_id = ? AND t.period = ?",
            (project_id, period, now, project_id, period)))

    def insert_reservation(self, row: dict) -> None:
        row = {"actual_evaluations": 0, "actual_tokens": 0, "actual_cpu_seconds": 0.0, "settled_at": "", **row}
        self.tx.execute(f"INSERT INTO reservations ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                        tuple(row.values()))

    def settle(self, reservation_id: str, state: str, settled_at: str, *, evaluations: int = 0, tokens: int = 0,
               cpu_seconds: float = 0.0) -> None:
        if state == "committed":
            self.tx.execute(
                "INSERT INTO project_period_totals (project_id, period, evaluations, tokens, cpu_seconds) "
                "SELECT project_id, period, ?, ?, ? FROM reservations WHERE reservation_id = ? "
                "ON CONFLICT (project_id, period) DO UPDATE SET "
                "evaluations = project_period_totals.evaluations + excluded.evaluations, "
                "tokens = project_period_totals.tokens + excluded.tokens, "
                "cpu_seconds = project_period_totals.cpu_seconds + excluded.cpu_seconds",
                (evaluations, tokens, float(cpu_seconds), reservation_id))
        self.tx.execute(
            "UPDATE reservations SET state = ?, settled_at = ?, actual_evaluations = ?, actual_tokens = ?, "
            "actual_cpu_seconds = ? WHERE reservation_id = ?",
            (state, settled_at, evaluations, tokens, float(cpu_seconds), reservation_id),
        )

    def append_audit(self, *, time: str, kind: str, actor: str, run_id: str, project_id: str, correlation_id: str,
                     payload: dict) -> int:
        row = self.tx.one(
            "INSERT INTO audit_events (time, kind, actor, run_id, project_id, correlation_id, payload_json) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING seq",
            (time, kind, actor, run_id, project_id, correlation_id, json.dumps(payload, sort_keys=True, default=str)),
        )
        return int(row[0])


class LedgerStore:
    """The ledger's tables in the store's database; every write in one transaction."""

    LEGACY_FILE_NAME = "overwatch.db"  # where versions before migration 5 kept the ledger

    def __init__(self, db: Database | str):
        self.db = open_database(db) if isinstance(db, str) else db

    @classmethod
    def under(cls, runs_dir: Path, database_url: str = "") -> "LedgerStore":
        """The store the orchestrator uses (SMVM_DATABASE_URL, or smvm.db in runs_dir); a legacy
        `overwatch.db` beside it is imported once, so no spend history is lost by the upgrade."""
        from services.overwatch.legacy_import import import_legacy_ledger

        store = cls(database_url_for(database_url, Path(runs_dir)))
        legacy = Path(runs_dir) / cls.LEGACY_FILE_NAME
        if legacy.exists():
            import_legacy_ledger(store, legacy)
        return store

    @contextlib.contextmanager
    def transaction(self) -> Iterator[LedgerTransaction]:
        """A write transaction (SQLite: the single writer; PostgreSQL: call lock_budget before reading)."""
        with self.db.transaction() as tx:
            yield LedgerTransaction(tx)

    @contextlib.contextmanager
    def reading(self) -> Iterator[LedgerTransaction]:
        """A read-only snapshot that never queues behind writers on SQLite."""
        with self.db.reading() as tx:
            yield LedgerTransaction(tx)

    def audit_events(self, *, run_id: str = "", project_id: str = "", kind_prefix: str = "", after: int = 0,
                     limit: int = 100) -> list[AuditRow]:
        clauses, params = ["seq > ?"], [after]
        if run_id:
            clauses.append("run_id = ?")
            params.append(run_id)
        if project_id:
            clauses.append("project_id = ?")
            params.append(project_id)
        if kind_prefix:
            clauses.append("substr(kind, 1, ?) = ?")
            params += [len(kind_prefix), kind_prefix]
        with self.db.reading() as tx:
            rows = tx.all(f"SELECT {', '.join(AUDIT_COLUMNS)} FROM audit_events WHERE {' AND '.join(clauses)} "
                          "ORDER BY seq LIMIT ?", (*params, limit))
        return [AuditRow.of(r) for r in rows]

    def close(self) -> None:
        self.db.close()
