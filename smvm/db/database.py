"""Connections, transactions and dialect differences, so that callers write one SQL for both back ends.

SQL is written with `?` placeholders and run unchanged on SQLite; on PostgreSQL they become `%s`.
Each transaction holds the connection's lock: SQLite opens it with BEGIN IMMEDIATE (one writer at
a time, readers never blocked thanks to WAL), PostgreSQL with a regular transaction whose row
locks (`FOR UPDATE`, added by `tx.for_update`) order concurrent writers across replicas. A lost
database connection surfaces as `DatabaseUnavailable` (gRPC UNAVAILABLE, HTTP 503) and the next
transaction reconnects.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Sequence
from urllib.parse import quote, unquote, urlsplit

from smvm.errors import AlreadyExists, Unavailable

log = logging.getLogger(__name__)

SQLITE, POSTGRESQL = "sqlite", "postgresql"


class DatabaseUnavailable(Unavailable):
    """The database cannot be reached; nothing was written."""


def database_url_for(database_url: str, runs_dir: Path) -> str:
    """The configured URL, or the embedded SQLite file inside the runs directory."""
    if database_url:
        return database_url
    return f"sqlite:///{(Path(runs_dir) / 'smvm.db').resolve()}"


def dialect_of(url: str) -> str:
    scheme = urlsplit(url).scheme.split("+")[0]
    if scheme == "sqlite":
        return SQLITE
    if scheme in ("postgresql", "postgres"):
        return POSTGRESQL
    raise ValueError(f"database_url: unsupported scheme {scheme!r} (use sqlite:///PATH or postgresql://...)")


def sqlite_path(url: str) -> str:
    """sqlite:///relative/file.db or sqlite:////absolute/file.db (SQLAlchemy's convention)."""
    rest = unquote(url[len("sqlite:///"):]) if url.startswith("sqlite:///") else ""
    if not rest:
        raise ValueError(f"database_url: expected sqlite:///PATH, got {url!r}")
    return rest


class Transaction:
    """A cursor inside one open transaction."""

    def __init__(self, db: "Database", cursor: Any):
        self.db = db
        self._cursor = cursor

    @property
    def dialect(self) -> str:
        return self.db.dialect

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if not params:  # no placeholder parsing at all (DDL may contain '%' or '?')
            return self._cursor.execute(sql)
        return self._cursor.execute(self.db.sql(sql), tuple(params))

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        self.execute(sql, params)
        return [tuple(row) for row in self._cursor.fetchall()]

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        self.execute(sql, params)
        row = self._cursor.fetchone()
        return tuple(row) if row is not None else None

    def for_update(self) -> str:
        """Row-lock suffix for a SELECT that precedes an UPDATE (SQLite's write lock covers it already)."""
        return " FOR UPDATE" if self.dialect == POSTGRESQL else ""


# The writer's own automatic checkpoint stays as a backstop, far above the background one's work:
# it only runs if the checkpointer thread cannot keep up (e.g. a long reader pins the WAL).
BACKSTOP_AUTOCHECKPOINT_PAGES = 16_384  # 64 MiB of 4 KiB pages


class WalCheckpointer:
    """Copies committed WAL frames back into the SQLite database file on its own thread and connection.

    SQLite's automatic checkpoint runs inside the commit that crosses its threshold (1,000 pages), so
    the commit of a large stage output (a default run's simulation result is about 5.5 MB) also paid
    for copying the whole WAL back: 100 ms against 34 ms without it on this machine (a 5.5 MB blob,
    synchronous=FULL). A commit is durable once its WAL frames are synced, so the copy can happen
    beside the next step of the run. The thread starts on the first write, coalesces the writes that
    arrive while it works (one PASSIVE checkpoint for all of them, at most one per `min_interval_s`),
    and ends after `idle_s` without writes, so an idle or forgotten Database holds no thread.
    """

    def __init__(self, path: str, min_interval_s: float = 0.05, idle_s: float = 5.0):
        self.path = path
        self.min_interval_s = min_interval_s
        self.idle_s = idle_s
        self.checkpoints = 0
        self._wake = threading.Event()
        self._guard = threading.Lock()
        self._thread: threading.Thread | None = None
        self.closed = False

    def written(self) -> None:
        """A write transaction committed: checkpoint soon."""
        with self._guard:
            if self.closed:
                return
            self._wake.set()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="sqlite-wal-checkpoint", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        try:  # mode=rw: never create the file (a database removed meanwhile stays removed)
            conn = sqlite3.connect(f"file:{quote(self.path)}?mode=rw", uri=True, isolation_level=None,
                                   check_same_thread=False, timeout=1.0)
        except sqlite3.Error as err:
            log.debug("background WAL checkpoint unavailable: %s", err)
            with self._guard:
                self._thread = None
            return
        try:
            while True:
                if not self._wake.wait(self.idle_s):
                    with self._guard:  # idle: end, unless a write arrived just now
                        if not self._wake.is_set():
                            self._thread = None
                            return
                self._wake.clear()
                if self.closed:
                    return
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.checkpoints += 1
                except sqlite3.Error as err:  # another process checkpointing, or the file went away
                    log.debug("background WAL checkpoint skipped: %s", err)
                if self.min_interval_s > 0:
                    time.sleep(self.min_interval_s)
        finally:
            conn.close()

    def close(self) -> None:
        with self._guard:
            self.closed = True
            self._wake.set()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)


class Database:
    """One connection to the store's database, used by one process (thread-safe, serialised)."""

    def __init__(self, url: str):
        self.url = url
        self.dialect = dialect_of(url)
        self._lock = threading.RLock()
        self._conn: Any = None
        self.checkpointer: WalCheckpointer | None = None  # SQLite: made with the connection

    # ------------------------------------------------------------------ connection
    def _connect(self) -> Any:
        if self.dialect == SQLITE:
            path = sqlite_path(self.url)
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed transaction survives a power cut, not only a process crash.
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_AUTOCHECKPOINT_PAGES}")  # see WalCheckpointer
            if self.checkpointer is None or self.checkpointer.closed:
                self.checkpointer = WalCheckpointer(path)
            return conn
        import psycopg

        try:
            # Bounded waits: the store is called from the orchestrator's event loop, so a server
            # that hangs must turn into DatabaseUnavailable soon, not stall every request.
            return psycopg.connect(
                self.url, autocommit=True, connect_timeout=3,
                options="-c statement_timeout=15000 -c lock_timeout=10000 -c idle_in_transaction_session_timeout=30000",
                keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3,
            )
        except psycopg.OperationalError as err:
            raise DatabaseUnavailable(f"database unavailable: {first_line(err)}", reason="DATABASE_UNAVAILABLE") from err

    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.close()
                self._conn = None
        if self.checkpointer is not None:
            self.checkpointer.close()

    def sql(self, text: str) -> str:
        return text.replace("?", "%s") if self.dialect == POSTGRESQL else text

    # ------------------------------------------------------------------ transactions
    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Everything inside commits together or not at all."""
        with self._lock:
            if self.dialect == SQLITE:
                yield from self._sqlite_transaction("BEGIN IMMEDIATE")
            else:
                yield from self._pg_transaction()

    @contextlib.contextmanager
    def reading(self) -> Iterator[Transaction]:
        """A consistent snapshot for reads. On SQLite it takes no write lock, so readers in other
        processes (the memory service, a second tool) never queue behind writers or each other."""
        with self._lock:
            if self.dialect == SQLITE:
                yield from self._sqlite_transaction("BEGIN DEFERRED")
            else:
                yield from self._pg_transaction()

    def _sqlite_transaction(self, begin: str) -> Iterator[Transaction]:
        conn = self._connection()
        cursor = conn.cursor()
        cursor.execute(begin)
        try:
            yield Transaction(self, cursor)
        except sqlite3.IntegrityError as err:
            conn.rollback()
            if "UNIQUE constraint" in str(err):
                raise AlreadyExists(str(err), reason="CONFLICT") from err
            raise
        except BaseException:
            conn.rollback()
            raise
        else:
            try:
                conn.commit()
            except sqlite3.IntegrityError as err:
                conn.rollback()
                raise AlreadyExists(str(err), reason="CONFLICT") from err
            if begin == "BEGIN IMMEDIATE" and self.checkpointer is not None:
                self.checkpointer.written()
        finally:
            cursor.close()

    def _pg_transaction(self) -> Iterator[Transaction]:
        import psycopg

        conn = self._connection()
        try:
            with conn.transaction():
                with conn.cursor() as cursor:
                    yield Transaction(self, cursor)
        except psycopg.errors.UniqueViolation as err:
            raise AlreadyExists(first_line(err), reason="CONFLICT") from err
        except psycopg.errors.QueryCanceled as err:  # statement_timeout / lock_timeout
            raise DatabaseUnavailable(f"database too slow: {first_line(err)}", reason="DATABASE_TIMEOUT") from err
        except psycopg.OperationalError as err:
            # The server went away (or restarted): drop the connection; the next call reconnects.
            self.close()
            raise DatabaseUnavailable(f"database unavailable: {first_line(err)}", reason="DATABASE_UNAVAILABLE") from err
        except psycopg.InterfaceError as err:
            self.close()
            raise DatabaseUnavailable(f"database unavailable: {first_line(err)}", reason="DATABASE_UNAVAILABLE") from err

    def ping(self) -> bool:
        """True when a trivial query succeeds (readiness)."""
        try:
            with self.reading() as tx:
                return tx.one("SELECT 1") == (1,)
        except DatabaseUnavailable:
            return False


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def open_database(url: str) -> Database:
    """Connect and bring the schema up to date (every process that opens the store does this)."""
    from smvm.db.migrations import migrate

    db = Database(url)
    migrate(db)
    return db
