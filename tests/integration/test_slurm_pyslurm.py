"""The pyslurm transport on both local clusters, with the pyslurm the stack builds for each.

- Slurm 22.05 (the host's cluster): pyslurm 22.5.3 in this Python, as the orchestrator would run it.
- Slurm 24.11 (``factory24``, a trixie chroot): pyslurm 24.11.0 imports only under trixie's glibc, so each
  call runs there, in ``/opt/pyslurm-venv``, as the job user (``operators.slurm.pyslurm_call``).

The transport suite's cases run for 24.11 here (for 22.05 they run in ``test_slurm_transports.py``); the
cases below run on both: accounting fields, requeue, the time-limit warning, refusals. Without pyslurm
the tests skip, saying how to build it against a site's libslurm; FACTORY_REQUIRE_PYSLURM=1 (CI) fails.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from operators.slurm.files import SharedFiles
from operators.slurm.model import SlurmError
from operators.slurm.transport import SlurmTransport
from operators.slurm.transports import make_transport
from operators.units import elapsed_seconds, size_bytes_or_none
from stack.slurm24.cluster import Slurm24
from tests.integration.pyslurm_sites import chroot_pyslurm, require_host_pyslurm
from tests.integration.test_slurm_rest_newer import (  # noqa: F401 - the 24.11 cluster, and its begin-time case
    Cluster24,
    slurm24,
    test_a_job_that_may_not_start_yet_is_pending_with_reason_begintime,
)
from tests.integration.test_slurm_transports import (  # noqa: F401 - the 22.05 cases, here on 24.11
    Cluster,
    test_a_job_killed_by_a_signal_reads_128_plus_n,
    test_a_job_that_exits_0_is_accounted_completed,
    test_cancelling_a_running_job_ends_it_cancelled_within_seconds,
    test_exit_3_is_failed_with_exit_code_3,
    test_find_active_returns_exactly_the_running_job_by_its_comment,
    test_gpu_hours_are_allocated_gpus_times_elapsed,
    test_read_logs_from_an_offset_returns_only_the_new_bytes,
    wait_for,
)

NO_SUCH_JOB = 67_000_000  # below Slurm's MaxJobId, far above either cluster's ids


@dataclass(frozen=True)
class Site:
    """One cluster as these tests reach it: its pyslurm, its names, and ``scontrol`` as root there."""

    slurm: str
    pyslurm: str
    cluster: str
    scontrol: Callable[[list[str]], subprocess.CompletedProcess[str]]
    sacct: Callable[[list[str]], subprocess.CompletedProcess[str]]


def on_host(command: str) -> Callable[[list[str]], subprocess.CompletedProcess[str]]:
    return lambda arguments: subprocess.run([command, *arguments], capture_output=True, text=True, timeout=30)


def in_chroot(command: str) -> Callable[[list[str]], subprocess.CompletedProcess[str]]:
    return lambda arguments: Slurm24().run([command, *arguments], timeout_s=30)


class Pyslurm24(Cluster24):
    """Job folders of its own: the REST suite of the same cluster uses the same test names."""

    @property
    def jobs_root(self) -> str:
        return f"{Slurm24().paths.jobs}/transport-tests-slurm24-pyslurm"


def pyslurm24(info: dict[str, Any], test: str) -> Pyslurm24:
    transport = SlurmTransport(chroot_pyslurm(info["job_user"]), SharedFiles())
    return Pyslurm24("pyslurm", transport, test, info["job_user"])


@pytest.fixture
def cluster(request: pytest.FixtureRequest, slurm24: dict[str, Any]) -> Iterator[Pyslurm24]:  # noqa: F811
    """The transport suite's ``cluster``, as pyslurm on Slurm 24.11."""
    setup = pyslurm24(slurm24, request.node.originalname)
    try:
        yield setup
    finally:
        setup.cancel_leftovers()


@pytest.fixture(params=["22.05", "24.11"])
def site(request: pytest.FixtureRequest, stack_info: dict[str, Any]) -> Iterator[tuple[Cluster, Site]]:
    """pyslurm on each local cluster, with what the cases need to know of it."""
    test = request.node.originalname
    if request.param == "22.05":
        require_host_pyslurm()
        transport = make_transport("pyslurm", user=stack_info["job_user"], files="shared")
        setup = Cluster("pyslurm", transport, test, stack_info["job_user"])
        facts = Site("22.05", "22.5.3", stack_info["cluster"], on_host("scontrol"), on_host("sacct"))
    else:
        info = request.getfixturevalue("slurm24")
        setup = pyslurm24(info, test)
        facts = Site("24.11", "24.11.0", info["cluster"], in_chroot("scontrol"), in_chroot("sacct"))
    try:
        yield setup, facts
    finally:
        setup.cancel_leftovers()


def test_describe_names_slurm_pyslurm_and_the_cluster(site: tuple[Cluster, Site]):
    cluster, facts = site
    text = cluster.transport.describe()
    expected = rf"Slurm {re.escape(facts.slurm)}\.\d+ via pyslurm {re.escape(facts.pyslurm)}, cluster {facts.cluster}"
    assert re.fullmatch(expected, text), text


def sacct_figures(facts: Site, job_id: int) -> tuple[int, float | None, int | None]:
    """Elapsed, TotalCPU and the highest step MaxRSS as text sacct prints them: what pyslurm must match."""
    done = facts.sacct(["-j", str(job_id), "--starttime", "now-1days", "-n", "-P",
                        "-o", "JobID,ElapsedRaw,TotalCPU,MaxRSS"])
    rows = [line.split("|") for line in done.stdout.splitlines()]
    peaks = [size_bytes_or_none(row[3]) for row in rows]
    job_row = next(row for row in rows if row[0] == str(job_id))
    return int(job_row[1]), elapsed_seconds(job_row[2]), max((peak for peak in peaks if peak), default=None)


def test_accounting_matches_sacct_for_elapsed_cpu_time_and_peak_memory(site: tuple[Cluster, Site]):
    """A busy loop of about 2 s holding ~30 MB; no energy plugin runs here, so energy is None, not 0."""
    cluster, facts = site
    busy = 'x=$(head -c 30000000 /dev/zero | tr "\\0" a); end=$((SECONDS + 3)); while [ $SECONDS -lt $end ]; do :; done'
    job_id = cluster.submit(cluster.job([["bash", "-c", busy]]))
    record = cluster.final(job_id)
    assert (record.state, record.exit_code, record.user) == ("COMPLETED", 0, cluster.job_user), record
    elapsed, cpu_time, peak = sacct_figures(facts, job_id)
    assert record.elapsed_s == elapsed >= 2, (record, elapsed)
    assert record.cpu_time_s == pytest.approx(cpu_time, abs=0.002) and record.cpu_time_s > 0.5, (record, cpu_time)
    assert record.max_rss_bytes == peak and peak > 20_000_000, (record, peak)
    assert (record.gpus, record.gpu_hours, record.energy_j) == (0, 0.0, None), record


def test_two_allocated_gpus_are_accounted(site: tuple[Cluster, Site]):
    """Both fake GPUs of the node (gres gpu:fake:2 on partition gpu): allocated TRES, not the request."""
    cluster, _ = site
    job_id = cluster.submit(cluster.job([["sleep", "1"]], partition="gpu", gpus=2))
    record = cluster.final(job_id)
    assert (record.state, record.gpus) == ("COMPLETED", 2), record
    assert record.gpu_hours == round(2 * (record.elapsed_s or 0) / 3600, 6)


def test_a_requeued_job_keeps_its_id_and_counts_the_restart(site: tuple[Cluster, Site]):
    cluster, facts = site
    job = cluster.job([["sleep", "60"]], requeue=True)
    job_id = cluster.submit(job)
    cluster.status(job_id, {"RUNNING"})
    requeued = facts.scontrol(["requeue", str(job_id)])
    assert requeued.returncode == 0, requeued.stderr

    def back_in_the_queue() -> Any:
        status = cluster.transport.jobs().get(job_id)
        return status if status is not None and status.state in ("PENDING", "RUNNING") else None

    status = wait_for(f"job {job_id} back in the queue", back_in_the_queue, timeout_s=30)
    assert status.restarts == 1 and not status.ended(requeue=True), status
    assert [active.job_id for active in cluster.transport.find_active(job.comment)] == [job_id]
    cluster.transport.cancel(job_id)
    assert cluster.final(job_id, timeout_s=15).state == "CANCELLED"


def test_the_time_limit_warning_reaches_the_batch_shell(site: tuple[Cluster, Site]):
    """``B:USR2@55`` reaches the batch shell well before the one-minute limit (pyslurm 22.5.3 takes a
    ``signal`` and drops it; the transport puts it into the request)."""
    cluster, _ = site
    job = cluster.job([["sleep", "50"]], time="00:01:00", signal="B:USR2@55")
    job_id = cluster.submit(job)
    cluster.status(job_id, {"RUNNING"})  # slurmctld looks for due warnings every ~30 s from here
    log = f"{job.workdir}/slurm-{job_id}.out"

    def warned() -> bytes | None:
        text = cluster.transport.read_logs({job_id: (log, 0)})[job_id]
        return text if b"time-limit warning USR2" in text else None

    wait_for("the USR2 warning in the job's log", warned, timeout_s=50, pause_s=1)
    cluster.transport.cancel(job_id)


def test_accounting_of_many_jobs_is_one_call_and_skips_unknown_ids(site: tuple[Cluster, Site]):
    cluster, _ = site
    job_ids = [cluster.submit(cluster.job([["true"]], suffix=f"-{n}")) for n in range(3)]
    for job_id in job_ids:
        cluster.final(job_id)
    records = cluster.transport.accounting([*job_ids, NO_SUCH_JOB])
    assert sorted(records) == sorted(job_ids)
    assert {record.state for record in records.values()} == {"COMPLETED"}


def test_directives_pyslurm_cannot_send_are_refused_before_submitting(site: tuple[Cluster, Site]):
    """pyslurm, like slurmrestd, does not read #SBATCH lines: --begin must fail loudly, not run at once."""
    cluster, _ = site
    with pytest.raises(SlurmError, match=r"does not read #SBATCH lines.*--begin=now\+1hour"):
        cluster.submit(cluster.job([["true"]], extra_directives=["--begin=now+1hour"]))
    assert cluster.submitted == []


def test_cancelling_a_job_that_has_ended_changes_nothing(site: tuple[Cluster, Site]):
    """pyslurm's cancel is SIGKILL and ignores "already done" and "invalid job id" (a job purged from the
    controller): an operator's on_kill after the job ended is not an error, and the record stays."""
    cluster, _ = site
    job_id = cluster.submit(cluster.job([["true"]]))
    assert cluster.final(job_id).state == "COMPLETED"
    cluster.transport.cancel(job_id)
    cluster.transport.cancel(NO_SUCH_JOB)
    assert cluster.final(job_id).state == "COMPLETED"
