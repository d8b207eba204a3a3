"""Bring an `overwatch.db` written before migration 5 into the store's database, once.

Earlier versions kept the ledger in its own SQLite file, `$SMVM_RUNS_DIR/overwatch.db`. Its
reservations, project-period totals and audit events are copied in ONE transaction of the store,
together with a `ledger_imports` row keyed by a fingerprint of the file's content: a second start,
another replica racing this one, or a copy of the file elsewhere finds the fingerprint and imports
nothing. The file is then renamed `overwatch.db.imported` so later starts need not read it.

Audit events get new sequence numbers (the store's sequence is shared with events written since),
in their original order; the old number is kept in the payload as `legacy_sequence`. Totals are
added to whatever the project period already holds in the store.

    python -m services.overwatch.legacy_import /old-pvc/overwatch.db   # uses SMVM_DATABASE_URL
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from smvm.db.database import database_url_for
from smvm.errors import AlreadyExists

from services.overwatch.ledger_store import RESERVATION_COLUMNS, LedgerStore

log = logging.getLogger(__name__)

IMPORTED_SUFFIX = ".imported"
_LEGACY_AUDIT_COLUMNS = ("sequence", "time", "kind", "actor", "run_id", "project_id", "correlation_id", "payload_json")


@dataclass(frozen=True)
class ImportReport:
    fingerprint: str
    reservations: int
    period_totals: int
    audit_events: int
    already_imported: bool


def _read_legacy(path: Path) -> tuple[list[tuple], list[tuple], list[tuple]]:
    """Every row of the three tables, in a stable order (read-only: the file is not changed)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        reservations = conn.execute(
            f"SELECT {', '.join(RESERVATION_COLUMNS)} FROM reservations ORDER BY reservation_id").fetchall() \
            if "reservations" in tables else []
        totals = conn.execute(
            "SELECT project_id, period, evaluations, tokens, cpu_seconds FROM project_period_totals "
            "ORDER BY project_id, period").fetchall() if "project_period_totals" in tables else []
        audit = conn.execute(
            f"SELECT {', '.join(_LEGACY_AUDIT_COLUMNS)} FROM audit_events ORDER BY sequence").fetchall() \
            if "audit_events" in tables else []
    finally:
        conn.close()
    return reservations, totals, audit


def fingerprint(reservations: list[tuple], totals: list[tuple], audit: list[tuple]) -> str:
    """What the file says, not how its pages lie (a checkpointed WAL changes the bytes, not this)."""
    digest = hashlib.sha256()
    for table in (reservations, totals, audit):
        digest.update(json.dumps(table, default=str).encode())
        digest.update(b"\x00")
    return digest.hexdigest()


def import_legacy_ledger(store: LedgerStore, path: Path, *, rename: bool = True) -> ImportReport:
    """Copy the legacy file's rows into the store unless this content was imported before."""
    path = Path(path)
    reservations, totals, audit = _read_legacy(path)
    key = fingerprint(reservations, totals, audit)
    already = False
    try:
        with store.transaction() as ledger_tx:
            tx = ledger_tx.tx
            # The marker goes in first: on PostgreSQL a replica importing the same file at the
            # same moment waits on this key and then fails with a conflict, importing nothing.
            if tx.one("SELECT 1 FROM ledger_imports WHERE fingerprint = ?", (key,)):
                raise AlreadyExists(f"{path} was imported before", reason="LEDGER_ALREADY_IMPORTED")
            tx.execute("INSERT INTO ledger_imports (fingerprint, source, reservations, audit_events, imported_at) "
                       "VALUES (?, ?, ?, ?, ?)",
                       (key, str(path.resolve()), len(reservations), len(audit),
                        dt.datetime.now(dt.timezone.utc).isoformat()))
            for row in reservations:
                tx.execute(f"INSERT INTO reservations ({', '.join(RESERVATION_COLUMNS)}) "
                           f"VALUES ({', '.join('?' * len(RESERVATION_COLUMNS))}) "
                           "ON CONFLICT DO NOTHING", row)
            for project_id, period, evaluations, tokens, cpu_seconds in totals:
                tx.execute(
                    "INSERT INTO project_period_totals (project_id, period, evaluations, tokens, cpu_seconds) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (project_id, period) DO UPDATE SET "
                    "evaluations = project_period_totals.evaluations + excluded.evaluations, "
                    "tokens = project_period_totals.tokens + excluded.tokens, "
                    "cpu_seconds = project_period_totals.cpu_seconds + excluded.cpu_seconds",
                    (project_id, period, int(evaluations), int(tokens), float(cpu_seconds)))
            for sequence, time, kind, actor, run_id, project_id, correlation_id, payload_json in audit:
                payload = _payload(payload_json)
                payload["legacy_sequence"] = sequence
                ledger_tx.append_audit(time=time, kind=kind, actor=actor, run_id=run_id, project_id=project_id,
                                       correlation_id=correlation_id, payload=payload)
    except AlreadyExists:
        already = True
    report = ImportReport(key, len(reservations), len(totals), len(audit), already)
    if already:
        log.info("legacy ledger %s was imported before (fingerprint %s)", path, key[:12])
    else:
        log.warning("imported legacy ledger %s: %d reservations, %d project periods, %d audit events", path,
                    report.reservations, report.period_totals, report.audit_events)
    if rename:
        _set_aside(path)
    return report


def _payload(text: str) -> dict:
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return {"legacy_payload": text}
    return value if isinstance(value, dict) else {"legacy_payload": value}


def _set_aside(path: Path) -> None:
    """Rename the file (and its WAL / shared-memory files) so later starts do not read it again."""
    for suffix in ("", "-wal", "-shm"):
        part = path.with_name(path.name + suffix)
        if part.exists():
            try:
                part.rename(part.with_name(path.name + IMPORTED_SUFFIX + suffix))
            except OSError:  # a read-only volume: the fingerprint already prevents a second import
                log.warning("could not rename %s; it stays, and will not be imported again", part)


def main(argv: list[str] | None = None) -> int:
    from smvm.config import load_settings

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", type=Path, help="the legacy overwatch.db")
    parser.add_argument("--keep", action="store_true", help="leave the file where it is (default: rename it)")
    args = parser.parse_args(argv)
    if not args.path.is_file():
        parser.error(f"path: {args.path} is not a file")
    settings = load_settings()
    store = LedgerStore(database_url_for(settings.database_url, settings.runs_dir))
    try:
        report = import_legacy_ledger(store, args.path, rename=not args.keep)
    finally:
        store.close()
    print(json.dumps(report.__dict__))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
