"""SQLite's WAL is copied back into the database file by a background thread, not by the commit that
crosses the automatic checkpoint's threshold; the thread leaves when idle and on close."""

from __future__ import annotations

import os
import time

from smvm.db.database import BACKSTOP_AUTOCHECKPOINT_PAGES, Database

BLOB = os.urandom(6_000_000)  # more than SQLite's default automatic checkpoint (1,000 pages)


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def make(tmp_path) -> Database:
    db = Database(f"sqlite:///{tmp_path / 'wal.db'}")
    with db.transaction() as tx:
        tx.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, body BLOB)")
    return db


def test_the_commit_leaves_the_checkpoint_to_the_background_thread(tmp_path):
    db = make(tmp_path)
    try:
        conn = db._connection()
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == BACKSTOP_AUTOCHECKPOINT_PAGES
        with db.transaction() as tx:
            tx.execute("INSERT INTO blobs (body) VALUES (?)", (BLOB,))
        # The thread copies the committed frames into the database file soon after the commit.
        assert wait_for(lambda: os.path.getsize(tmp_path / "wal.db") > len(BLOB))
        assert db.checkpointer.checkpoints >= 1
        with db.reading() as tx:
            assert tx.one("SELECT length(body) FROM blobs") == (len(BLOB),)
    finally:
        db.close()


def test_without_the_thread_the_commit_does_not_checkpoint(tmp_path):
    """The committing call no longer copies the WAL back (SQLite's default would at 1,000 pages)."""
    db = make(tmp_path)
    try:
        db._connection()
        db.checkpointer.close()  # no background thread from here on
        with db.transaction() as tx:
            tx.execute("INSERT INTO blobs (body) VALUES (?)", (BLOB,))
        db_file = os.path.getsize(tmp_path / "wal.db")
        assert db_file < len(BLOB)  # still only in the WAL
        assert os.path.getsize(str(tmp_path / "wal.db") + "-wal") > len(BLOB)
    finally:
        db.close()


def test_the_thread_ends_when_idle_and_on_close_and_a_reconnect_gets_a_new_one(tmp_path):
    db = make(tmp_path)
    try:
        db._connection()
        checkpointer = db.checkpointer
        checkpointer.idle_s = 0.1
        with db.transaction() as tx:
            tx.execute("INSERT INTO blobs (body) VALUES (?)", (b"x",))
        assert wait_for(lambda: checkpointer._thread is None)  # idle: gone
        with db.transaction() as tx:  # a new write starts it again
            tx.execute("INSERT INTO blobs (body) VALUES (?)", (b"y",))
        assert checkpointer._thread is not None
        db.close()
        assert checkpointer.closed and (checkpointer._thread is None or not checkpointer._thread.is_alive())
        with db.transaction() as tx:  # the next transaction reconnects, with a checkpointer of its own
            tx.execute("INSERT INTO blobs (body) VALUES (?)", (b"z",))
        assert db.checkpointer is not checkpointer and not db.checkpointer.closed
        with db.reading() as tx:
            assert tx.one("SELECT count(*) FROM blobs") == (3,)
    finally:
        db.close()
