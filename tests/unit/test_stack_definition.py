"""The stack's service graph and settings, checked without starting anything."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess

import pytest

from stack.manager import Stack
from stack.ports import foreign_holders, holders
from stack.settings import HOST, JOB_USER, PORTS, StackPaths, StackSecrets


@pytest.fixture
def stack(tmp_path) -> Stack:
    return Stack(StackPaths(tmp_path / "state"))


def test_every_dependency_is_a_service_and_the_graph_has_no_cycle(stack):
    names = set(stack.services)
    for service in stack.services.values():
        assert set(service.needs) <= names, service.name
    levels = stack._stop_order()
    flat = [name for level in levels for name in level]
    assert sorted(flat) == sorted(n for n, s in stack.services.items() if not s.oneshot)
    position = {name: index for index, level in enumerate(levels) for name in level}
    for service in stack.services.values():
        for dependency in service.needs:
            if dependency in position and service.name in position:
                assert position[service.name] < position[dependency], "dependents stop first"


def test_all_services_bind_loopback_only(stack):
    assert HOST == "127.0.0.1"
    for service in stack.services.values():
        for argument in service.command:
            assert "0.0.0.0" not in argument, f"{service.name}: {argument}"
    assert len(set(PORTS.values())) == len(PORTS), "two services share a port"


def test_the_issue_s_services_are_all_there(stack):
    expected = {"munge", "mariadb", "slurmdbd", "slurmctld", "slurmd", "slurmrestd", "sshd", "seaweedfs",
                "mlflow", "mlserver", "airflow-api", "airflow-scheduler", "airflow-dag-processor",
                "airflow-triggerer", "mail"}
    assert expected <= set(stack.services)


def sshd_settings(stack: Stack) -> dict[str, str]:
    lines = [line.split(None, 1) for line in stack.factory.login_node.sshd_config().splitlines() if line.strip()]
    return dict(lines)


def test_login_node_listens_on_loopback_only_and_takes_keys_only(stack):
    """sshd's address is in its config file, which the command-line loopback check cannot see."""
    settings = sshd_settings(stack)
    assert settings["ListenAddress"] == HOST
    assert settings["Port"] == str(PORTS["sshd"])
    assert settings["PasswordAuthentication"] == settings["KbdInteractiveAuthentication"] == "no"
    assert settings["AuthenticationMethods"] == "publickey"
    assert settings["PermitRootLogin"] == "no"
    assert settings["AllowUsers"] == JOB_USER
    assert int(settings["MaxSessions"]) >= 64, "one ControlMaster connection carries many tasks' sessions"


@pytest.mark.skipif(os.geteuid() != 0, reason="the login node's files are root-owned, as sshd's StrictModes wants")
def test_login_node_files_are_private_where_they_must_be_and_sshd_accepts_them(stack):
    stack.factory.login_node.prepare()  # also makes /run/sshd, without which even `sshd -t` refuses
    paths = stack.paths
    first_key = paths.ssh_key.read_bytes()

    def mode(path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(paths.ssh_key) == 0o600 and mode(paths.ssh_key.parent) == 0o700
    authorized = paths.ssh / "authorized_keys" / JOB_USER
    assert mode(authorized) == 0o644 and authorized.stat().st_uid == 0
    assert authorized.read_text() == paths.ssh_key.with_name("id_ed25519.pub").read_text()
    host_key = (paths.ssh / "ssh_host_ed25519_key.pub").read_text().split()
    assert paths.ssh_known_hosts.read_text() == f"[{HOST}]:{PORTS['sshd']} {host_key[0]} {host_key[1]}\n"
    checked = subprocess.run(["/usr/sbin/sshd", "-t", "-f", str(paths.ssh / "sshd_config")],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    stack.factory.login_node.prepare()
    assert paths.ssh_key.read_bytes() == first_key, "keys are made once, not on every start"


def test_slurm_connections_share_the_site_and_differ_by_transport(stack):
    stack.paths.ensure()
    stack.factory.secrets.ensure_slurm_jwt_key(os.getuid(), os.getgid())
    connections = stack.factory.airflow.connections()
    slurm = {name: connections[name] for name in ("factory_slurm_local", "factory_slurm_cli", "factory_slurm_ssh")}
    assert {conn["conn_type"] for conn in slurm.values()} == {"slurm"}
    assert {name: conn["extra"]["transport"] for name, conn in slurm.items()} == {
        "factory_slurm_local": "rest", "factory_slurm_cli": "local", "factory_slurm_ssh": "ssh"}
    site = stack.factory.airflow.slurm_site()
    for conn in slurm.values():
        assert site.items() <= conn["extra"].items()
    ssh = slurm["factory_slurm_ssh"]
    assert (ssh["host"], ssh["port"], ssh["login"]) == (HOST, PORTS["sshd"], JOB_USER)
    assert ssh["extra"]["key_file"] == str(stack.paths.ssh_key)
    assert ssh["extra"]["known_hosts"] == str(stack.paths.ssh_known_hosts)


def test_secrets_are_private_and_stable(tmp_path):
    paths = StackPaths(tmp_path / "state")
    first = StackSecrets(paths).values
    mode = stat.S_IMODE((paths.secrets / "secrets.json").stat().st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(paths.secrets.stat().st_mode) == 0o700
    assert StackSecrets(paths).values == first, "a second up must reuse the stack's secrets"
    assert len(set(first.values())) == len(first), "every secret is generated on its own"


def test_slurm_token_is_an_hs256_jwt_for_the_user(tmp_path):
    import base64
    import hashlib
    import hmac
    import os

    paths = StackPaths(tmp_path / "state")
    secrets = StackSecrets(paths)
    key = secrets.ensure_slurm_jwt_key(os.getuid(), os.getgid())
    token = secrets.slurm_token("alice", lifespan_s=60)
    header, claims, signature = token.split(".")

    def decode(part: str) -> bytes:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

    assert json.loads(decode(header)) == {"alg": "HS256", "typ": "JWT"}
    body = json.loads(decode(claims))
    assert body["sun"] == "alice" and body["exp"] - body["iat"] == 60
    expected = hmac.new(key.read_bytes(), f"{header}.{claims}".encode(), hashlib.sha256).digest()
    assert decode(signature) == expected



def test_a_failing_service_is_named_with_its_log_tail(tmp_path):
    from stack.process import StackError
    from stack.services import Service

    stack = Stack(StackPaths(tmp_path / "state"))
    stack.factory.prepare_common = lambda: None  # no Slurm key or connections for this stack
    stack.services = {
        "broken": Service("broken", ["sh", "-c", "echo 'cannot bind port 1234' >&2; exit 1"],
                          health=lambda: "not yet", start_timeout_s=5),
        "dependent": Service("dependent", ["sleep", "60"], needs=("broken",), health=lambda: None),
    }
    stack.factory.write_info_file = lambda: None
    with pytest.raises(StackError) as failure:
        stack.up(progress=lambda _line: None)
    message = str(failure.value)
    assert "broken exited while starting" in message
    assert "cannot bind port 1234" in message
    assert stack.supervised("dependent").pid() is None, "nothing starts on top of a failed dependency"


def test_hosts_made_again_restart_what_runs_on_them_and_only_that(tmp_path):
    """A site's hosts made again (its nodes were stale) end the daemons in them: ``up`` starts those again,
    not only the one-shot, and leaves what does not stand on the hosts alone."""
    from stack.services import Service

    stack = Stack(StackPaths(tmp_path / "state"))
    stack.factory.prepare_common = lambda: None
    stack.factory.write_info_file = lambda: None
    made = []
    stack.services = {
        "hosts": Service("hosts", [], health=lambda: None, oneshot=True, is_current=lambda: False,
                         bootstrap=lambda: made.append("hosts"), restarts_dependents=True),
        "daemon": Service("daemon", ["sleep", "60"], needs=("hosts",), health=lambda: None),
        "on_daemon": Service("on_daemon", ["sleep", "60"], needs=("daemon",), health=lambda: None),
        "elsewhere": Service("elsewhere", ["sleep", "60"], health=lambda: None),
    }
    try:
        stack.up(progress=lambda _line: None)
        first = {name: stack.supervised(name).pid() for name in ("daemon", "on_daemon", "elsewhere")}
        assert all(first.values())
        outcomes = {outcome.service: outcome.started for outcome in stack.up(progress=lambda _line: None)}
        assert made == ["hosts", "hosts"]
        assert outcomes == {"hosts": True, "daemon": True, "on_daemon": True, "elsewhere": False}
        again = {name: stack.supervised(name).pid() for name in first}
        assert again["daemon"] != first["daemon"] and again["on_daemon"] != first["on_daemon"]
        assert again["elsewhere"] == first["elsewhere"]
    finally:
        for name in ("daemon", "on_daemon", "elsewhere"):
            stack.supervised(name).stop(grace_s=1)


def test_an_unhealthy_service_times_out_with_the_reason(tmp_path):
    from stack.process import StackError
    from stack.services import Service

    stack = Stack(StackPaths(tmp_path / "state"))
    stack.factory.prepare_common = lambda: None
    stack.factory.write_info_file = lambda: None
    stack.services = {"stuck": Service("stuck", ["sh", "-c", "echo waiting for nothing; sleep 60"],
                                       health=lambda: "port 9 refused", start_timeout_s=1)}
    try:
        with pytest.raises(StackError, match=r"stuck not healthy after 1 s: port 9 refused[\s\S]*waiting for nothing"):
            stack.up(progress=lambda _line: None)
    finally:
        stack.supervised("stuck").stop(grace_s=1)


def test_the_holder_of_a_listening_port_is_found_and_told_apart_from_ours() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert [holder.pid for holder in holders(port)] == [os.getpid()]
        assert "pytest" in holders(port)[0].command or "python" in holders(port)[0].command
        assert foreign_holders((port,), {os.getpid()}) == {}
        foreign = foreign_holders((port,), set())
        assert [holder.pid for holder in foreign[port]] == [os.getpid()]
    assert holders(port) == [] and foreign_holders((port,), set()) == {}


def test_postgresql_is_stopped_with_a_fast_shutdown(stack, tmp_path):
    """SIGTERM is PostgreSQL's "smart" shutdown, which waits for every client to leave; Airflow's never do,
    so the stop ran into SIGKILL, crash recovery and a stale postmaster.pid that failed the next start."""
    import signal
    import sys
    import time

    from stack.process import Supervised

    assert stack.services["postgres"].stop_signal == signal.SIGINT
    assert stack.services["mariadb"].stop_signal == signal.SIGTERM
    process = Supervised("probe", tmp_path, tmp_path)
    handler = "import signal, sys, time; signal.signal(signal.SIGINT, lambda *_: sys.exit(0)); "
    process.start([sys.executable, "-c", handler + "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"],
                  {}, cwd=tmp_path)
    time.sleep(0.5)
    began = time.monotonic()
    assert process.stop(grace_s=10, first=signal.SIGINT)
    assert time.monotonic() - began < 5  # it left on the first signal, not on the SIGKILL after the grace
