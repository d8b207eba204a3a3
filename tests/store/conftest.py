"""Every test here runs on SQLite and on a real PostgreSQL server (see smvm/db/testing.py)."""

from smvm.db.testing import database_url, db, pg_cluster, pg_server_url, pg_url  # noqa: F401 (fixtures)
