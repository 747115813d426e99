"""Redis: the Celery broker and result backend of the production profile (bookworm's ``redis-server``).

Runs as ``redis`` in the foreground, in-memory only (no snapshots: queued Celery messages are re-sent by
the scheduler after a restart). The password sits in a 0600 config file, never on a command line.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path
from urllib.parse import quote

import redis

from stack.services.common import Service, ensure_dir
from stack.settings import HOST, PORTS, StackPaths, StackSecrets, write_private


class Redis:
    def __init__(self, paths: StackPaths, secrets: StackSecrets) -> None:
        self.paths = paths
        self.secrets = secrets

    @property
    def config_file(self) -> Path:
        return self.paths.run / "redis" / "redis.conf"

    def url(self, database: int = 0) -> str:
        return f"redis://:{quote(self.secrets['redis_password'], safe='')}@{HOST}:{PORTS['redis']}/{database}"

    def prepare(self) -> None:
        ensure_dir(self.paths.run / "redis", "redis", 0o700)
        data = ensure_dir(self.paths.data / "redis", "redis", 0o700)
        write_private(self.config_file, "\n".join([
            f"bind {HOST}", f"port {PORTS['redis']}", "protected-mode yes", "daemonize no",
            f"dir {data}", 'save ""', "appendonly no", f"requirepass {self.secrets['redis_password']}",
            "loglevel notice", 'logfile ""', "maxclients 2000", "",
        ]))
        owner = pwd.getpwnam("redis")
        os.chown(self.config_file, owner.pw_uid, owner.pw_gid)

    def health(self) -> str | None:
        try:
            client = redis.Redis(host=HOST, port=PORTS["redis"], password=self.secrets["redis_password"],
                                 socket_timeout=2, socket_connect_timeout=2)
            with client:
                return None if client.ping() else "no PONG"
        except redis.RedisError as error:
            return f"redis: {error}"

    def service(self) -> Service:
        return Service("redis", ["/usr/bin/redis-server", str(self.config_file)], user="redis",
                       prepare=self.prepare, health=self.health, start_timeout_s=30, ports=(PORTS["redis"],))
