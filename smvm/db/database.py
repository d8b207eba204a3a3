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
from pathlib import Path
from typing import Any, Iterator, Sequence
from urllib.parse import unquote, urlsplit

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


class Database:
    """One connection to the store's database, used by one process (thread-safe, serialised)."""

    def __init__(self, url: str):
        self.url = url
        self.dialect = dialect_of(url)
        self._lock = threading.RLock()
        self._conn: Any = None

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
