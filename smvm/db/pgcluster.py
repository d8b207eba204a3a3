"""A throwaway PostgreSQL cluster on a free loopback port, for tests and local trials.

`initdb` + `pg_ctl` from the PostgreSQL server binaries (PATH or /usr/lib/postgresql/*/bin) in a
fresh temporary directory. initdb refuses to run as root, so as root the cluster belongs to the
`postgres` account and every server binary runs through `runuser -u postgres`. Nothing listens
beyond 127.0.0.1, authentication is `trust`, and `destroy` removes every file.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


class PostgresNotInstalled(RuntimeError):
    pass


def server_bin_dir() -> Path:
    """The directory holding initdb and pg_ctl (the newest installed major version)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(os.path.realpath(on_path)).parent
    raise PostgresNotInstalled(
        "PostgreSQL server binaries (initdb, pg_ctl) not found; `make test` installs them "
        "(apt-get install -y postgresql), or set SMVM_TEST_DATABASE_URL to an existing server"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    def __init__(self, superuser: str = "postgres", *, fsync: bool = False):
        # fsync off by default: tests need no durability across power cuts, and it spares the disk.
        self.fsync = fsync
        self.bin = server_bin_dir()
        self.superuser = superuser
        self.port = _free_port()
        self.base = Path(tempfile.mkdtemp(prefix="smvm-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self._as_root = os.geteuid() == 0
        if self._as_root:
            account = pwd.getpwnam("postgres")
            os.chown(self.base, account.pw_uid, account.pw_gid)
        self.running = False

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bin / args[0]), *args[1:]]
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=check, capture_output=True, text=True, cwd=self.base, timeout=120)

    def init(self) -> "PgCluster":
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", self.superuser, "-E", "UTF8",
                  "--locale=C", "--no-sync")
        return self

    def start(self) -> "PgCluster":
        options = (f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c max_connections=200"
                   f" -c fsync={'on' if self.fsync else 'off'}")
        result = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start", check=False)
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {result.stderr}\n{self.log.read_text() if self.log.exists() else ''}")
        self.running = True
        return self

    def stop(self, mode: str = "fast") -> None:
        if self.running:
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop", check=False)
            self.running = False

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.superuser}@127.0.0.1:{self.port}/{database}"

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)


def create_database(server_url: str, name: str) -> str:
    """CREATE DATABASE `name` on the server at `server_url`; return the new database's URL."""
    import psycopg
    from urllib.parse import urlsplit, urlunsplit

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(server_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))
