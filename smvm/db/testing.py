"""pytest fixtures that give a test both back ends of the store (import them into a conftest.py).

PostgreSQL is a real server: the one named by SMVM_TEST_DATABASE_URL, or a throwaway cluster the
session starts (initdb + pg_ctl on a free loopback port). Missing binaries fail the tests rather
than skip them: `make test` installs PostgreSQL.
"""

from __future__ import annotations

import itertools
import os

import pytest

from smvm.db import open_database
from smvm.db.pgcluster import PgCluster, create_database

_names = itertools.count()


@pytest.fixture(scope="session")
def pg_cluster():
    """The session's own cluster (None when SMVM_TEST_DATABASE_URL names an existing server)."""
    if os.environ.get("SMVM_TEST_DATABASE_URL"):
        yield None
        return
    cluster = PgCluster().init().start()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def pg_server_url(pg_cluster) -> str:
    return os.environ.get("SMVM_TEST_DATABASE_URL") or pg_cluster.url()


@pytest.fixture
def pg_url(pg_server_url) -> str:
    """A fresh, empty PostgreSQL database for one test."""
    return create_database(pg_server_url, f"smvm_test_{os.getpid()}_{next(_names)}")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'smvm.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def db(database_url):
    database = open_database(database_url)
    yield database
    database.close()
