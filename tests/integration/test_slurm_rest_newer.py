"""The REST transport against a real Slurm 24.11, whose slurmrestd speaks OpenAPI v0.0.40-42.

The host's cluster runs Slurm 22.05 (v0.0.38 only), so the v0.0.40+ JSON shapes are proven here on
the second local cluster, ``factory24`` (``./factory slurm24 up``: Debian trixie in a chroot). The
cases are those of ``test_slurm_transports.py`` for the rest transport, with its helpers. Without the
cluster the module skips and says so, unless ``FACTORY_REQUIRE_SLURM24=1`` (CI): then it fails.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from operators.slurm.model import JobAccounting, SlurmError
from operators.slurm.rest import RestControl
from operators.slurm.script import BatchJob, render
from operators.slurm.transport import SlurmTransport
from operators.slurm.transports import make_transport
from stack.services import http_get
from stack.slurm24.cluster import Slurm24
from tests.integration.test_slurm_transports import (  # noqa: F401 - the 22.05 cases, collected here with this module's cluster
    Cluster,
    test_cancelling_a_running_job_ends_it_cancelled_within_seconds,
    test_exit_3_is_failed_with_exit_code_3,
    test_find_active_returns_exactly_the_running_job_by_its_comment,
    wait_for,
)

NEWEST_24_11 = "v0.0.42"


@pytest.fixture(scope="module")
def slurm24() -> dict[str, Any]:
    """The 24.11 cluster's endpoints and token, once its slurmrestd answers."""
    cluster = Slurm24()
    problem = None
    if not cluster.info_file.exists():
        problem = f"the Slurm 24.11 cluster is not set up (no {cluster.info_file}): run ./factory slurm24 up"
    else:
        info = json.loads(cluster.info_file.read_text())
        rest = info["slurmrestd"]
        headers = {"X-SLURM-USER-NAME": info["job_user"], "X-SLURM-USER-TOKEN": rest["token"]}
        try:
            status, body = http_get(f"{rest['url']}/slurm/{NEWEST_24_11}/ping", headers)
            if status != 200:
                problem = f"slurmrestd of the Slurm 24.11 cluster at {rest['url']}: HTTP {status} {body[:200]!r}"
        except OSError as error:
            problem = (f"slurmrestd of the Slurm 24.11 cluster at {rest['url']} does not answer ({error}): "
                       "run ./factory slurm24 up")
    if problem:
        if os.environ.get("FACTORY_REQUIRE_SLURM24") == "1":
            pytest.fail(f"FACTORY_REQUIRE_SLURM24=1 but {problem}")
        pytest.skip(problem)
    return info


def rest24(info: dict[str, Any], **overrides: Any) -> SlurmTransport:
    """slurmrestd of the 24.11 cluster; its job folders are on this host's file system (the chroot's)."""
    rest = info["slurmrestd"]
    return make_transport("rest", **{"base_url": rest["url"], "user": info["job_user"], "token": rest["token"],
                                     "files": "shared", **overrides})


class Cluster24(Cluster):
    """The shared case helpers, with job folders of their own (the 22.05 suite may run at the same time)."""

    def job(self, commands: list[list[str]], suffix: str = "", **fields: Any) -> BatchJob:
        workdir = f"{self.jobs_root}/{self.test}{suffix}"
        return super().job(commands, suffix, **{"workdir": workdir, "name": f"t24-{self.test[5:29]}", **fields})

    @property
    def jobs_root(self) -> str:
        return f"{Slurm24().paths.jobs}/transport-tests-slurm24"

    def sbatch(self, job: BatchJob) -> int:
        """``sbatch`` inside the chroot as the job user: for what slurmrestd cannot ask for (``--begin``)."""
        script = render(job)
        self.transport.stage(job.workdir, {"job.sh": script.encode()}, self.job_user)
        command = Slurm24().chroot(["sbatch", "--parsable", f"{job.workdir}/job.sh"], self.job_user)
        done = subprocess.run(command, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, timeout=30)
        assert done.returncode == 0, f"sbatch in the 24.11 chroot: {done.stderr}"
        job_id = int(done.stdout.strip().split(";")[0])
        self.submitted.append((self.transport, job_id))
        return job_id


@pytest.fixture
def cluster(request: pytest.FixtureRequest, slurm24: dict[str, Any]) -> Iterator[Cluster24]:
    setup = Cluster24("rest", rest24(slurm24), request.node.originalname, slurm24["job_user"])
    try:
        yield setup
    finally:
        setup.cancel_leftovers()


@pytest.fixture(scope="module")
def forgotten_job(slurm24: dict[str, Any]) -> Iterator[tuple[int, float]]:
    """An exit-3 job submitted as the module starts, so that by its last test the controller has purged it
    (MinJobAge plus slurmctld's one-minute purge cycle) while the other cases ran."""
    setup = Cluster24("rest", rest24(slurm24), "test_zz_forgotten", slurm24["job_user"])
    job_id = setup.submit(setup.job([["bash", "-c", "exit 3"]]))
    try:
        yield job_id, time.monotonic()
    finally:
        setup.cancel_leftovers()


def offered_versions(transport: RestControl) -> set[str]:
    paths = " ".join(transport._call("GET", "/openapi/v3")["paths"])
    return set(re.findall(r"/slurm(?:db)?/(v\d+\.\d+\.\d+)/", paths))


def test_auto_negotiation_picks_v0_0_42_of_the_versions_24_11_offers(slurm24: dict[str, Any], forgotten_job):
    transport = rest24(slurm24, api_version="auto")
    assert offered_versions(transport.control) == {"v0.0.40", "v0.0.41", "v0.0.42"}
    assert transport.control.api_version == NEWEST_24_11


def test_describe_names_slurm_2411_and_the_way_in(cluster: Cluster24, slurm24: dict[str, Any]):
    text = cluster.transport.describe()
    url = re.escape(slurm24["slurmrestd"]["url"])
    assert re.fullmatch(rf"Slurm 24\.11\.\d+ via slurmrestd {NEWEST_24_11} at {url}", text), text
    assert slurm24["release"] in text


@pytest.mark.parametrize("version", ["v0.0.40", "v0.0.41", "v0.0.42"])
def test_a_job_that_exits_0_is_accounted_completed(slurm24: dict[str, Any], request: pytest.FixtureRequest,
                                                    version: str):
    """Every version 24.11 serves, not only the negotiated one: sites pin ``api_version``."""
    cluster = Cluster24("rest", rest24(slurm24, api_version=version), f"{request.node.originalname}-{version}",
                        slurm24["job_user"])
    try:
        job_id = cluster.submit(cluster.job([["sleep", "1"]]))
        record = cluster.final(job_id)
    finally:
        cluster.cancel_leftovers()
    assert (record.job_id, record.state, record.exit_code) == (job_id, "COMPLETED", 0)
    assert record.elapsed_s is not None and record.elapsed_s >= 1, record
    assert record.cpu_time_s is not None and record.cpu_time_s > 0, record
    assert record.user == slurm24["job_user"]


def test_a_job_killed_by_a_signal_reads_128_plus_n(cluster: Cluster24):
    """v0.0.40+: return_code unset, signal.id 9; the transport says 137 like sacct's ``0:9``."""
    job_id = cluster.submit(cluster.job([["bash", "-c", "kill -9 $PPID"]]))
    record = cluster.final(job_id)
    assert (record.state, record.exit_code) == ("FAILED", 137), record
    assert cluster.transport.control.status(job_id).exit_code == 137


def test_cancelling_an_unknown_job_fails_naming_it(cluster: Cluster24):
    """v0.0.42 answers HTTP 200 with the error inside ``status``: it must not read as success."""
    with pytest.raises(SlurmError, match=r"job/1: Invalid job id specified"):
        cluster.transport.cancel(1)


def test_a_job_that_may_not_start_yet_is_pending_with_reason_begintime(cluster: Cluster24):
    job = cluster.job([["true"]], extra_directives=["--begin=now+1hour"])
    job_id = cluster.sbatch(job)  # rest cannot ask for a begin time: sbatch submits, the REST view is checked
    status = cluster.status(job_id, {"PENDING", "RUNNING", "COMPLETED"})
    assert (status.state, status.reason) == ("PENDING", "BeginTime"), status
    expected_start = datetime.fromisoformat(status.start_time or "")
    assert timedelta(minutes=58) < expected_start - datetime.now() <= timedelta(hours=1), status.start_time
    assert [active.job_id for active in cluster.transport.find_active(job.comment)] == [job_id]
    cluster.transport.cancel(job_id)
    assert cluster.final(job_id, timeout_s=15).state == "CANCELLED"


def test_the_time_limit_warning_reaches_the_batch_shell(cluster: Cluster24):
    """``B:USR2@55`` becomes kill_warning_* fields (v0.0.40+ dropped ``signal``, ignoring it with a mere
    warning): the batch shell's trap reports the signal well before the one-minute limit."""
    job = cluster.job([["sleep", "50"]], time="00:01:00", signal="B:USR2@55")
    job_id = cluster.submit(job)
    log = f"{job.workdir}/slurm-{job_id}.out"

    def warned() -> bytes | None:
        text = cluster.transport.read_logs({job_id: (log, 0)})[job_id]
        return text if b"time-limit warning USR2" in text else None

    wait_for("the USR2 warning in the job's log", warned, timeout_s=45, pause_s=1)
    cluster.transport.cancel(job_id)


def test_gpu_hours_are_allocated_gpus_times_elapsed(cluster: Cluster24):
    """``gres`` became ``tres_per_node: gres/gpu:N`` in v0.0.40+."""
    job_id = cluster.submit(cluster.job([["sleep", "1"]], partition="gpu", gpus=1))
    record = cluster.final(job_id)
    assert record.state == "COMPLETED", record
    assert record.gpus == 1
    assert record.elapsed_s is not None and record.elapsed_s >= 1, record
    assert record.gpu_hours == round(record.elapsed_s / 3600, 6)


def jobs_queries(slurm24: dict[str, Any]) -> int:
    """slurmdbd's count of job queries (its statistics need an administrator: SlurmUser's token)."""
    admin = rest24(slurm24, user="slurm", token=Slurm24().token("slurm", 300))
    rpcs = admin.control._call("GET", f"/slurmdb/{NEWEST_24_11}/diag")["statistics"]["RPCs"]
    return sum(entry["count"] for entry in rpcs if entry["rpc"] == "DBD_GET_JOBS_COND")


def test_accounting_of_many_jobs_is_one_slurmdbd_query(cluster: Cluster24, slurm24: dict[str, Any]):
    job_ids = [cluster.submit(cluster.job([["true"]], suffix=f"-{n}")) for n in range(3)]
    for job_id in job_ids:
        cluster.final(job_id)
    before = jobs_queries(slurm24)
    records = cluster.transport.accounting([*job_ids, 1])
    assert jobs_queries(slurm24) - before == 1
    assert sorted(records) == sorted(job_ids)
    assert {record.state for record in records.values()} == {"COMPLETED"}


def test_accounting_of_a_job_the_controller_has_forgotten(cluster: Cluster24, forgotten_job: tuple[int, float]):
    """Last by design: the job was submitted when the module started. 24.11's slurmdbd has the exit
    code right (22.05's says 0), so no controller is needed to tell FAILED 3."""
    job_id, _ = forgotten_job

    def gone() -> bool | None:
        return True if job_id not in cluster.transport.jobs() else None

    wait_for(f"job {job_id} leaving the 24.11 controller", gone, timeout_s=100, pause_s=2)
    with pytest.raises(SlurmError, match="Invalid job id"):
        cluster.transport.control.status(job_id)
    record = cluster.transport.final(job_id)
    assert isinstance(record, JobAccounting)
    assert (record.job_id, record.state, record.exit_code) == (job_id, "FAILED", 3), record
