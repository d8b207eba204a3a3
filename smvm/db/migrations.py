"""Versioned schema migrations, applied in order at start-up by every process that opens the store.

Each migration runs in its own transaction together with the row that records it in
`schema_migrations`, so a crash mid-way leaves the schema at the previous version. On PostgreSQL an
advisory lock makes concurrent replicas migrate one at a time (the others then find nothing to do).
Append new migrations at the end; never edit one that has shipped.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from smvm.db.database import POSTGRESQL, SQLITE, Database

# Dialect spellings used in the schema text below.
_TYPES = {
    SQLITE: {"{serial}": "INTEGER PRIMARY KEY AUTOINCREMENT", "{blob}": "BLOB", "{float}": "REAL", "{bigint}": "INTEGER"},
    POSTGRESQL: {"{serial}": "BIGSERIAL PRIMARY KEY", "{blob}": "BYTEA", "{float}": "DOUBLE PRECISION", "{bigint}": "BIGINT"},
}
_MIGRATION_LOCK_KEY = 0x534D564D  # "SMVM"


@dataclasses.dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]  # portable SQL with {serial}/{blob}/{float}/{bigint} placeholders
    sqlite_only: tuple[str, ...] = ()
    postgresql_only: tuple[str, ...] = ()

    def sql_for(self, dialect: str) -> list[str]:
        extra = self.sqlite_only if dialect == SQLITE else self.postgresql_only
        out = []
        for text in self.statements + extra:
            for token, spelled in _TYPES[dialect].items():
                text = text.replace(token, spelled)
            out.append(text)
        return out


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "runs, events, stage outputs, artifacts, outbox",
        (
            # The current state of each run: a projection of its events (see eventlog.py).
            """CREATE TABLE runs (
                run_id TEXT PRIMARY KEY,
                project_id TEXT NOT NULL,
                state TEXT NOT NULL,
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL,
                record TEXT NOT NULL
            )""",
            "CREATE INDEX runs_by_project ON runs (project_id, created_at)",
            "CREATE INDEX runs_by_state ON runs (state)",
            # Append-only event store, ordered per run by seq.
            """CREATE TABLE events (
                seq {serial},
                event_id TEXT NOT NULL UNIQUE,
                run_id TEXT NOT NULL,
                type TEXT NOT NULL,
                actor TEXT NOT NULL,
                correlation_id TEXT NOT NULL,
                time TEXT NOT NULL,
                payload TEXT NOT NULL
            )""",
            "CREATE INDEX events_by_run ON events (run_id, seq)",
            # Each completed stage's response (serialised protobuf), keyed by (run, stage): a stage
            # whose output is here is never called again for that run.
            """CREATE TABLE stage_outputs (
                run_id TEXT NOT NULL,
                stage TEXT NOT NULL,
                output {blob} NOT NULL,
                sha256 TEXT NOT NULL,
                completed_at TEXT NOT NULL,
                PRIMARY KEY (run_id, stage)
            )""",
            # Files in the run directory and the digest they had when written.
            """CREATE TABLE artifacts (
                run_id TEXT NOT NULL,
                path TEXT NOT NULL,
                sha256 TEXT NOT NULL,
                size {bigint} NOT NULL,
                written_at TEXT NOT NULL,
                PRIMARY KEY (run_id, path)
            )""",
            # The transactional outbox (smvm/outbox.py).
            """CREATE TABLE outbox (
                event_id TEXT PRIMARY KEY,
                run_id TEXT NOT NULL,
                kind TEXT NOT NULL,
                url TEXT NOT NULL,
                payload TEXT NOT NULL,
                created_at {float} NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                next_attempt_at {float} NOT NULL,
                state TEXT NOT NULL,
                last_error TEXT NOT NULL DEFAULT '',
                delivered_at {float},
                response TEXT NOT NULL DEFAULT ''
            )""",
            "CREATE INDEX outbox_due ON outbox (state, next_attempt_at)",
            "CREATE INDEX outbox_by_run ON outbox (run_id, created_at)",
        ),
        sqlite_only=(
            """CREATE TRIGGER events_no_update BEFORE UPDATE ON events
               BEGIN SELECT RAISE(ABORT, 'events are append-only'); END""",
            """CREATE TRIGGER events_no_delete BEFORE DELETE ON events
               BEGIN SELECT RAISE(ABORT, 'events are append-only'); END""",
        ),
        postgresql_only=(
            """CREATE FUNCTION smvm_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN RAISE EXCEPTION 'events are append-only'; END $$""",
            """CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
               FOR EACH ROW EXECUTE FUNCTION smvm_events_append_only()""",
        ),
    ),
    Migration(
        2,
        "memory graph: nodes, links, learned runs",
        (
            # kind: project | idea | persona | competitor | decision (also the retention data class).
            """CREATE TABLE memory_nodes (
                node_id TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                project_id TEXT NOT NULL,
                run_id TEXT NOT NULL,
                domain TEXT NOT NULL,
                label TEXT NOT NULL,
                data TEXT NOT NULL,
                first_seen TEXT NOT NULL,
                last_seen TEXT NOT NULL
            )""",
            "CREATE INDEX memory_nodes_by_kind ON memory_nodes (kind, domain)",
            "CREATE INDEX memory_nodes_by_project ON memory_nodes (project_id, kind)",
            "CREATE INDEX memory_nodes_by_age ON memory_nodes (kind, last_seen)",
            """CREATE TABLE memory_edges (
                src TEXT NOT NULL,
                dst TEXT NOT NULL,
                kind TEXT NOT NULL,
                run_id TEXT NOT NULL,
                created_at TEXT NOT NULL,
                PRIMARY KEY (src, dst, kind, run_id)
            )""",
            "CREATE INDEX memory_edges_by_dst ON memory_edges (dst, kind)",
            "CREATE TABLE memory_learned_runs (run_id TEXT PRIMARY KEY, learned_at TEXT NOT NULL)",
        ),
    ),
    Migration(
        3,
        "run leases: which orchestrator replica drives an active run",
        (
            """CREATE TABLE run_leases (
                run_id TEXT PRIMARY KEY,
                owner TEXT NOT NULL,
                expires_at {float} NOT NULL
            )""",
            "CREATE INDEX run_leases_by_owner ON run_leases (owner)",
        ),
    ),
    Migration(
        4,
        "webhook circuit breakers: consecutive failures per callback host",
        (
            # Kept with the outbox so that a restarted orchestrator (or another replica) does not
            # start a host that is down with a closed breaker and spend messages' retries on it.
            """CREATE TABLE webhook_breakers (
                host TEXT PRIMARY KEY,
                failures INTEGER NOT NULL,
                opened_at {float},
                updated_at {float} NOT NULL
            )""",
        ),
    ),
    Migration(
        5,
        "overwatch ledger and audit trail; run events in the audit trail",
        (
            # Budget reservations (services/overwatch/ledger.py): held, then committed or released.
            """CREATE TABLE reservations (
                reservation_id TEXT PRIMARY KEY,
                run_id TEXT NOT NULL,
                project_id TEXT NOT NULL,
                purpose TEXT NOT NULL,
                period TEXT NOT NULL,
                state TEXT NOT NULL CHECK (state IN ('reserved', 'committed', 'released')),
                reserved_evaluations {bigint} NOT NULL,
                reserved_tokens {bigint} NOT NULL,
                actual_evaluations {bigint} NOT NULL DEFAULT 0,
                actual_tokens {bigint} NOT NULL DEFAULT 0,
                actual_cpu_seconds {float} NOT NULL DEFAULT 0,
                run_max_evaluations {bigint} NOT NULL,
                run_max_tokens {bigint} NOT NULL,
                created_at TEXT NOT NULL,
                expires_at {float} NOT NULL,
                settled_at TEXT NOT NULL DEFAULT '',
                UNIQUE (run_id, purpose)
            )""",
            "CREATE INDEX reservations_held ON reservations (project_id, period, state)",
            # What each project has committed per period, kept with every commit so that a
            # reservation reads one row (plus the few reservations still held); on PostgreSQL this
            # row is also the lock that orders reservations of one project period across replicas.
            """CREATE TABLE project_period_totals (
                project_id TEXT NOT NULL,
                period TEXT NOT NULL,
                evaluations {bigint} NOT NULL DEFAULT 0,
                tokens {bigint} NOT NULL DEFAULT 0,
                cpu_seconds {float} NOT NULL DEFAULT 0,
                PRIMARY KEY (project_id, period)
            )""",
            # The audit trail: budget, review and access events, and (copied by the trigger below)
            # every run event of the event store, in one sequence that ListAuditEvents pages by.
            """CREATE TABLE audit_events (
                seq {serial},
                time TEXT NOT NULL,
                kind TEXT NOT NULL,
                actor TEXT NOT NULL,
                run_id TEXT NOT NULL,
                project_id TEXT NOT NULL,
                correlation_id TEXT NOT NULL,
                payload_json TEXT NOT NULL
            )""",
            "CREATE INDEX audit_by_run ON audit_events (run_id, seq)",
            "CREATE INDEX audit_by_project ON audit_events (project_id, seq)",
            # Legacy overwatch.db files already imported (services/overwatch/legacy_import.py).
            """CREATE TABLE ledger_imports (
                fingerprint TEXT PRIMARY KEY,
                source TEXT NOT NULL,
                reservations INTEGER NOT NULL,
                audit_events INTEGER NOT NULL,
                imported_at TEXT NOT NULL
            )""",
        ),
        # Run lifecycle in the audit trail: each event the run store appends (run.initiated, every
        # state change, decision, review, failure...) is copied, in the same transaction, as kind
        # "run.<type>" with the run's project. The payload drops the full run record that
        # run.initiated carries and names the event store's event_id. Events stored before this
        # migration are copied once by the INSERT ... SELECT after the trigger exists.
        sqlite_only=(
            """CREATE TRIGGER events_into_audit AFTER INSERT ON events
               BEGIN
                 INSERT INTO audit_events (time, kind, actor, run_id, project_id, correlation_id, payload_json)
                 VALUES (NEW.time,
                         CASE WHEN substr(NEW.type, 1, 4) = 'run.' THEN NEW.type ELSE 'run.' || NEW.type END,
                         NEW.actor, NEW.run_id,
                         COALESCE((SELECT project_id FROM runs WHERE run_id = NEW.run_id), ''),
                         NEW.correlation_id,
                         CASE WHEN NOT json_valid(NEW.payload) THEN json_object('event_id', NEW.event_id)
                              WHEN json_type(NEW.payload) = 'object'
                              THEN json_set(json_remove(NEW.payload, '$.record'), '$.event_id', NEW.event_id)
                              ELSE json_object('event_id', NEW.event_id) END);
               END""",
            """INSERT INTO audit_events (time, kind, actor, run_id, project_id, correlation_id, payload_json)
               SELECT e.time, CASE WHEN substr(e.type, 1, 4) = 'run.' THEN e.type ELSE 'run.' || e.type END,
                      e.actor, e.run_id, COALESCE(r.project_id, ''), e.correlation_id,
                      CASE WHEN NOT json_valid(e.payload) THEN json_object('event_id', e.event_id)
                              WHEN json_type(e.payload) = 'object'
                           THEN json_set(json_remove(e.payload, '$.record'), '$.event_id', e.event_id)
                           ELSE json_object('event_id', e.event_id) END
               FROM events e LEFT JOIN runs r ON r.run_id = e.run_id ORDER BY e.seq""",
        ),
        postgresql_only=(
            # A payload that is not a JSON object (NaN written by Python, say) must never make the
            # run store's write fail: it is audited with its event_id only.
            """CREATE FUNCTION smvm_run_event_audit_payload(payload TEXT, event_id TEXT) RETURNS TEXT
               LANGUAGE plpgsql IMMUTABLE AS $$
               DECLARE parsed JSONB;
               BEGIN
                 parsed := payload::jsonb;
                 IF jsonb_typeof(parsed) <> 'object' THEN
                   RETURN jsonb_build_object('event_id', event_id)::text;
                 END IF;
                 RETURN ((parsed - 'record') || jsonb_build_object('event_id', event_id))::text;
               EXCEPTION WHEN others THEN
                 RETURN jsonb_build_object('event_id', event_id)::text;
               END $$""",
            """CREATE FUNCTION smvm_events_into_audit() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN
                 INSERT INTO audit_events (time, kind, actor, run_id, project_id, correlation_id, payload_json)
                 VALUES (NEW.time,
                         CASE WHEN substr(NEW.type, 1, 4) = 'run.' THEN NEW.type ELSE 'run.' || NEW.type END,
                         NEW.actor, NEW.run_id,
                         COALESCE((SELECT project_id FROM runs WHERE run_id = NEW.run_id), ''),
                         NEW.correlation_id, smvm_run_event_audit_payload(NEW.payload, NEW.event_id));
                 RETURN NULL;
               END $$""",
            """CREATE TRIGGER events_into_audit AFTER INSERT ON events
               FOR EACH ROW EXECUTE FUNCTION smvm_events_into_audit()""",
            """INSERT INTO audit_events (time, kind, actor, run_id, project_id, correlation_id, payload_json)
               SELECT e.time, CASE WHEN substr(e.type, 1, 4) = 'run.' THEN e.type ELSE 'run.' || e.type END,
                      e.actor, e.run_id, COALESCE(r.project_id, ''), e.correlation_id,
                      smvm_run_event_audit_payload(e.payload, e.event_id)
               FROM events e LEFT JOIN runs r ON r.run_id = e.run_id ORDER BY e.seq""",
        ),
    ),
    Migration(
        6,
        "idempotency keys: SubmitRun's Idempotency-Key answers, shared by every gateway replica",
        (
            # scope: whose key (a digest of the caller's token); digest: the request first sent
            # under the key; answer: the SubmitRunResponse it got (JSON). Written in the run's
            # creating transaction (services/orchestrator/idempotency.py).
            """CREATE TABLE idempotency_keys (
                scope TEXT NOT NULL,
                idempotency_key TEXT NOT NULL,
                digest TEXT NOT NULL,
                run_id TEXT NOT NULL,
                answer TEXT NOT NULL,
                created_at {float} NOT NULL,
                expires_at {float} NOT NULL,
                PRIMARY KEY (scope, idempotency_key)
            )""",
            "CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at)",
        ),
    ),
    Migration(
        7,
        "run change sequence: every committed change of a run record takes the next global number",
        (
            # runs.change_seq: the number of the run's last committed change (services/orchestrator/
            # store.py takes it from run_change_seq in the changing transaction). The counter is one
            # row, so on PostgreSQL its row lock orders writers until commit: commit order is seq
            # order, and a reader of `change_seq > last ORDER BY change_seq` never skips a change.
            "ALTER TABLE runs ADD COLUMN change_seq {bigint} NOT NULL DEFAULT 0",
            # Existing rows are numbered in the order they last changed.
            """UPDATE runs SET change_seq = ordered.n
               FROM (SELECT run_id, ROW_NUMBER() OVER (ORDER BY updated_at, run_id) AS n FROM runs) AS ordered
               WHERE runs.run_id = ordered.run_id""",
            "CREATE UNIQUE INDEX runs_by_change_seq ON runs (change_seq)",
            """CREATE TABLE run_change_seq (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                seq {bigint} NOT NULL
            )""",
            "INSERT INTO run_change_seq (id, seq) SELECT 1, COALESCE(MAX(change_seq), 0) FROM runs",
        ),
    ),
)


def current_version(db: Database) -> int:
    with db.transaction() as tx:
        _ensure_table(tx)
        row = tx.one("SELECT MAX(version) FROM schema_migrations")
    return int(row[0] or 0) if row else 0


def _ensure_table(tx) -> None:
    tx.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )


def migrate(db: Database, migrations: tuple[Migration, ...] = MIGRATIONS) -> list[int]:
    """Apply every migration newer than the database's version; return the versions applied."""
    versions = [m.version for m in migrations]
    if versions != sorted(set(versions)):
        raise ValueError("migration versions must be unique and increasing")
    applied = []
    for migration in migrations:
        with db.transaction() as tx:
            if db.dialect == POSTGRESQL:
                tx.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK_KEY,))
            _ensure_table(tx)
            if tx.one("SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)):
                continue
            for statement in migration.sql_for(db.dialect):
                tx.execute(statement)
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, dt.datetime.now(dt.timezone.utc).isoformat()),
            )
            applied.append(migration.version)
    return applied
