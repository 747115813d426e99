"""The two local sites (stack/clusters) against their real daemons: Slurm 22.05 on site A, 24.11 on site B.

Each case runs on both sites, from the Airflow host's side only: over SSH to the login node, over HTTP to
slurmrestd, and through the project's own transports built from the sites' Airflow connections. What a
case checks on a node it checks by logging in, as a user of the site would. Without the sites (``./factory
stack up``, or ``python -m stack up --sites`` beside a running stack) the module skips and says so, unless
``FACTORY_REQUIRE_STACK=1`` and the sites are on (``FACTORY_WITH_SITES`` unset or 1): then it fails.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from operators.slurm.hooks import SlurmHook
from operators.slurm.model import JobAccounting
from operators.slurm.script import BatchJob, render
from operators.slurm.transport import SlurmTransport
from stack.clusters.site import JOB_WORKDIR, SITES, Site, SiteLayout
from stack.services import http_get
from stack.services.sites import SiteCluster
from stack.settings import StackPaths

RELEASES = {"site_a": "22.05", "site_b": "24.11"}


@dataclass
class FakeConnection:
    """An Airflow connection as ``SlurmHook`` reads it, from the stack's own connection definition."""

    definition: dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        if name == "extra_dejson":
            return self.definition["extra"]
        if name in ("host", "port", "login", "password", "schema"):
            return self.definition.get(name)
        raise AttributeError(name)


@dataclass
class SiteUnderTest:
    site: Site
    cluster: SiteCluster
    info: dict[str, Any]

    @property
    def name(self) -> str:
        return self.site.name

    def ssh(self, command: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
        """``command`` on the login node as the job user, host key checked: the way the Airflow host goes in."""
        login = self.info["login"]
        argv = ["ssh", "-F", "/dev/null", "-p", str(login["port"]), "-i", login["key_file"], "-o", "IdentitiesOnly=yes",
                "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o",
                f"UserKnownHostsFile={login['known_hosts']}", "-o", "ConnectTimeout=5",
                f"{login['user']}@{login['host']}", command]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)

    def on_login(self, command: str, timeout_s: float = 60) -> str:
        result = self.ssh(command, timeout_s)
        assert result.returncode == 0, f"{self.name}: {command}: {result.stderr or result.stdout}"
        return result.stdout

    def transport(self, connection: str) -> SlurmTransport:
        definition = self.cluster.connections()[connection]
        hook = SlurmHook(connection)
        hook._connection = FakeConnection(definition)
        return hook.get_transport()

    def rest(self, path: str, token: str | None = None) -> tuple[int, bytes]:
        rest = self.info["slurmrestd"]
        headers = {"X-SLURM-USER-NAME": rest["user"], "X-SLURM-USER-TOKEN": token or rest["token"]}
        return http_get(f"{rest['url']}{path}", headers, timeout_s=10)


def _problem(message: str) -> None:
    required = os.environ.get("FACTORY_REQUIRE_STACK") == "1" and os.environ.get("FACTORY_WITH_SITES", "1") != "0"
    if required:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module", params=SITES, ids=lambda site: site.name)
def site(request: pytest.FixtureRequest) -> SiteUnderTest:
    site: Site = request.param
    paths = StackPaths.from_env()
    info_file = SiteLayout(paths, site).info_file
    if not info_file.exists():
        _problem(f"{site.name} is not up (no {info_file}): run ./factory stack up (or python -m stack up --sites)")
    under_test = SiteUnderTest(site, SiteCluster(paths, site), json.loads(info_file.read_text()))
    login = under_test.ssh("true", timeout_s=20)
    if login.returncode != 0:
        _problem(f"{site.name}: the login node {under_test.info['login']['host']} does not let the job user in: "
                 f"{login.stderr.strip()}")
    return under_test


def wait_for_accounting(site: SiteUnderTest, job_id: str, nodes: int, timeout_s: float = 60) -> list[str]:
    """State, account, node list, user and exit code once the job is finished and its node list settled:
    22.05's sacct says COMPLETED with the first node only for ~2 s before the whole list arrives."""
    deadline = time.monotonic() + timeout_s
    row: list[str] = []
    while time.monotonic() < deadline:
        out = site.on_login(f"sacct -X -n -P -j {job_id} -o State,Account,NodeList,User,ExitCode,NNodes")
        row = out.strip().split("|") if out.strip() else []
        if row and row[0] not in ("PENDING", "RUNNING", "COMPLETING", "REQUEUED") and row[5] == str(nodes) \
                and "[" in row[2]:
            return row[:5]
        time.sleep(0.5)
    pytest.fail(f"{site.name}: job {job_id} not finished in {timeout_s:.0f} s: {row}")


def test_sinfo_on_the_login_node_shows_the_two_compute_nodes_idle(site: SiteUnderTest):
    deadline = time.monotonic() + 20  # a job of an earlier test may still be completing
    while True:
        out = site.on_login("sinfo -h -N -p cpu -o '%N %t'")
        states = dict(line.split() for line in out.splitlines())
        if set(states.values()) == {"idle"} or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert states == {node: "idle" for node in site.info["computes"]}
    assert site.on_login("sinfo -V").split()[-1].startswith(RELEASES[site.name])


def test_every_node_is_its_own_host_to_slurm_and_to_the_network(site: SiteUnderTest):
    nodes = site.info["nodes"]
    lines = site.on_login("srun -N2 -p cpu sh -c 'echo $(hostname) $(hostname -I)' | sort").splitlines()
    assert [line.split() for line in lines] == [[name, nodes[name]] for name in site.info["computes"]]
    login = site.on_login("echo $(hostname) $(hostname -I)").split()
    assert login == [f"{site.site.letter}-login", site.info["login"]["host"]]
    ctl = site.site.ctl.hostname
    assert f"at {ctl} is UP" in site.on_login("scontrol ping")


def test_a_two_node_job_writes_to_the_site_file_system_which_the_host_does_not_see(site: SiteUnderTest):
    """The issue's example: ``sbatch -N2 --wrap 'srun hostname'`` from the login node."""
    output = f"{JOB_WORKDIR}/two-nodes-{uuid.uuid4().hex[:8]}.out"
    job_id = site.on_login(f"sbatch --parsable -N2 -o {output} --wrap 'srun hostname'").strip().split(";")[0]
    state, account, node_list, user, exit_code = wait_for_accounting(site, job_id, nodes=2)
    assert (state, account, user, exit_code) == ("COMPLETED", "demo", "hpcuser", "0:0")
    assert node_list == f"{site.site.letter}-node[1-2]"
    assert sorted(site.on_login(f"cat {output}").split()) == site.info["computes"]
    assert not Path(output).exists(), "the Airflow host must not see the site's file system"
    site.on_login(f"rm -f {output}")


def test_the_site_sees_nothing_of_the_airflow_host(site: SiteUnderTest):
    state = str(StackPaths.from_env().state)
    assert site.on_login(f"ls -A {state}").split() == ["venvs"], "only the Python environments, read-only"
    assert site.ssh(f"touch {state}/venvs/x").returncode != 0
    assert site.on_login("cat /etc/hosts").split()[-8:] == [
        part for name, address in site.info["nodes"].items() for part in (address, name)]
    # the node's loopback is its own: the host's S3, MLflow, Airflow on 127.0.0.1 are not there
    for port in (8333, 5000, 8080, 2222):
        assert site.ssh(f"timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}'").returncode != 0, port


def test_the_nodes_have_the_site_s_subnet_and_nothing_else(site: SiteUnderTest):
    subnet = str(site.site.subnet)
    assert site.on_login("ip -4 route").split()[0] == subnet
    assert len(site.on_login("ip -4 route").splitlines()) == 1, "no default route: nothing leaves the site"
    assert site.on_login("cat /proc/sys/net/ipv4/ip_forward").strip() == "0"
    addresses = site.on_login("ip -o addr show | awk '{print $2, $4}'").split("\n")
    expected = ["lo 127.0.0.1/8", f"eth0 {site.info['login']['host']}/24"]
    assert sorted(line for line in addresses if line) == sorted(expected)
    other = next(other for other in SITES if other.name != site.name)
    unreachable = site.ssh(f"timeout 3 bash -c 'exec 3<>/dev/tcp/{other.login.address}/22'")
    assert unreachable.returncode != 0 and "unreachable" in unreachable.stderr.lower(), unreachable.stderr


def test_slurmrestd_answers_with_the_site_s_own_token_only(site: SiteUnderTest):
    ping = site.info["slurmrestd"]["ping"]
    status, body = site.rest(f"/slurm/{ping}/ping")
    assert status == 200, body[:300]
    assert site.site.ctl.hostname in body.decode() and '"UP"' in body.decode()
    assert site.rest(f"/slurm/{ping}/jobs")[0] == 200
    other = next(other for other in SITES if other.name != site.name)
    foreign = SiteCluster(StackPaths.from_env(), other).secrets.token()
    # 22.05 answers 500, 24.11 511 ("Protocol authentication error"); 24.11's /ping says 200 with the
    # controller DOWN, so a call that needs the controller is the one to ask
    status, body = site.rest(f"/slurm/{ping}/jobs", token=foreign)
    assert status in (401, 403, 500, 511), (status, body[:300])


def test_accounting_knows_the_job_user_in_both_accounts(site: SiteUnderTest):
    out = site.on_login("sacctmgr -nP show assoc user=hpcuser format=cluster,account,user")
    assert sorted(out.split()) == sorted(f"{site.site.cluster}|{account}|hpcuser" for account in ("demo", "tight"))
    tight = site.on_login("sacctmgr -nP show assoc account=tight user= format=grptresmins").split()
    assert "cpu=60" in tight


def batch_job(site: SiteUnderTest, transport_kind: str) -> BatchJob:
    workdir = f"{JOB_WORKDIR}/site-tests/{transport_kind}-{uuid.uuid4().hex[:8]}"
    return BatchJob(name=f"site-{transport_kind}", account="demo", partition="cpu", cpus=1, memory="128M",
                    time="00:02:00", gpus=0, workdir=workdir, nodes=2, launcher="srun",
                    commands=[["sh", "-c", "echo hello from $(hostname)"]],
                    comment=f"site-test:{transport_kind}:{uuid.uuid4().hex[:12]}", signal="B:USR2@30")


def final(transport: SlurmTransport, job_id: int, timeout_s: float = 60) -> JobAccounting:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        record = transport.final(job_id)
        if record is not None:
            return record
        time.sleep(0.5)
    pytest.fail(f"job {job_id}: no accounting in {timeout_s:.0f} s")


def run_through(site: SiteUnderTest, connection: str) -> tuple[SlurmTransport, BatchJob, int]:
    """A two-node job staged, submitted and accounted through ``connection``: files only via the login node."""
    transport = site.transport(connection)
    assert RELEASES[site.name] in transport.describe()
    job = batch_job(site, "rest" if connection.endswith("_rest") else "ssh")
    script = render(job)
    transport.stage(job.workdir, {"job.sh": script.encode()}, "hpcuser")
    job_id = transport.submit(job, script)
    record = final(transport, job_id)
    assert (record.state, record.exit_code) == ("COMPLETED", 0), record
    return transport, job, job_id


@pytest.mark.parametrize("suffix", ["", "_rest"], ids=["ssh", "rest"])
def test_the_site_s_connections_run_a_two_node_job_with_files_through_the_login_node(
        site: SiteUnderTest, suffix: str):
    """Staging, submission, accounting and the log back: all through the login node (and slurmrestd)."""
    transport, job, job_id = run_through(site, f"factory_slurm_{site.name}{suffix}")
    log = transport.read_logs({job_id: (f"{job.workdir}/slurm-{job_id}.out", 0)})[job_id].decode()
    assert sorted(line for line in log.splitlines() if line.startswith("hello from")) == [
        f"hello from {name}" for name in site.info["computes"]], log
    assert not Path(job.workdir).exists(), "the job folder is on the site, not on the Airflow host"
    site.on_login(f"rm -rf {shlex.quote(job.workdir)}")


def test_a_job_folder_comes_back_through_the_login_node(site: SiteUnderTest, tmp_path: Path):
    transport, job, job_id = run_through(site, f"factory_slurm_{site.name}")
    try:
        transport.fetch_folder(job.workdir, tmp_path)
    finally:
        site.on_login(f"rm -rf {shlex.quote(job.workdir)}")
    assert "hello from" in (tmp_path / f"slurm-{job_id}.out").read_text()


def test_the_job_runtime_runs_on_the_compute_nodes(site: SiteUnderTest):
    python = site.cluster.connections()[f"factory_slurm_{site.name}"]["extra"]["job_runtime"] + "/bin/python"
    out = site.on_login(f"srun -N2 -p cpu {python} -c 'import operators, socket; print(socket.gethostname())' | sort")
    assert out.split() == site.info["computes"]


def test_the_allocation_left_is_read_on_the_site_and_a_larger_job_is_refused(site: SiteUnderTest):
    """The sites' ``tight`` account has GrpTRESMins=cpu=60 in slurmdbd: the transport reads it through the
    login node (sshare), and the budget check refuses a job asking for more, naming both figures."""
    from operators.slurm.budget import over_budget

    transport = site.transport(f"factory_slurm_{site.name}")
    [cpu] = [allocation for allocation in transport.allocation("tight") or [] if allocation.tres == "cpu"]
    assert (cpu.account, cpu.limit_minutes) == ("tight", 60) and 0 <= cpu.remaining_minutes <= 60
    big = BatchJob(name="budget-probe", account="tight", partition="cpu", cpus=4, memory="64M", time="02:00:00",
                   gpus=0, workdir=f"{JOB_WORKDIR}/budget-probe", commands=[["true"]])
    refusal = over_budget(big, [cpu])
    assert refusal and "allocation tight" in refusal and "480" in refusal and f"of {cpu.limit_minutes}" in refusal
    assert over_budget(replace(big, cpus=1, time="00:01:00"), [cpu]) is None


def leftovers_of_the_sites(paths: StackPaths) -> list[str]:
    """Whatever of the sites outlives ``down``: namespaces, links, mounts, daemons."""
    found = [f"netns {name}" for name in os.listdir("/run/netns") if name.startswith("afs")] \
        if os.path.isdir("/run/netns") else []
    found += [f"link {name}" for name in os.listdir("/sys/class/net") if name.startswith("afs")]
    prefixes = (f"{paths.state}/clusters", f"{paths.run}/clusters")
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    found += [f"mount {point}" for point in mounts if point.startswith(prefixes)]
    for pid_file in paths.run.glob("site_*.pid"):
        pid = int(pid_file.read_text().split()[0])
        if Path(f"/proc/{pid}").exists():
            found.append(f"process {pid} of {pid_file.stem}")
    return found


def test_a_port_held_by_a_process_the_stack_does_not_track_fails_up_naming_it():
    """slurmrestd of site A loses its pid file: ``up`` must not take the orphan for its own, nor start a second."""
    import signal

    from stack.manager import SiteStack
    from stack.process import StackError

    paths = StackPaths.from_env()
    pid_file = paths.run / "site_a-slurmrestd.pid"
    if not pid_file.exists():
        _problem("site A's slurmrestd is not running")
    orphan = int(pid_file.read_text().split()[0])
    pid_file.unlink()
    stack = SiteStack(paths)
    try:
        with pytest.raises(StackError, match=rf"site_a-slurmrestd: 6820 on a-ctl is held by a process the stack "
                                             rf"does not track: .*pid={orphan}"):
            stack.up(progress=lambda _line: None)
    finally:
        os.kill(orphan, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{orphan}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        stack.up(progress=lambda _line: None)
    assert SiteStack(paths).supervised("site_a-slurmrestd").pid() not in (None, orphan)


def test_zz_down_leaves_nothing_of_the_sites_and_up_brings_them_back():
    from stack.manager import SiteStack

    paths = StackPaths.from_env()
    if not all(SiteLayout(paths, site).info_file.exists() for site in SITES):
        _problem("the sites are not up: nothing to take down")
    stack = SiteStack(paths)
    stack.down(progress=lambda _line: None)
    assert leftovers_of_the_sites(paths) == []
    began = time.monotonic()
    stack.up(progress=lambda _line: None)
    assert time.monotonic() - began < 30
    for site in SITES:
        info = json.loads(SiteLayout(paths, site).info_file.read_text())
        under_test = SiteUnderTest(site, SiteCluster(paths, site), info)
        assert under_test.on_login("sinfo -h -p cpu -o '%D %t'").split() == ["2", "idle"]
