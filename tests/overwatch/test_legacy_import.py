"""An overwatch.db written before migration 5 is imported into the store's database once, at start-up
or by the command, on SQLite and on a real PostgreSQL server: nobody's spend history is lost."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from smvm.errors import ResourceExhausted

from services.overwatch.budget import BudgetDefaults
from services.overwatch.ledger import Amounts, Ledger
from services.overwatch.ledger_store import LedgerStore
from services.overwatch.legacy_import import import_legacy_ledger
from services.overwatch.policy import load_policy

REPO = Path(__file__).resolve().parents[2]
T0 = 1_795_000_000.0  # 2026-11-18: the legacy rows' period is 2026-11

# The file's layout as services/overwatch/ledger_store.py wrote it before migration 5.
LEGACY_SCHEMA = """
CREATE TABLE reservations (
    reservation_id TEXT PRIMARY KEY, run_id TEXT NOT NULL, project_id TEXT NOT NULL, purpose TEXT NOT NULL,
    period TEXT NOT NULL, state TEXT NOT NULL CHECK (state IN ('reserved', 'committed', 'released')),
    reserved_evaluations INTEGER NOT NULL, reserved_tokens INTEGER NOT NULL,
    actual_evaluations INTEGER NOT NULL DEFAULT 0, actual_tokens INTEGER NOT NULL DEFAULT 0,
    actual_cpu_seconds REAL NOT NULL DEFAULT 0, run_max_evaluations INTEGER NOT NULL, run_max_tokens INTEGER NOT NULL,
    created_at TEXT NOT NULL, expires_at REAL NOT NULL, settled_at TEXT NOT NULL DEFAULT '', UNIQUE (run_id, purpose)
);
CREATE TABLE project_period_totals (
    project_id TEXT NOT NULL, period TEXT NOT NULL, evaluations INTEGER NOT NULL DEFAULT 0,
    tokens INTEGER NOT NULL DEFAULT 0, cpu_seconds REAL NOT NULL DEFAULT 0, PRIMARY KEY (project_id, period)
);
CREATE TABLE audit_events (
    sequence INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL, kind TEXT NOT NULL, actor TEXT NOT NULL,
    run_id TEXT NOT NULL, project_id TEXT NOT NULL, correlation_id TEXT NOT NULL, payload_json TEXT NOT NULL
);
"""


def write_legacy_file(path: Path) -> Path:
    """PROJ-OLD spent 6 000 evaluations (committed, 3.5 CPU s) and holds 1 500 more in period 2026-11."""
    conn = sqlite3.connect(path)
    conn.executescript("PRAGMA journal_mode=WAL;" + LEGACY_SCHEMA)
    rows = [
        ("RSV-old-1", "RUN-OLD-1", "PROJ-OLD", "simulation", "2026-11", "committed", 6_500, 0, 6_000, 0, 3.5,
         10_000, 100, "2026-11-17T09:00:00.000Z", T0 - 3_600, "2026-11-17T09:05:00.000Z"),
        ("RSV-old-2", "RUN-OLD-2", "PROJ-OLD", "simulation", "2026-11", "reserved", 1_500, 0, 0, 0, 0.0,
         10_000, 100, "2026-11-18T00:00:00.000Z", T0 + 3_600, ""),
        ("RSV-old-3", "RUN-OLD-3", "PROJ-OLD", "simulation", "2026-11", "released", 900, 0, 0, 0, 0.0,
         10_000, 100, "2026-11-16T00:00:00.000Z", T0 - 90_000, "2026-11-16T00:01:00.000Z"),
    ]
    conn.executemany(f"INSERT INTO reservations VALUES ({', '.join('?' * 16)})", rows)
    conn.execute("INSERT INTO project_period_totals VALUES ('PROJ-OLD', '2026-11', 6000, 0, 3.5)")
    for kind, run_id in (("budget.reserved", "RUN-OLD-1"), ("budget.committed", "RUN-OLD-1"),
                         ("budget.released", "RUN-OLD-3"), ("access.denied", "")):
        conn.execute("INSERT INTO audit_events (time, kind, actor, run_id, project_id, correlation_id, payload_json) "
                     "VALUES (?, ?, 'orchestrator', ?, 'PROJ-OLD', 'cid-old', ?)",
                     ("2026-11-17T09:00:00.000Z", kind, run_id, json.dumps({"note": kind})))
    conn.commit()
    conn.close()
    return path


def _ledger(store: LedgerStore) -> Ledger:
    policy = load_policy({"budget": {"project": {"max_utility_evaluations": 10_000, "period": "month"}}})
    return Ledger(store, BudgetDefaults(10_000, 100), policy, clock=lambda: T0)


def test_start_up_imports_the_legacy_file_once_and_its_spend_still_counts(database_url, runs_dir):
    legacy = write_legacy_file(runs_dir / "overwatch.db")
    ledger = _ledger(LedgerStore.under(runs_dir, database_url))
    _, usage = ledger.usage(project_id="PROJ-OLD")
    assert usage.committed == Amounts(6_000, 0, 3.5) and usage.reserved.utility_evaluations == 1_500
    run_usage, _ = ledger.usage(run_id="RUN-OLD-1")
    assert run_usage.committed.utility_evaluations == 6_000
    with pytest.raises(ResourceExhausted) as err:  # 6 000 spent + 1 500 held + 2 501 > 10 000
        ledger.reserve(run_id="RUN-NEW", project_id="PROJ-OLD", requested=Amounts(2_501))
    assert "7500 already spent or held" in err.value.message
    trail = ledger.events(project_id="PROJ-OLD")
    assert [e.kind for e in trail] == ["budget.reserved", "budget.committed", "budget.released", "access.denied",
                                       "budget.refused"]
    assert [e.payload.get("legacy_sequence") for e in trail[:4]] == [1, 2, 3, 4]
    assert trail[1].payload["note"] == "budget.committed" and trail[1].correlation_id == "cid-old"
    assert not legacy.exists() and (runs_dir / "overwatch.db.imported").exists()
    ledger.store.close()

    # The same file back in place (a restored backup, a second replica's copy): nothing counted twice.
    shutil.copy(runs_dir / "overwatch.db.imported", legacy)
    again = _ledger(LedgerStore.under(runs_dir, database_url))
    assert again.usage(project_id="PROJ-OLD")[1].committed == Amounts(6_000, 0, 3.5)
    assert len(again.events(project_id="PROJ-OLD")) == 5
    again.store.close()


def test_imported_totals_add_to_what_the_database_already_holds(database_url, tmp_path):
    store = LedgerStore(database_url)
    ledger = _ledger(store)
    held = ledger.reserve(run_id="RUN-NEW", project_id="PROJ-OLD", requested=Amounts(1_000))
    ledger.commit(held.reservation_id, Amounts(1_000, 0, 0.5))
    report = import_legacy_ledger(store, write_legacy_file(tmp_path / "overwatch.db"), rename=False)
    assert (report.reservations, report.period_totals, report.audit_events, report.already_imported) == (3, 1, 4, False)
    assert ledger.usage(project_id="PROJ-OLD")[1].committed == Amounts(7_000, 0, 4.0)
    assert import_legacy_ledger(store, tmp_path / "overwatch.db", rename=False).already_imported
    assert ledger.usage(project_id="PROJ-OLD")[1].committed == Amounts(7_000, 0, 4.0)
    store.close()


def test_replicas_starting_together_import_the_file_once(database_url, tmp_path):
    legacy = write_legacy_file(tmp_path / "overwatch.db")
    stores = [LedgerStore(database_url) for _ in range(4)]
    barrier = threading.Barrier(4)

    def start(store: LedgerStore) -> bool:
        barrier.wait()
        return import_legacy_ledger(store, legacy, rename=False).already_imported

    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(start, stores))
    assert sorted(outcomes) == [False, True, True, True]
    assert _ledger(stores[0]).usage(project_id="PROJ-OLD")[1].committed == Amounts(6_000, 0, 3.5)
    for store in stores:
        store.close()


def test_the_import_command_reads_the_database_url_from_the_environment(database_url, tmp_path):
    (tmp_path / "old-volume").mkdir()
    legacy = write_legacy_file(tmp_path / "old-volume" / "overwatch.db")
    env = dict(os.environ, SMVM_DATABASE_URL=database_url, SMVM_RUNS_DIR=str(tmp_path / "runs"), SMVM_PROFILE="test")
    done = subprocess.run([sys.executable, "-m", "services.overwatch.legacy_import", str(legacy)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert (report["reservations"], report["audit_events"], report["already_imported"]) == (3, 4, False)
    assert (tmp_path / "old-volume" / "overwatch.db.imported").exists() and not legacy.exists()
    store = LedgerStore(database_url)
    assert _ledger(store).usage(project_id="PROJ-OLD")[1].committed == Amounts(6_000, 0, 3.5)
    store.close()
    missing = subprocess.run([sys.executable, "-m", "services.overwatch.legacy_import", str(tmp_path / "nope.db")],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "path:" in missing.stderr
