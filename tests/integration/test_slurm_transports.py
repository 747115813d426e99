"""Every Slurm transport against the real local cluster (Slurm 22.05), and the sites' own ways in against
the two sites (22.05 and 24.11, nothing shared with this host): one suite, the same answers.

The watcher and the operators treat rest, local, ssh and pyslurm as interchangeable, so each case runs
on all of them (pyslurm: 22.5.3, which the stack builds into this venv; without it the pyslurm rows skip
saying how to build it, or fail under FACTORY_REQUIRE_PYSLURM=1), and on each site through its login
node (``ssh@site_a``: commands and files over one SSH connection) and through slurmrestd with files over
SSH (``rest@site_a``), built from the sites' Airflow connections. Jobs are tiny (1 CPU, 128M, seconds
long) and any job a test leaves behind is cancelled.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from operators.slurm.hooks import SlurmHook
from operators.slurm.model import JobAccounting, JobStatus, SlurmError, SlurmUnavailable
from operators.slurm.rest import RestControl
from operators.slurm.script import BatchJob, render
from operators.slurm.transport import SlurmTransport
from operators.slurm.transports import make_transport
from stack.clusters.site import JOB_WORKDIR, SITES
from stack.settings import JOB_USER
from tests.integration.pyslurm_sites import require_host_pyslurm

LOCAL_TRANSPORTS = ("rest", "local", "ssh", "pyslurm")
SITE_TRANSPORTS = tuple(f"{kind}@{site.name}" for site in SITES for kind in ("ssh", "rest"))
# set when this suite runs on a site's login node (test_login_node_transport.py starts it there): then its one
# case is the site's local commands, as an Edge worker there uses them, and the stack's state is out of sight
ON_LOGIN_NODE = os.environ.get("FACTORY_TEST_ON_LOGIN_NODE")
TRANSPORTS = (f"local@{ON_LOGIN_NODE}",) if ON_LOGIN_NODE else (*LOCAL_TRANSPORTS, *SITE_TRANSPORTS)
JOBS_ROOT = "/var/lib/aifactory/jobs/transport-tests"
SITE_JOBS_ROOT = f"{JOB_WORKDIR}/transport-tests"  # on the site's file system
PYTHON = "/usr/bin/python3"  # the node's system Python: the job runtime venv is not needed for these jobs
REST_DROPS_DIRECTIVES = ("RestControl.submit sends rest_job_fields(job) only and slurmrestd ignores #SBATCH "
                         "lines, so BatchJob.extra_directives (--begin) never reach Slurm")
T = TypeVar("T")


if ON_LOGIN_NODE:
    @pytest.fixture(scope="session")
    def stack_info() -> dict[str, Any]:
        """On a login node the stack's info file is hidden (the node sees the site, not the Airflow host)."""
        return {"job_user": JOB_USER}


def site_transport(kind: str) -> SlurmTransport:
    """``ssh@site_a`` or ``rest@site_b``: the transport the site's Airflow connection gives; ``local@site_a``
    (on that site's login node only): its Slurm commands, run as the job user, and its file system."""
    from stack.clusters.site import SiteLayout
    from stack.services.sites import SiteCluster
    from stack.settings import StackPaths
    from tests.integration.test_two_sites import FakeConnection, _problem

    way, name = kind.split("@")
    if way == "local":
        assert name == ON_LOGIN_NODE, f"{kind} runs on {name}'s login node only"
        return make_transport("local", user=JOB_USER, cluster=name)
    [site] = [site for site in SITES if site.name == name]
    paths = StackPaths.from_env()
    if not SiteLayout(paths, site).info_file.exists():
        _problem(f"{name} is not up: run ./factory stack up (or python -m stack up --sites)")
    connection = f"factory_slurm_{name}" + ("_rest" if way == "rest" else "")
    hook = SlurmHook(connection)
    hook._connection = FakeConnection(SiteCluster(paths, site).connections()[connection])
    return hook.get_transport()


def build_transport(kind: str, stack_info: dict[str, Any], **overrides: Any) -> SlurmTransport:
    """The transport a connection of this kind would give, from the stack's own addresses and keys (rest and
    pyslurm with the file system this host shares with the cluster, as the stack's connections say)."""
    user = stack_info["job_user"]
    if kind == "rest":
        rest = stack_info["slurmrestd"]
        return make_transport("rest", **{"base_url": rest["url"], "user": user, "token": rest["token"],
                                         "files": "shared", **overrides})
    if kind == "ssh":
        ssh = stack_info["ssh"]
        settings = {"host": ssh["host"], "port": ssh["port"], "user": user, "key_file": ssh["key_file"],
                    "known_hosts": ssh["known_hosts"]}
        return make_transport("ssh", **{**settings, **overrides})
    if kind == "pyslurm":
        require_host_pyslurm()
    return make_transport(kind, **{"user": user, "files": "shared", **overrides})


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float = 30.0, pause_s: float = 0.25) -> T:
    """Poll ``probe`` until it returns something; fail naming ``what`` when it never does."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (value := probe()) is not None:
            return value
        time.sleep(pause_s)
    pytest.fail(f"{what}: not within {timeout_s:.0f} s")


@dataclass
class Cluster:
    """One transport plus the jobs a test submitted through it (cancelled at teardown if still active)."""

    kind: str
    transport: SlurmTransport
    test: str
    job_user: str
    submitted: list[tuple[SlurmTransport, int]] = field(default_factory=list)

    @property
    def site(self) -> str | None:
        return self.kind.split("@")[1] if "@" in self.kind else None

    @property
    def way(self) -> str:
        return self.kind.split("@")[0]

    def job(self, commands: list[list[str]], suffix: str = "", **fields: Any) -> BatchJob:
        settings: dict[str, Any] = {
            "name": f"tt-{self.kind}-{self.test.removeprefix('test_')[:24]}", "account": "demo", "partition": None,
            "cpus": 1, "memory": "128M", "time": "00:02:00", "gpus": 0,
            "workdir": f"{SITE_JOBS_ROOT if self.site else JOBS_ROOT}/{self.kind}/{self.test}{suffix}",
            "commands": commands,
            "comment": f"transport-test:{self.kind}:{uuid.uuid4().hex[:12]}",
            # the default B:USR2@300 exceeds the 2-minute limit: slurmctld's first periodic check (within
            # ~30 s) would signal at once and the script's forward() would kill a child without a handler
            "signal": "B:USR2@30"}
        return BatchJob(**{**settings, **fields})

    def submit(self, job: BatchJob, via: SlurmTransport | None = None) -> int:
        transport = via or self.transport
        script = render(job)
        transport.stage(job.workdir, {"job.sh": script.encode()}, self.job_user)
        job_id = transport.submit(job, script)
        self.submitted.append((transport, job_id))
        return job_id

    def status(self, job_id: int, states: set[str], timeout_s: float = 20.0) -> JobStatus:
        def probe() -> JobStatus | None:
            status = self.transport.jobs().get(job_id)
            return status if status is not None and status.state in states else None

        return wait_for(f"job {job_id} reaching {sorted(states)} via {self.kind}", probe, timeout_s)

    def final(self, job_id: int, timeout_s: float = 30.0) -> JobAccounting:
        return wait_for(f"accounting of job {job_id} via {self.kind}", lambda: self.transport.final(job_id), timeout_s)

    def cancel_leftovers(self) -> None:
        for transport, job_id in self.submitted:
            with contextlib.suppress(SlurmError):
                status = transport.jobs().get(job_id)
                if status is not None and not status.finished:
                    transport.cancel(job_id)


@pytest.fixture(params=TRANSPORTS)
def cluster(request: pytest.FixtureRequest, stack_info: dict[str, Any]) -> Iterator[Cluster]:
    kind = request.param
    transport = site_transport(kind) if "@" in kind else build_transport(kind, stack_info)
    setup = Cluster(kind, transport, request.node.originalname, stack_info["job_user"])
    try:
        yield setup
    finally:
        setup.cancel_leftovers()


def test_describe_names_slurm_2205_and_the_way_in(cluster: Cluster, stack_info: dict[str, Any]):
    if cluster.site:  # each site says its own release and its own way in
        release = {"site_a": "22.05", "site_b": "24.11"}[cluster.site]
        text = cluster.transport.describe()
        assert re.search(rf"slurm\S*\s+{re.escape(release)}\.", text, re.IGNORECASE), text
        assert {"ssh": "via ssh commands", "rest": "via slurmrestd", "local": "via local commands"}[cluster.way] in text
        return
    ssh = stack_info["ssh"]
    way_in = {"rest": f"via slurmrestd v0.0.38 at {stack_info['slurmrestd']['url']}",
              "local": "via local commands",
              "ssh": f"via ssh commands; partitions: cpu, gpu on {ssh['user']}@{ssh['host']}:{ssh['port']}",
              "pyslurm": "via pyslurm"}[cluster.kind]
    text = cluster.transport.describe()
    assert re.search(r"slurm\S*\s+22\.05\.", text, re.IGNORECASE), text
    assert way_in in text


def test_a_job_that_exits_0_is_accounted_completed(cluster: Cluster, stack_info: dict[str, Any]):
    job_id = cluster.submit(cluster.job([["echo", "done"]]))
    record = cluster.final(job_id)
    assert (record.job_id, record.state, record.exit_code) == (job_id, "COMPLETED", 0)
    assert record.elapsed_s is not None and record.cpu_time_s is not None, record
    assert record.user == stack_info["job_user"]


def test_exit_3_is_failed_with_exit_code_3(cluster: Cluster):
    # 22.05's JSON accounting records 0 here: the rest transport must take the controller's code
    job_id = cluster.submit(cluster.job([["bash", "-c", "exit 3"]]))
    record = cluster.final(job_id)
    assert (record.state, record.exit_code) == ("FAILED", 3), record


def test_a_job_over_its_memory_limit_ends_out_of_memory(cluster: Cluster):
    if cluster.site:
        pytest.skip("the sites' nodes enforce no memory limit (namespaced hosts without cgroups: task/none, "
                    "proctrack/linuxproc); the local cluster's cgroup limits are tested on every transport")
    grab = [PYTHON, "-c", "x = bytearray(400 * 1024 * 1024); import time; time.sleep(2)"]
    job_id = cluster.submit(cluster.job([grab], memory="64M"))
    assert cluster.final(job_id).state == "OUT_OF_MEMORY"


def test_a_job_killed_by_a_signal_reads_128_plus_n(cluster: Cluster):
    """SIGKILL to the batch shell: sacct says ``0:9``, v0.0.38 JSON a wait status of 9; every transport says 137."""
    job_id = cluster.submit(cluster.job([["bash", "-c", "kill -9 $PPID"]]))
    record = cluster.final(job_id)
    assert (record.state, record.exit_code) == ("FAILED", 137), record


def test_cancelling_a_running_job_ends_it_cancelled_within_seconds(cluster: Cluster):
    job_id = cluster.submit(cluster.job([["sleep", "60"]]))
    cluster.status(job_id, {"RUNNING"})
    cancelled_at = time.monotonic()
    cluster.transport.cancel(job_id)
    record = cluster.final(job_id, timeout_s=15)
    assert record.state == "CANCELLED", record
    assert time.monotonic() - cancelled_at < 10, "the job outlived its cancel by more than 10 s"


def test_find_active_returns_exactly_the_running_job_by_its_comment(cluster: Cluster):
    job = cluster.job([["sleep", "60"]])
    job_id = cluster.submit(job)
    cluster.status(job_id, {"RUNNING"})
    assert [status.job_id for status in cluster.transport.find_active(job.comment)] == [job_id]
    listed = cluster.transport.jobs()[job_id]
    assert (listed.state, listed.comment, listed.workdir) == ("RUNNING", job.comment, job.workdir)


def test_read_logs_from_an_offset_returns_only_the_new_bytes(cluster: Cluster):
    job = cluster.job([["echo", "first line"], ["sleep", "1"], ["echo", "second line"]])
    job_id = cluster.submit(job)
    log = f"{job.workdir}/slurm-{job_id}.out"

    def first_part() -> bytes | None:
        chunk = cluster.transport.read_logs({job_id: (log, 0)})[job_id]
        return chunk if b"first line\n" in chunk else None

    head = wait_for("the job's first line", first_part, timeout_s=20, pause_s=0.1)
    offset = head.index(b"first line\n") + len(b"first line\n")
    cluster.final(job_id)
    whole = cluster.transport.read_logs({job_id: (log, 0)})[job_id]
    new = cluster.transport.read_logs({job_id: (log, offset)})[job_id]
    assert new == whole[offset:]
    assert new.startswith(b"second line\n") and b"first line" not in new, new


def test_a_job_that_may_not_start_yet_is_pending_with_reason_begintime(cluster: Cluster, stack_info: dict[str, Any]):
    job = cluster.job([["true"]], extra_directives=["--begin=now+1hour"])
    # rest and pyslurm cannot ask for a begin time (neither reads #SBATCH lines): sbatch submits, their view is checked
    if cluster.site:  # on a site, sbatch through its login node
        via = site_transport(f"ssh@{cluster.site}") if cluster.way == "rest" else None
    else:
        via = build_transport("local", stack_info) if cluster.kind in ("rest", "pyslurm") else None
    job_id = cluster.submit(job, via=via)
    status = cluster.status(job_id, {"PENDING", "RUNNING", "COMPLETED"})
    assert (status.state, status.reason) == ("PENDING", "BeginTime"), status
    expected_start = datetime.fromisoformat(status.start_time or "")
    assert timedelta(minutes=58) < expected_start - datetime.now() <= timedelta(hours=1), status.start_time
    assert [active.job_id for active in cluster.transport.find_active(job.comment)] == [job_id]
    cluster.transport.cancel(job_id)
    assert cluster.final(job_id, timeout_s=15).state == "CANCELLED"


def test_rest_refuses_directives_it_would_drop(stack_info: dict[str, Any], request: pytest.FixtureRequest):
    """slurmrestd ignores #SBATCH lines: a --begin directive must fail loudly, not run the job at once."""
    rest = Cluster("rest", build_transport("rest", stack_info), request.node.originalname, stack_info["job_user"])
    try:
        with pytest.raises(SlurmError, match=r"ignores #SBATCH lines.*--begin=now\+1hour"):
            rest.submit(rest.job([["true"]], extra_directives=["--begin=now+1hour"]))
    finally:
        rest.cancel_leftovers()


def test_gpu_hours_are_allocated_gpus_times_elapsed(cluster: Cluster):
    job_id = cluster.submit(cluster.job([["sleep", "1"]], partition="gpu", gpus=1))
    record = cluster.final(job_id)
    assert record.state == "COMPLETED", record
    assert record.gpus == 1
    assert record.elapsed_s is not None and record.elapsed_s >= 1, record
    assert record.gpu_hours == round(record.elapsed_s / 3600, 6)


# SSH: one login per cluster, host keys always checked.

def established_to_login_node(port: int) -> list[str]:
    """This machine's client-side TCP connections to the login node, with the owning process."""
    out = subprocess.run(["ss", "-tnpH", "state", "established", f"( dport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line.strip()]


def test_concurrent_ssh_calls_share_one_tcp_connection(stack_info: dict[str, Any]):
    ssh = stack_info["ssh"]
    transport = build_transport("ssh", stack_info)
    samples: list[list[str]] = []
    calls_running = threading.Event()
    calls_running.set()

    def sample() -> None:
        while calls_running.is_set():
            samples.append(established_to_login_node(ssh["port"]))
            time.sleep(0.02)

    def five_calls(_: int) -> list[dict[int, JobStatus]]:  # long enough a burst for ss to look at
        return [transport.jobs() for _ in range(5)]

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with ThreadPoolExecutor(max_workers=20) as pool:
            answers = [answer for answers in pool.map(five_calls, range(20)) for answer in answers]
    finally:
        calls_running.clear()
        sampler.join()

    assert len(answers) == 100 and all(isinstance(answer, dict) for answer in answers)
    check = subprocess.run(["ssh", "-F", "/dev/null", "-o", f"ControlPath={transport.control.runner.control_path}",
                            "-O", "check", f"{ssh['user']}@{ssh['host']}"], capture_output=True, text=True)
    master = re.search(r"pid=(\d+)", check.stderr)
    assert master, f"no shared master after the calls: {check.stderr}"
    assert len(samples) >= 3, "the calls ended before the connections could be counted"
    assert {len(lines) for lines in samples} == {1}, f"connections to :{ssh['port']} while calls ran: {samples}"
    assert f"pid={master.group(1)}," in samples[-1][0], f"the one connection is not the master's: {samples[-1]}"


def test_a_wrong_host_key_fails_with_host_key_verification(stack_info: dict[str, Any], tmp_path: Path):
    ssh = stack_info["ssh"]
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "impostor")], check=True)
    key_type, key = (tmp_path / "impostor.pub").read_text().split()[:2]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[{ssh['host']}]:{ssh['port']} {key_type} {key}\n")
    # a short folder of its own: a unix socket path may not exceed 107 bytes, and the real master must not serve
    with tempfile.TemporaryDirectory(prefix="tt-ssh-", dir="/tmp") as control_dir:
        transport = build_transport("ssh", stack_info, known_hosts=str(known_hosts), control_dir=control_dir)
        with pytest.raises(SlurmError, match=r"(?i)host key verification failed") as raised:
            transport.jobs()
        assert not isinstance(raised.value, SlurmUnavailable), "a wrong host key is not worth retrying"
        assert not transport.control.runner.control_path.exists(), "no master may be left after a refused host key"


# REST: API version negotiation.

def test_rest_auto_negotiates_v0_0_38_on_slurm_2205(stack_info: dict[str, Any]):
    transport = build_transport("rest", stack_info, api_version="auto")
    assert isinstance(transport.control, RestControl)
    assert transport.control.api_version == "v0.0.38"


def test_rest_refuses_a_server_offering_only_unknown_versions(monkeypatch: pytest.MonkeyPatch):
    transport = RestControl("http://slurmrestd.invalid:6820", user="hpcuser", token="unused")
    monkeypatch.setattr(transport, "_call", lambda method, path, body=None: {"paths": {"/slurm/v0.0.99/ping": {}}})
    with pytest.raises(SlurmError, match=r"offers v0\.0\.99; this client speaks v0\.0\.45, .*v0\.0\.38"):
        transport.api_version  # noqa: B018 - reading the property negotiates


def test_a_dead_ssh_master_is_replaced_not_bypassed(stack_info: dict[str, Any], tmp_path: Path):
    """A master killed hard leaves its socket file; ssh would quietly fall back to one login per call."""
    import os
    import signal

    transport = build_transport("ssh", stack_info, control_dir=str(tmp_path))
    transport.jobs()
    runner = transport.control.runner
    check = subprocess.run(["ssh", *runner._options(), "-O", "check", f"{runner.user}@{runner.host}"],
                           capture_output=True, text=True)
    first_master = int(re.search(r"pid=(\d+)", check.stderr).group(1))
    os.kill(first_master, signal.SIGKILL)
    time.sleep(0.5)
    assert runner.control_path.exists(), "the killed master left its socket behind"
    transport.jobs()
    check = subprocess.run(["ssh", *runner._options(), "-O", "check", f"{runner.user}@{runner.host}"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert int(re.search(r"pid=(\d+)", check.stderr).group(1)) != first_master
    subprocess.run(["ssh", *runner._options(), "-O", "exit", f"{runner.user}@{runner.host}"], capture_output=True)
