"""What every service module shares: the service record, running a command, and health checks."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import signal
import socket
import subprocess
from base64 import b64encode
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from stack.settings import HOST

Check = Callable[[], "str | None"]  # None when healthy, else why not


@dataclass
class Service:
    name: str
    command: list[str]
    health: Check
    needs: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    prepare: Callable[[], None] | None = None
    bootstrap: Callable[[], None] | None = None
    start_timeout_s: float = 60.0
    oneshot: bool = False  # runs to completion before its dependents start
    is_current: Callable[[], bool] = lambda: True  # a one-shot whose inputs changed runs again
    restarts_dependents: bool = False  # running it again ends what runs on top (a site's hosts made again)
    url: str | None = None
    ports: tuple[int, ...] = ()  # what it listens on: up only when the process we started holds them
    stop_signal: int = signal.SIGTERM  # the one it shuts down cleanly on (PostgreSQL: SIGINT, "fast")


    def fingerprint(self) -> str:
        """Changes when the service would start differently (command, its own environment, user): a running
        copy started otherwise (another profile, new secrets) is restarted by ``up``."""
        text = json.dumps([self.command, sorted(self.env.items()), self.user])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def run(command: list[str], *, input_text: str | None = None, timeout_s: float = 30.0,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, input=input_text, capture_output=True, text=True,
                          timeout=timeout_s, env=env)


def command_check(command: list[str], expect: str | None = None) -> str | None:
    try:
        result = run(command, timeout_s=10)
    except subprocess.TimeoutExpired:
        return f"{command[0]} timed out"
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        return output.splitlines()[-1] if output else f"{command[0]} exited {result.returncode}"
    if expect and expect not in output:
        return output[-200:]
    return None


def port_check(port: int) -> str | None:
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return None
    except OSError as error:
        return f"port {port}: {error.strerror or error}"


def http_get(url: str, headers: dict[str, str] | None = None, timeout_s: float = 3.0) -> tuple[int, bytes]:
    """Status and body of a GET; a server that does not answer raises ``ConnectionError`` (an ``OSError``)."""
    try:
        response = httpx.get(url, headers=headers or {}, timeout=timeout_s)
    except httpx.TransportError as error:
        raise ConnectionError(str(error) or type(error).__name__) from None
    return response.status_code, response.content


def http_check(url: str, headers: dict[str, str] | None = None) -> str | None:
    """None when ``url`` answers 200; otherwise why not, for ``stack status`` and ``up``."""
    try:
        status, body = http_get(url, headers)
    except OSError as error:
        return f"{url}: {error}"
    return None if status == 200 else f"{url}: HTTP {status} {body[:200]!r}"


def basic_auth(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + b64encode(f"{user}:{password}".encode()).decode()}


def ensure_dir(path: Path, owner: str | None = None, mode: int = 0o755) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    if owner:
        user = pwd.getpwnam(owner)
        os.chown(path, user.pw_uid, user.pw_gid)
    path.chmod(mode)
    return path
