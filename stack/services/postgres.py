"""PostgreSQL: the metadata database of Airflow and the backend store of MLflow, in a cluster of the stack's own.

Debian's server binaries run as the ``postgres`` user in the foreground (no ``pg_ctlcluster``, no systemd);
the data folder lives under the state folder. Clients log in as ``airflow`` with the stack's generated
password over 127.0.0.1 (scram-sha-256); the password is never on a command line.
"""

from __future__ import annotations

import glob
import os
import pwd
import signal
from pathlib import Path
from urllib.parse import quote

from stack.services.common import Service, command_check, ensure_dir, run
from stack.settings import HOST, PORTS, StackPaths, StackSecrets, write_private

DB_USER = "airflow"
DATABASES = ("airflow", "mlflow")


def server_bin(program: str) -> str:
    """The newest installed PostgreSQL's ``program`` (bookworm ships 15)."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{program}"), key=lambda path: int(path.split("/")[4]))
    if not found:
        raise RuntimeError("PostgreSQL is not installed (apt package postgresql): run ./factory setup")
    return found[-1]


class PostgreSQL:
    def __init__(self, paths: StackPaths, secrets: StackSecrets) -> None:
        self.paths = paths
        self.secrets = secrets

    @property
    def datadir(self) -> Path:
        return self.paths.data / "postgres"

    @property
    def socket_dir(self) -> Path:
        return self.paths.run / "postgres"

    def url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        password = quote(self.secrets["postgres_password"], safe="")
        return f"{driver}://{DB_USER}:{password}@{HOST}:{PORTS['postgres']}/{database}"

    def prepare(self) -> None:
        """A cluster initialised once, owned by ``postgres``; ``airflow`` is its superuser."""
        ensure_dir(self.socket_dir, "postgres", 0o755)
        if (self.datadir / "PG_VERSION").exists():
            return
        ensure_dir(self.datadir, "postgres", 0o700)
        postgres = pwd.getpwnam("postgres")
        password_file = self.paths.run / "postgres" / ".initdb-password"
        write_private(password_file, self.secrets["postgres_password"] + "\n")
        os.chown(password_file, postgres.pw_uid, postgres.pw_gid)
        try:
            result = run(["runuser", "-u", "postgres", "--", server_bin("initdb"), "-D", str(self.datadir),
                          "-A", "scram-sha-256", "-U", DB_USER, f"--pwfile={password_file}", "-E", "UTF8",
                          "--locale=C.UTF-8"], timeout_s=120)
        finally:
            password_file.unlink(missing_ok=True)
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{result.stdout}{result.stderr}")

    def psql(self, sql: str, database: str = "postgres") -> str:
        env = {"PGPASSWORD": self.secrets["postgres_password"], "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        result = run(["psql", "-h", HOST, "-p", str(PORTS["postgres"]), "-U", DB_USER, "-d", database,
                      "-v", "ON_ERROR_STOP=1", "-tAc", sql], env=env)
        if result.returncode != 0:
            raise RuntimeError(f"psql: {result.stderr.strip()}")
        return result.stdout.strip()

    def bootstrap(self) -> None:
        """A database for each client (idempotent)."""
        existing = set(self.psql("SELECT datname FROM pg_database").split())
        for database in DATABASES:
            if database not in existing:
                self.psql(f'CREATE DATABASE "{database}"')

    def service(self) -> Service:
        return Service("postgres", [server_bin("postgres"), "-D", str(self.datadir), "-p", str(PORTS["postgres"]),
                                    "-k", str(self.socket_dir), "-c", f"listen_addresses={HOST}",
                                    "-c", "max_connections=300", "-c", "shared_buffers=128MB"],
                       user="postgres", prepare=self.prepare, bootstrap=self.bootstrap,
                       health=lambda: command_check([server_bin("pg_isready"), "-h", HOST, "-p",
                                                     str(PORTS["postgres"])], "accepting connections"),
                       start_timeout_s=60, ports=(PORTS["postgres"],),
                       # SIGTERM is a "smart" shutdown that waits for every client (Airflow never leaves):
                       # SIGINT ends their sessions and shuts down cleanly, without crash recovery
                       stop_signal=signal.SIGINT)
