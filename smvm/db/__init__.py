"""The durable state layer: one database (SQLite or PostgreSQL) behind a small, dialect-aware API.

`open_database(settings)` connects to `SMVM_DATABASE_URL` (or the embedded SQLite file
`smvm.db` inside `SMVM_RUNS_DIR`) and applies the versioned migrations before returning.
"""

from smvm.db.database import Database, DatabaseUnavailable, Transaction, database_url_for, open_database

__all__ = ["Database", "DatabaseUnavailable", "Transaction", "database_url_for", "open_database"]
