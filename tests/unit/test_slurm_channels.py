"""A Slurm transport is a control channel plus a file channel, composed per connection (issue 17, point 6);
triggers serialize from one declaration of their arguments (point 7); the Slurm errors share one root."""

from __future__ import annotations

import ast
import asyncio
import importlib
import io
import itertools
import os
import stat
import tarfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from operators.provider import SLURM_CONNECTION_FIELDS
from operators.slurm.cli import LocalCommands, LocalRunner, SshCommands
from operators.slurm.files import SharedFiles, SshFiles, copy_plain_tree, extract_plain
from operators.slurm.hooks import SlurmHook
from operators.slurm.model import (
    ControllerUnreachable,
    JobAccounting,
    JobStatus,
    SlurmError,
    SlurmUnavailable,
)
from operators.slurm.rest import RestControl
from operators.slurm.retry import RetryWithDeadline
from operators.slurm.script import BatchJob, UnsafeScriptError
from operators.slurm.transport import ControlChannel, FileChannel, LogRequests, SlurmTransport
from operators.slurm.transports import FILE_CHANNELS, NoFileChannel, make_transport
from operators.slurm.triggers import SlurmJobTrigger, SlurmReconcileTrigger

SLURM_PACKAGE = Path(__file__).resolve().parents[2] / "operators" / "slurm"
REST = {"base_url": "http://slurmrestd.example.org:6820", "user": "hpcuser", "token": "jwt"}


# ---------------------------------------------------------------------------- a connection without a file channel

@dataclass
class FakeConnection:
    """What ``SlurmHook`` reads of an Airflow connection."""

    extra_dejson: dict[str, Any]
    host: str | None = "slurmrestd.example.org"
    port: int | None = 6820
    login: str | None = "hpcuser"
    password: str | None = "jwt"
    schema: str | None = "http"


def hook_for(extra: dict[str, Any], conn_id: str = "site_slurm", **fields: Any) -> SlurmHook:
    hook = SlurmHook(conn_id)
    hook._connection = FakeConnection(extra, **fields)
    return hook


@pytest.mark.parametrize("kind", ["rest", "pyslurm"])
def test_a_connection_that_does_not_say_how_files_move_fails_naming_the_field_and_its_values(kind: str) -> None:
    hook = hook_for({"transport": kind}, conn_id="site_slurm")
    with pytest.raises(NoFileChannel) as raised:
        hook.get_transport()
    message = str(raised.value)
    assert message.startswith(f"connection 'site_slurm': the {kind} transport reaches the Slurm controller, "
                              "not the cluster's files: add the extra field 'files'"), message
    for name, channel in FILE_CHANNELS.items():
        assert f"files: {name} - {channel.meaning}" in message
    assert "same paths" in message and "ssh_host" in message  # what each value means and needs
    assert isinstance(raised.value, SlurmError)


def test_the_test_button_shows_what_to_add() -> None:
    passed, message = hook_for({"transport": "rest"}, conn_id="site_slurm").test_connection()
    assert not passed and message.startswith("NoFileChannel: connection 'site_slurm':") and "'files'" in message


def test_a_connection_without_a_transport_is_rest_and_must_say_too() -> None:
    with pytest.raises(NoFileChannel, match="the rest transport"):
        hook_for({}).get_transport()


def test_an_unknown_file_channel_names_the_choices() -> None:
    with pytest.raises(SlurmError, match=r"unknown file channel files: 's3': choose one of shared, ssh$"):
        hook_for({"transport": "rest", "files": "s3"}).get_transport()


def test_files_over_ssh_beside_rest_need_the_login_node() -> None:
    with pytest.raises(SlurmError, match="files: ssh needs ssh_host"):
        hook_for({"transport": "rest", "files": "ssh"}).get_transport()


def test_an_unknown_transport_is_named_before_the_missing_file_channel() -> None:
    with pytest.raises(SlurmError, match=r"unknown Slurm transport 'sshh': choose one of local, pyslurm, rest, ssh$"):
        hook_for({"transport": "sshh"}).get_transport()


def test_the_connection_form_offers_the_file_channel_fields() -> None:
    assert {"files", "ssh_host", "ssh_port", "ssh_user"} <= set(SLURM_CONNECTION_FIELDS)
    described = SLURM_CONNECTION_FIELDS["files"]["description"]
    assert all(name in described for name in FILE_CHANNELS)
    assert "default" not in SLURM_CONNECTION_FIELDS["files"]["schema"], "no silent default file channel"


def test_every_slurm_connection_of_the_stack_composes_its_channels(tmp_path: Path) -> None:
    from stack.manager import Stack
    from stack.settings import StackPaths

    stack = Stack(StackPaths(tmp_path / "state"))
    stack.paths.ensure()
    stack.factory.secrets.ensure_slurm_jwt_key(os.getuid(), os.getgid())
    connections = stack.factory.airflow.connections()
    assert connections["factory_slurm_local"]["extra"]["files"] == "shared"
    composed = {}
    for conn_id in ("factory_slurm_local", "factory_slurm_cli", "factory_slurm_ssh"):
        definition = connections[conn_id]
        extra = {**definition["extra"], "control_dir": str(tmp_path / "ssh")}  # not the running stack's sockets
        fields = {key: definition.get(key) for key in ("host", "port", "login", "password", "schema")}
        transport = hook_for(extra, conn_id, **fields).get_transport()
        composed[conn_id] = (type(transport.control), type(transport.files))
    assert composed == {"factory_slurm_local": (RestControl, SharedFiles),
                        "factory_slurm_cli": (LocalCommands, SharedFiles),
                        "factory_slurm_ssh": (SshCommands, SshFiles)}


# ---------------------------------------------------------------------------- composition

class RecordingRunner(LocalRunner):
    """Runs nothing: records each command and answers ``answer``."""

    def __init__(self, answer: str = "") -> None:
        super().__init__(None)
        self.commands: list[list[str]] = []
        self.answer = answer

    def run(self, command: list[str], stdin: bytes | None = None) -> str:
        self.commands.append(command)
        return self.answer

    async def arun(self, command: list[str], stdin: bytes | None = None) -> str:
        return self.run(command, stdin)


def test_rest_with_shared_files_asks_slurmrestd_and_writes_files_here(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    transport = make_transport("rest", files="shared", **REST)
    assert (type(transport.control), type(transport.files), transport.kind) == (RestControl, SharedFiles, "rest")
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(transport.control, "_call", lambda method, path, body=None: calls.append((method, path)) or {})
    monkeypatch.setattr(transport.control, "_api_version", "v0.0.38")
    transport.cancel(12)
    transport.stage(str(tmp_path / "job"), {"job.sh": b"#!/bin/bash\n"}, None)
    assert calls == [("DELETE", "/slurm/v0.0.38/job/12")]
    assert (tmp_path / "job" / "job.sh").read_bytes() == b"#!/bin/bash\n"
    assert transport.read_logs({12: (str(tmp_path / "job" / "job.sh"), 3)}) == {12: b"bin/bash\n"}


def test_rest_with_ssh_files_moves_files_through_the_login_node_only(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    transport = make_transport("rest", files="ssh", ssh_host="login.example.org", ssh_port=2222,
                               key_file="/keys/id", control_dir=str(tmp_path), **REST)
    assert (type(transport.control), type(transport.files), transport.kind) == (RestControl, SshFiles, "rest")
    runner = transport.files.runner
    assert (runner.host, runner.port, runner.user) == ("login.example.org", 2222, "hpcuser")
    assert runner.key_file == "/keys/id"
    commands: list[list[str]] = []
    monkeypatch.setattr(runner, "run", lambda command, stdin=None: commands.append(command) or "")
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(transport.control, "_call", lambda method, path, body=None: calls.append((method, path)) or {})
    monkeypatch.setattr(transport.control, "_api_version", "v0.0.42")
    transport.remove("/cluster/job/job.env")
    transport.cancel(7)
    assert commands == [["rm", "-f", "--", "/cluster/job/job.env"]]
    assert calls == [("DELETE", "/slurm/v0.0.42/job/7")]


def test_ssh_files_beside_rest_log_in_as_the_named_user() -> None:
    transport = make_transport("rest", files="ssh", ssh_host="login.example.org", ssh_user="transfer",
                               control_dir="/tmp", **REST)
    assert (transport.files.runner.user, transport.files.runner.port) == ("transfer", 22)


def test_local_runs_commands_here_and_shares_the_file_system(tmp_path: Path) -> None:
    transport = make_transport("local", user="hpcuser")
    assert (type(transport.control), type(transport.files), transport.kind) == (LocalCommands, SharedFiles, "local")
    runner = transport.control.runner = RecordingRunner()
    transport.cancel(3)
    transport.stage(str(tmp_path / "job"), {"job.env": b"A=1\n"}, None)
    transport.remove(str(tmp_path / "job" / "job.env"))
    assert runner.commands == [["scancel", "3"]], "files never go through the command runner"
    assert not (tmp_path / "job" / "job.env").exists()


def test_ssh_sends_commands_and_files_through_one_login(tmp_path: Path) -> None:
    transport = make_transport("ssh", host="login.example.org", user="hpcuser", control_dir=str(tmp_path))
    assert (type(transport.control), type(transport.files), transport.kind) == (SshCommands, SshFiles, "ssh")
    assert transport.files.runner is transport.control.runner, "one ControlMaster for both"
    runner = transport.control.runner
    recorded: list[list[str]] = []
    runner.run = lambda command, stdin=None: recorded.append(command) or ""  # type: ignore[method-assign]
    transport.cancel(4)
    transport.remove("/cluster/job.env")
    assert recorded == [["scancel", "4"], ["rm", "-f", "--", "/cluster/job.env"]]


def test_a_transport_can_be_told_another_file_channel(tmp_path: Path) -> None:
    transport = make_transport("ssh", files="shared", host="login.example.org", user="hpcuser",
                               control_dir=str(tmp_path))
    assert (type(transport.control), type(transport.files)) == (SshCommands, SharedFiles)


@dataclass
class RecordingControl(ControlChannel):
    kind = "recording"
    calls: list[str] = field(default_factory=list)

    def submit(self, job: BatchJob, script: str) -> int:
        self.calls.append("submit")
        return 1

    def jobs(self) -> dict[int, JobStatus]:
        self.calls.append("jobs")
        return {1: JobStatus(1, "RUNNING", comment="c")}

    def accounting(self, job_ids: Any, since: datetime | None = None) -> dict[int, JobAccounting]:
        self.calls.append("accounting")
        return {1: JobAccounting(1, "COMPLETED", 0)}

    def cancel(self, job_id: int) -> None:
        self.calls.append("cancel")

    def describe(self) -> str:
        return "recording controller"


@dataclass
class RecordingFiles(FileChannel):
    calls: list[str] = field(default_factory=list)

    def stage(self, workdir: str, files: Any, owner: str | None) -> None:
        self.calls.append("stage")

    def remove(self, path: str) -> None:
        self.calls.append("remove")

    def fetch_folder(self, path: str, destination: Path) -> None:
        self.calls.append("fetch_folder")

    def tail(self, path: str, nbytes: int) -> bytes:
        self.calls.append("tail")
        return b""

    def read_logs(self, requests: LogRequests) -> dict[int, bytes]:
        self.calls.append("read_logs")
        return {}


def test_every_call_goes_to_its_channel(tmp_path: Path) -> None:
    control, files = RecordingControl(), RecordingFiles()
    transport = SlurmTransport(control, files)
    job = BatchJob(name="n", account=None, partition=None, cpus=1, memory="1G", time="00:01:00", gpus=0,
                   workdir="/w", commands=[["true"]])
    transport.submit(job, "#!/bin/bash\n")
    transport.jobs()
    transport.accounting([1])
    transport.cancel(1)
    assert [status.job_id for status in transport.find_active("c")] == [1]
    assert transport.final(1) is not None
    transport.stage("/w", {}, None)
    transport.remove("/w/job.env")
    transport.fetch_folder("/w/mlruns", tmp_path)
    transport.tail("/w/log", 10)
    transport.read_logs({1: ("/w/log", 0)})

    async def waits() -> None:
        await transport.async_jobs()
        await transport.async_accounting([1])
        await transport.async_cancel(1)
        await transport.async_read_logs({1: ("/w/log", 0)})
        await transport.async_remove("/w/job.env")

    asyncio.run(waits())
    assert control.calls == ["submit", "jobs", "accounting", "cancel", "jobs", "accounting",
                             "jobs", "accounting", "cancel"]
    assert files.calls == ["stage", "remove", "fetch_folder", "tail", "read_logs", "read_logs", "remove"]
    assert (transport.kind, transport.describe()) == ("recording", "recording controller")


def test_the_interfaces_import_no_implementation_and_the_registry_imports_inside_no_function() -> None:
    """The cycle transport.py <-> the transports is gone: the interfaces module names none of them."""
    interfaces = ast.parse((SLURM_PACKAGE / "transport.py").read_text())
    imported = {node.module for node in ast.walk(interfaces) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "asyncio", "abc", "collections.abc", "datetime", "pathlib", "typing",
                        "operators.slurm.budget", "operators.slurm.model", "operators.slurm.script"}, imported
    registry = ast.parse((SLURM_PACKAGE / "transports.py").read_text())
    functions = [node for node in ast.walk(registry) if isinstance(node, ast.FunctionDef)]
    assert not [node for function in functions for node in ast.walk(function)
                if isinstance(node, ast.Import | ast.ImportFrom)]


# ---------------------------------------------------------------------------- triggers: one declaration

# What the triggers serialized before their arguments became dataclass fields (captured from the earlier code):
# Airflow stores these and must rebuild the same triggers from them.
EARLIER_JOB_TRIGGER = ("operators.slurm.triggers.SlurmJobTrigger", {
    "conn_id": "factory_slurm_ssh", "job_id": 4242, "poll_interval_s": 0.5, "unreachable_limit_s": 120.0,
    "env_file": "/jobs/d/r/t.0.try1/job.env", "log_path": "/jobs/d/r/t.0.try1/slurm-4242.out", "requeue": True,
    "max_restarts": 2, "submitted_at": "2025-01-02T03:04:05+00:00", "task_identity": "airflow:d/r/t/0",
    "deferred_at": 1234.5})
EARLIER_JOB_TRIGGER_DEFAULTS = ("operators.slurm.triggers.SlurmJobTrigger", {
    "conn_id": "factory_slurm_local", "job_id": 7, "poll_interval_s": 2.0, "unreachable_limit_s": 600.0,
    "env_file": None, "log_path": None, "requeue": False, "max_restarts": 0, "submitted_at": None,
    "task_identity": None, "deferred_at": None})
EARLIER_RECONCILE_TRIGGER = ("operators.slurm.triggers.SlurmReconcileTrigger", {
    "conn_id": "factory_slurm_cli", "check_interval_s": 5.0, "run_for_s": 60.0, "poll_interval_s": 1.0})
EARLIER_RECONCILE_TRIGGER_DEFAULTS = ("operators.slurm.triggers.SlurmReconcileTrigger", {
    "conn_id": "factory_slurm_cli", "check_interval_s": 10.0, "run_for_s": 3600.0, "poll_interval_s": 2.0})


def test_triggers_serialize_as_before() -> None:
    """Built as the operators build them (positional first arguments), the same class path and kwargs."""
    job = SlurmJobTrigger("factory_slurm_ssh", 4242, 0.5, 120.0, env_file="/jobs/d/r/t.0.try1/job.env",
                          log_path="/jobs/d/r/t.0.try1/slurm-4242.out", requeue=True, max_restarts=2,
                          submitted_at="2025-01-02T03:04:05+00:00", task_identity="airflow:d/r/t/0",
                          deferred_at=1234.5)
    assert job.serialize() == EARLIER_JOB_TRIGGER
    assert list(job.serialize()[1]) == list(EARLIER_JOB_TRIGGER[1]), "the same keys in the same order"
    assert SlurmJobTrigger("factory_slurm_local", 7).serialize() == EARLIER_JOB_TRIGGER_DEFAULTS
    assert SlurmReconcileTrigger("factory_slurm_cli", 5.0, 60.0, 1.0).serialize() == EARLIER_RECONCILE_TRIGGER
    assert SlurmReconcileTrigger("factory_slurm_cli").serialize() == EARLIER_RECONCILE_TRIGGER_DEFAULTS


@pytest.mark.parametrize("stored", [EARLIER_JOB_TRIGGER, EARLIER_JOB_TRIGGER_DEFAULTS, EARLIER_RECONCILE_TRIGGER,
                                    EARLIER_RECONCILE_TRIGGER_DEFAULTS])
def test_stored_triggers_deserialize_and_round_trip(stored: tuple[str, dict[str, Any]]) -> None:
    """What the triggerer does with a stored row: import the class path, call it with the kwargs."""
    classpath, kwargs = stored
    module, _, name = classpath.rpartition(".")
    trigger = getattr(importlib.import_module(module), name)(**kwargs)
    assert trigger.serialize() == stored
    assert all(getattr(trigger, name) == value for name, value in kwargs.items())
    assert trigger.trigger_id is None and trigger.task_instance is None, "BaseTrigger's own state is set up"


# ---------------------------------------------------------------------------- errors: one root

def test_the_slurm_errors_share_one_root_and_keep_their_meaning() -> None:
    for error in (SlurmUnavailable, ControllerUnreachable, NoFileChannel, UnsafeScriptError):
        assert issubclass(error, SlurmError), error
    assert not issubclass(ControllerUnreachable, SlurmUnavailable), "past the deadline nothing retries"
    assert issubclass(UnsafeScriptError, ValueError) and issubclass(ControllerUnreachable, RuntimeError)


class RefusingTransport:
    """Cancels fail with ``error`` every time."""

    def __init__(self, error: SlurmError) -> None:
        self.error = error

    def cancel(self, job_id: int) -> None:
        raise self.error


def test_cancelling_a_cleared_tries_job_still_fails_the_task_past_the_deadline() -> None:
    """``ControllerUnreachable`` is a ``SlurmError`` now; the clause for an already ended job must not take it."""
    from operators.slurm.operators import SlurmJobOperator

    operator = SlurmJobOperator(task_id="t", commands=[["true"]])
    ten_seconds_per_look = itertools.count(0, 10).__next__
    unanswered = RefusingTransport(SlurmUnavailable("Socket timed out"))
    with pytest.raises(ControllerUnreachable):
        operator._cancel_cleared(unanswered, RetryWithDeadline(5, 0.001, clock=ten_seconds_per_look), [1])
    ended = RefusingTransport(SlurmError("Job has already finished"))
    operator._cancel_cleared(ended, RetryWithDeadline(5, 0.001, clock=ten_seconds_per_look), [1])


# ---------------------------------------------------------------- folders coming back from a job

def _tar_of(members: list[tuple[tarfile.TarInfo, bytes]]) -> tarfile.TarFile:
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for info, content in members:
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content) if info.isfile() else None)
    archive.seek(0)
    return tarfile.open(fileobj=archive, mode="r")


def _member(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, link
    return info


def test_a_fetched_folder_brings_back_files_and_folders_only_and_nothing_outside(tmp_path: Path):
    """A job writes its folder; a link to /etc/shadow or a ``../`` name in it must not reach the worker."""
    tar = _tar_of([(_member("mlruns", tarfile.DIRTYPE, 0o755), b""), (_member("mlruns/meta.yaml"), b"ok"),
                   (_member("run.sh", mode=0o4755), b"#!/bin/sh"), (_member("../escape"), b"x"),
                   (_member("/abs"), b"x"), (_member("shadow", tarfile.SYMTYPE, link="/etc/shadow"), b""),
                   (_member("hard", tarfile.LNKTYPE, link="/etc/passwd"), b""),
                   (_member("dev", tarfile.CHRTYPE), b"")])
    destination = tmp_path / "into"
    skipped = extract_plain(tar, destination)
    assert sorted(skipped) == ["../escape", "/abs", "dev", "hard", "shadow"]
    assert (destination / "mlruns" / "meta.yaml").read_bytes() == b"ok"
    assert (destination / "run.sh").stat().st_mode & 0o7777 == 0o755, "setuid is never kept"
    assert sorted(path.name for path in tmp_path.rglob("*")) == ["into", "meta.yaml", "mlruns", "run.sh"]


def test_a_folder_on_a_shared_file_system_is_copied_without_following_links(tmp_path: Path):
    job = tmp_path / "job"
    (job / "mlruns").mkdir(parents=True)
    (job / "mlruns" / "meta.yaml").write_text("ok")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key").write_text("private")
    (job / "key").symlink_to(secret / "key")
    (job / "folder").symlink_to(secret)
    skipped = copy_plain_tree(job, tmp_path / "into")
    assert sorted(skipped) == ["folder", "key"]
    assert sorted(str(p.relative_to(tmp_path / "into")) for p in (tmp_path / "into").rglob("*")) == [
        "mlruns", "mlruns/meta.yaml"]


def test_ssh_staging_streams_a_spooled_tar_the_command_reads_itself(tmp_path: Path) -> None:
    """The staging tar goes to a temporary file that tar (ssh on a real site) reads from directly: no second
    in-memory copy of the files (a 1 GB folder used to peak at 2 GiB). Here the runner is local commands."""
    files = {"job.sh": b"#!/bin/bash\necho hi\n", "data.bin": os.urandom(3 * 2**20)}
    SshFiles(LocalRunner()).stage(str(tmp_path / "job"), files, None)
    staged = {path.name: path.read_bytes() for path in (tmp_path / "job").iterdir()}
    assert staged == files
    assert {oct((tmp_path / "job" / name).stat().st_mode & 0o777) for name in files} == {"0o600"}
    with (tmp_path / "job" / "data.bin").open("rb") as handle:  # a file as stdin, read by the command itself
        assert LocalRunner().run(["wc", "-c"], stdin=handle).split()[0] == str(3 * 2**20)


class EarlyExit(LocalRunner):
    """A login node whose shell ends at once, reading nothing of the tar it is sent."""

    def run(self, command: list[str], stdin=None) -> str:
        return super().run(["sh", "-c", "echo refused >&2; exit 3"], stdin=stdin)


def test_ssh_staging_streams_the_tar_through_a_pipe_and_survives_a_remote_side_that_quits(tmp_path: Path) -> None:
    """The file channel's tar goes into the remote command's stdin as it is written; run here with the same
    shell line a login node gets. A remote side that ends without reading fails the staging, never hangs it."""
    big = os.urandom(3 * 2**20)  # more than a pipe holds: the writer must wait for the reader
    files = {"job.sh": b"#!/bin/bash\necho hi\n", "data/big.bin": big}
    SshFiles(LocalRunner()).stage(str(tmp_path / "job"), files, None)
    assert (tmp_path / "job" / "job.sh").read_bytes() == files["job.sh"]
    assert (tmp_path / "job" / "data" / "big.bin").read_bytes() == big
    assert stat.S_IMODE((tmp_path / "job" / "job.sh").stat().st_mode) == 0o600  # umask 077 on the node
    started = time.monotonic()
    with pytest.raises(SlurmError, match="refused"):
        SshFiles(EarlyExit()).stage(str(tmp_path / "other"), files, None)
    assert time.monotonic() - started < 10 and threading.active_count() < 5


def test_triggers_share_the_status_answer_of_a_cluster_across_its_connections_and_processes(monkeypatch) -> None:
    """Two connections to one cluster (SSH and slurmrestd), in any triggerer on the host, read one copy."""
    from operators.slurm import triggers
    from operators.slurm.shared_status import SharedStatusTransport

    extras = {"b_ssh": {"transport": "ssh", "cluster": "site_b", "known_hosts": "/k"},
              "b_rest": {"transport": "rest", "cluster": "site_b", "files": "ssh", "ssh_host": "b-login"},
              "a_ssh": {"transport": "ssh", "cluster": "site_a", "known_hosts": "/k"}}
    monkeypatch.setattr(SlurmHook, "get_connection", classmethod(lambda cls, conn_id: FakeConnection(extras[conn_id])))
    made = {conn_id: triggers.connection_transport(conn_id, 2.0) for conn_id in extras}
    assert all(isinstance(transport, SharedStatusTransport) for transport in made.values())
    assert made["b_ssh"].file == made["b_rest"].file != made["a_ssh"].file
    assert made["b_ssh"].max_age_s == 2.0
    assert made["b_ssh"].transport.kind != made["b_rest"].transport.kind  # each still talks its own way
