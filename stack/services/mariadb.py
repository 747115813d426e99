"""MariaDB: the database behind Slurm's accounting (slurmdbd)."""

from __future__ import annotations

from pathlib import Path

from stack.services.common import Service, command_check, ensure_dir, run
from stack.settings import HOST, PORTS, StackPaths, StackSecrets


class MariaDB:
    def __init__(self, paths: StackPaths, secrets: StackSecrets) -> None:
        self.paths = paths
        self.secrets = secrets

    @property
    def datadir(self) -> Path:
        return self.paths.data / "mariadb"

    @property
    def socket(self) -> str:
        return str(self.paths.run / "mariadb" / "mariadb.sock")

    def prepare(self) -> None:
        """A data folder initialised once; root logs in over the socket only."""
        ensure_dir(self.paths.run / "mariadb", "mysql")
        if not (self.datadir / "mysql").exists():
            ensure_dir(self.datadir, "mysql", 0o700)
            result = run(["mariadb-install-db", "--user=mysql", f"--datadir={self.datadir}",
                          "--auth-root-authentication-method=socket", "--skip-test-db"], timeout_s=120)
            if result.returncode != 0:
                raise RuntimeError(f"mariadb-install-db failed:\n{result.stdout}{result.stderr}")

    def bootstrap(self) -> None:
        """slurmdbd's database and user, with the stack's password (set again on every start)."""
        password = self.secrets["mariadb_slurm_password"].replace("'", "''")
        statements = ["CREATE DATABASE IF NOT EXISTS slurm_acct_db;"]
        for host in ("127.0.0.1", "localhost"):
            statements += [
                f"CREATE USER IF NOT EXISTS 'slurm'@'{host}' IDENTIFIED BY '{password}';",
                f"ALTER USER 'slurm'@'{host}' IDENTIFIED BY '{password}';",
                f"GRANT ALL ON slurm_acct_db.* TO 'slurm'@'{host}';",
            ]
        result = run(["mariadb", f"--socket={self.socket}", "-u", "root"], input_text="\n".join(statements))
        if result.returncode != 0:
            raise RuntimeError(f"creating the accounting database user failed: {result.stderr}")

    def service(self) -> Service:
        return Service("mariadb", ["/usr/sbin/mariadbd", "--user=mysql", f"--datadir={self.datadir}",
                                   f"--socket={self.socket}", f"--bind-address={HOST}",
                                   f"--port={PORTS['mariadb']}", f"--pid-file={self.paths.run}/mariadb/mariadbd.pid",
                                   "--innodb-buffer-pool-size=128M", "--innodb-lock-wait-timeout=900",
                                   "--skip-name-resolve"],
                       health=lambda: command_check(["mariadb-admin", f"--socket={self.socket}", "ping"], "alive"),
                       prepare=self.prepare, bootstrap=self.bootstrap, start_timeout_s=60,
                       ports=(PORTS["mariadb"],))
