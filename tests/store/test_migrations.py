import pytest

from smvm.db import open_database
from smvm.db.database import POSTGRESQL, SQLITE, Database, dialect_of, sqlite_path
from smvm.db.migrations import MIGRATIONS, Migration, current_version, migrate

TABLES = {"runs", "events", "stage_outputs", "artifacts", "outbox", "schema_migrations", "run_leases", "memory_nodes", "memory_edges"}


def _tables(db: Database) -> set[str]:
    with db.transaction() as tx:
        if db.dialect == SQLITE:
            rows = tx.all("SELECT name FROM sqlite_master WHERE type = 'table'")
        else:
            rows = tx.all("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {r[0] for r in rows}


def test_start_up_applies_every_migration_once_and_records_it(database_url):
    db = open_database(database_url)
    assert current_version(db) == MIGRATIONS[-1].version
    assert TABLES <= _tables(db)
    db.close()
    again = Database(database_url)
    assert migrate(again) == []  # a second start finds nothing to do
    with again.transaction() as tx:
        assert tx.all("SELECT version FROM schema_migrations ORDER BY version") == [(m.version,) for m in MIGRATIONS]


def test_a_later_migration_is_applied_on_the_next_start_and_a_failing_one_changes_nothing(database_url):
    db = open_database(database_url)
    extra = Migration(MIGRATIONS[-1].version + 1, "add a column", ("ALTER TABLE runs ADD COLUMN note TEXT",))
    assert migrate(db, MIGRATIONS + (extra,)) == [extra.version]
    broken = Migration(extra.version + 1, "broken", ("CREATE TABLE t_ok (x INTEGER)", "THIS IS NOT SQL"))
    with pytest.raises(Exception):
        migrate(db, MIGRATIONS + (extra, broken))
    assert current_version(db) == extra.version
    assert "t_ok" not in _tables(db)  # the failing migration's first statement was rolled back too


def test_migration_versions_must_increase(database_url):
    db = open_database(database_url)
    with pytest.raises(ValueError):
        migrate(db, (MIGRATIONS[0], MIGRATIONS[0]))


@pytest.mark.parametrize("url, dialect", [("sqlite:////tmp/x.db", SQLITE), ("postgresql://u@h/db", POSTGRESQL),
                                          ("postgres://u@h/db", POSTGRESQL)])
def test_dialect_from_the_url(url, dialect):
    assert dialect_of(url) == dialect


def test_unknown_schemes_and_bad_sqlite_urls_are_refused_naming_the_setting():
    with pytest.raises(ValueError, match="database_url"):
        dialect_of("mysql://u@h/db")
    with pytest.raises(ValueError, match="database_url"):
        sqlite_path("sqlite://")
    assert sqlite_path("sqlite:////abs/file.db") == "/abs/file.db"
    assert sqlite_path("sqlite:///rel/file.db") == "rel/file.db"
