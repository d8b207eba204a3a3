"""Where the budget ledger and the audit trail persist: one SQLite file (WAL) under the runs root.

Kept behind `LedgerStore` so the ledger's rules (services.overwatch.ledger) never see SQL and the
file can later move onto the shared database layer. Atomicity is the store's job: `transaction()`
opens `BEGIN IMMEDIATE`, which takes SQLite's write lock before anything is read, so two
reservations (threads or processes) are serialised and each sees the other's row.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

SCHEMA = """
CREATE TABLE IF NOT EXISTS reservations (
    reservation_id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    purpose TEXT NOT NULL,
    period TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('reserved', 'committed', 'released')),
    reserved_evaluations INTEGER NOT NULL,
    reserved_tokens INTEGER NOT NULL,
    actual_evaluations INTEGER NOT NULL DEFAULT 0,
    actual_tokens INTEGER NOT NULL DEFAULT 0,
    actual_cpu_seconds REAL NOT NULL DEFAULT 0,
    run_max_evaluations INTEGER NOT NULL,
    run_max_tokens INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    expires_at REAL NOT NULL,
    settled_at TEXT NOT NULL DEFAULT '',
    UNIQUE (run_id, purpose)
);
CREATE INDEX IF NOT EXISTS reservations_held ON reservations (project_id, period, state);
-- What each project has committed per period, kept with every commit so a reservation's check
-- reads one row (plus the few reservations still held) however many runs the period has seen.
CREATE TABLE IF NOT EXISTS project_period_totals (
    project_id TEXT NOT NULL,
    period TEXT NOT NULL,
    evaluations INTEGER NOT NULL DEFAULT 0,
    tokens INTEGER NOT NULL DEFAULT 0,
    cpu_seconds REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (project_id, period)
);
CREATE TABLE IF NOT EXISTS audit_events (
    sequence INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    run_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    payload_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_run ON audit_events (run_id, sequence);
CREATE INDEX IF NOT EXISTS audit_project ON audit_events (project_id, sequence);
"""

# What a reservation counts for while it is held (reserved, not yet expired) or once committed.
_COUNTED = """
SELECT
  COALESCE(SUM(CASE WHEN state = 'committed' THEN actual_evaluations ELSE 0 END), 0),
  COALESCE(SUM(CASE WHEN state = 'committed' THEN actual_tokens ELSE 0 END), 0),
  COALESCE(SUM(CASE WHEN state = 'committed' THEN actual_cpu_seconds ELSE 0 END), 0.0),
  COALESCE(SUM(CASE WHEN state = 'reserved' AND expires_at > :now THEN reserved_evaluations ELSE 0 END), 0),
  COALESCE(SUM(CASE WHEN state = 'reserved' AND expires_at > :now THEN reserved_tokens ELSE 0 END), 0)
FROM reservations WHERE {where}
"""


@dataclass(frozen=True)
class Totals:
    committed_evaluations: int
    committed_tokens: int
    committed_cpu_seconds: float
    reserved_evaluations: int
    reserved_tokens: int

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


class LedgerTransaction:
    """The reads and writes the ledger makes inside one serialised transaction."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def reservation(self, reservation_id: str) -> dict | None:
        row = self.conn.execute("SELECT * FROM reservations WHERE reservation_id = ?", (reservation_id,)).fetchone()
        return dict(row) if row else None

    def reservation_for(self, run_id: str, purpose: str) -> dict | None:
        row = self.conn.execute(
            "SELECT * FROM reservations WHERE run_id = ? AND purpose = ?", (run_id, purpose)
        ).fetchone()
        return dict(row) if row else None

    def run_totals(self, run_id: str, now: float) -> Totals:
        row = self.conn.execute(_COUNTED.format(where="run_id = :run_id"), {"run_id": run_id, "now": now}).fetchone()
        return Totals(*row)

    def project_totals(self, project_id: str, period: str, now: float) -> Totals:
        committed = self.conn.execute(
            "SELECT evaluations, tokens, cpu_seconds FROM project_period_totals WHERE project_id = ? AND period = ?",
            (project_id, period)).fetchone() or (0, 0, 0.0)
        held = self.conn.execute(
            "SELECT COALESCE(SUM(reserved_evaluations), 0), COALESCE(SUM(reserved_tokens), 0) FROM reservations "
            "WHERE project_id = ? AND period = ? AND state = 'reserved' AND expires_at > ?",
            (project_id, period, now)).fetchone()
        return Totals(committed[0], committed[1], committed[2], held[0], held[1])

    def insert_reservation(self, row: dict) -> None:
        columns = ", ".join(row)
        self.conn.execute(f"INSERT INTO reservations ({columns}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))

    def settle(self, reservation_id: str, state: str, settled_at: str, *, evaluations: int = 0, tokens: int = 0,
               cpu_seconds: float = 0.0) -> None:
        if state == "committed":
            self.conn.execute(
                "INSERT INTO project_period_totals (project_id, period, evaluations, tokens, cpu_seconds) "
                "SELECT project_id, period, ?, ?, ? FROM reservations WHERE reservation_id = ? "
                "ON CONFLICT (project_id, period) DO UPDATE SET evaluations = evaluations + excluded.evaluations, "
                "tokens = tokens + excluded.tokens, cpu_seconds = cpu_seconds + excluded.cpu_seconds",
                (evaluations, tokens, cpu_seconds, reservation_id))
        self.conn.execute(
            "UPDATE reservations SET state = ?, settled_at = ?, actual_evaluations = ?, actual_tokens = ?, "
            "actual_cpu_seconds = ? WHERE reservation_id = ?",
            (state, settled_at, evaluations, tokens, cpu_seconds, reservation_id),
        )

    def append_audit(self, *, time: str, kind: str, actor: str, run_id: str, project_id: str, correlation_id: str,
                     payload: dict) -> int:
        cursor = self.conn.execute(
            "INSERT INTO audit_events (time, kind, actor, run_id, project_id, correlation_id, payload_json) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (time, kind, actor, run_id, project_id, correlation_id, json.dumps(payload, sort_keys=True, default=str)),
        )
        return int(cursor.lastrowid)


class LedgerStore:
    """The ledger's SQLite file; one connection per thread, every write in a serialised transaction."""

    FILE_NAME = "overwatch.db"

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connection().executescript(SCHEMA)

    @classmethod
    def under(cls, runs_dir: Path) -> "LedgerStore":
        return cls(Path(runs_dir) / cls.FILE_NAME)

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=True)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[LedgerTransaction]:
        """Serialised against every other writer (threads and processes) until it commits."""
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield LedgerTransaction(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def audit_events(self, *, run_id: str = "", project_id: str = "", kind_prefix: str = "", after: int = 0,
                     limit: int = 100) -> list[AuditRow]:
        clauses, params = ["sequence > ?"], [after]
        if run_id:
            clauses.append("run_id = ?")
            params.append(run_id)
        if project_id:
            clauses.append("project_id = ?")
            params.append(project_id)
        if kind_prefix:
            clauses.append("substr(kind, 1, ?) = ?")
            params += [len(kind_prefix), kind_prefix]
        rows = self._connection().execute(
            f"SELECT * FROM audit_events WHERE {' AND '.join(clauses)} ORDER BY sequence LIMIT ?", (*params, limit)
        ).fetchall()
        return [AuditRow(**{**{k: r[k] for k in r.keys() if k != "payload_json"}, "payload": json.loads(r["payload_json"])})
                for r in rows]

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
