"""The Airflow Edge worker on site A's login node (production profile): where it runs, what it reaches, the
tasks it takes, and a worker killed mid-job.

The worker runs as the site's job user inside the login node's namespaces; its only way out is HTTP to the
API server through the relay on the site's bridge (no database, no broker, no MLflow, no S3 of the stack).
It takes the queue ``site_a``: ``slurm_job_example_site_a_edge`` runs there and submits with the Slurm
commands of the login node (transport ``local``), waiting in the worker. Killed with its task mid-job, the
worker is started again (as a site's supervisor would), the task's retry adopts the same Slurm job.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

import pytest

from stack.airflow_api import AirflowAPI
from stack.manager import Stack
from stack.process import family
from stack.services.edge import EdgeWorker
from stack.services.sites import SiteCluster
from stack.settings import JOB_USER, PORTS
from tests.integration.test_site_faults import begin, job_row, jobs_of_task, runs, site_a  # noqa: F401 (fixtures)
from tests.integration.test_slurm_operator import TASK, task_log

EDGE_DAG = "slurm_job_example_site_a_edge"
EDGE_EXECUTOR = "airflow.providers.edge3.executors.EdgeExecutor"


@pytest.fixture(scope="module")
def stack(production_stack: Stack) -> Stack:
    return production_stack


@pytest.fixture(scope="module")
def edge(stack: Stack, site_a: SiteCluster) -> EdgeWorker:  # noqa: F811 (site_a is the imported fixture)
    [worker] = [worker for worker in stack.factory.edge_workers() if worker.site.site.name == "site_a"]
    return worker


def worker_pid(stack: Stack, edge: EdgeWorker) -> int:
    pid = stack.supervised(edge.name).pid()
    assert pid, f"{edge.name} is not running"
    return pid


def reaches(site: SiteCluster, address: str, port: int) -> bool:
    """Whether a TCP connection from the login node to ``address:port`` is accepted."""
    probe = (f"import socket\ntry:\n socket.create_connection(({address!r}, {port}), timeout=3)\n print('open')\n"
             "except OSError as error:\n print('closed', error)")
    result = site.run_on(site.site.login, ["python3", "-c", probe], timeout_s=20)
    assert result.returncode == 0, result.stderr
    return result.stdout.startswith("open")


def test_the_edge_worker_runs_in_the_login_node_as_the_job_user_and_reaches_only_the_api_server(
        stack: Stack, edge: EdgeWorker, site_a: SiteCluster):  # noqa: F811
    pid = worker_pid(stack, edge)
    login_netns = f"/run/netns/{site_a.site.netns(site_a.site.login)}"
    assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(login_netns).st_ino  # the login node's network
    assert os.stat(f"/proc/{pid}").st_uid == site_a.ids(JOB_USER)[0]  # not root
    assert edge.registered_state() in ("idle", "running")
    host = str(site_a.site.host_address.ip)
    assert reaches(site_a, host, edge.relay_port)  # the API server, through the relay on the bridge
    for service in ("postgres", "redis", "mlflow", "s3", "airflow", "smtp"):  # and nothing else of the Airflow host
        for address in (host, "127.0.0.1"):
            assert not reaches(site_a, address, PORTS[service]), (service, address)


def test_a_task_of_the_edge_queue_runs_on_the_login_node_with_its_slurm_commands(
        airflow: AirflowAPI, site_a: SiteCluster, runs):  # noqa: F811
    run_id, comment = begin(airflow, runs, EDGE_DAG, seconds=3)
    run = airflow.wait_for_run(EDGE_DAG, run_id, timeout_s=300)
    ti = airflow.get(f"/dags/{EDGE_DAG}/dagRuns/{run_id}/taskInstances/{TASK}")
    assert run["state"] == "success", ti
    assert (ti["executor"], ti["queue"], ti["hostname"]) == (EDGE_EXECUTOR, "site_a", site_a.site.login.hostname)
    [job_id] = recorded_jobs(site_a, comment)
    assert settled_state(site_a, int(job_id)) == "COMPLETED"
    # pushed by the worker to the API server in chunks as it ran: the last one may come after the run's end
    log = pushed_log(airflow, run_id, 1, f"Slurm job {job_id} COMPLETED")
    assert f"Submitted Slurm job {job_id} on site_a" in log and "(workdir /p/scratch/airflow-jobs/" in log, log


def pushed_log(airflow: AirflowAPI, run_id: str, attempt: int, needle: str, timeout_s: float = 30) -> str:
    """The try's log as the API server has it once ``needle`` is in it (the Edge worker pushes logs in chunks)."""
    deadline = time.monotonic() + timeout_s
    while needle not in (log := task_log(airflow, EDGE_DAG, run_id, attempt=attempt)):
        assert time.monotonic() < deadline, f"{needle!r} not in the log of try {attempt}: {log[-3000:]}"
        time.sleep(1)
    return log


def recorded_jobs(site: SiteCluster, comment: str, timeout_s: float = 30) -> list[str]:
    """The task's jobs once accounting has them: the task reads the job's end on the login node at once, and
    Slurm 22.05 stores the comment in accounting only as the job ends, a moment after squeue forgets it."""
    deadline = time.monotonic() + timeout_s
    while not (jobs := jobs_of_task(site, comment)) and time.monotonic() < deadline:
        time.sleep(1)
    return jobs


def settled_state(site: SiteCluster, job_id: int, timeout_s: float = 30) -> str:
    """The job's state once the controller is done with it: the task can succeed (accounting read on the
    login node at once) while squeue still shows the job COMPLETING."""
    deadline = time.monotonic() + timeout_s
    while (state := job_row(site, job_id)["State"]) in ("COMPLETING", "RUNNING") and time.monotonic() < deadline:
        time.sleep(1)
    return state


def wait_for_running_job(airflow: AirflowAPI, site: SiteCluster, run_id: str, comment: str,
                         timeout_s: float = 180) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ti = airflow.get(f"/dags/{EDGE_DAG}/dagRuns/{run_id}/taskInstances/{TASK}")
        assert ti["state"] not in ("failed", "success", "upstream_failed"), ti
        jobs = jobs_of_task(site, comment)
        if ti["state"] == "running" and jobs and job_row(site, int(jobs[0]))["State"] == "RUNNING":
            return int(jobs[0])
        time.sleep(1)
    pytest.fail(f"{EDGE_DAG}/{run_id}: no running job with the task running in {timeout_s:.0f} s")


def test_the_edge_worker_killed_mid_job_and_started_again_the_retry_adopts_the_job(
        airflow: AirflowAPI, stack: Stack, edge: EdgeWorker, site_a: SiteCluster, runs):  # noqa: F811
    run_id, comment = begin(airflow, runs, EDGE_DAG, seconds=90)
    job_id = wait_for_running_job(airflow, site_a, run_id, comment)
    tree = family(worker_pid(stack, edge))
    assert len(tree) > 1, tree  # the worker and its task's processes
    for member in tree:  # as if the login node's session died: no goodbye to the API server
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, signal.SIGKILL)
    killed = time.monotonic()
    stack.up(progress=lambda *_: None)  # started again; it waits until edge3 frees the dead worker's name
    assert stack.supervised(edge.name).pid() and edge.registered_state() in ("idle", "running")
    run = airflow.wait_for_run(EDGE_DAG, run_id, timeout_s=600)
    ti = airflow.get(f"/dags/{EDGE_DAG}/dagRuns/{run_id}/taskInstances/{TASK}")
    assert run["state"] == "success" and ti["try_number"] >= 2, ti
    assert ti["hostname"] == site_a.site.login.hostname
    assert jobs_of_task(site_a, comment) == [str(job_id)]  # adopted: no second job
    assert settled_state(site_a, job_id) == "COMPLETED"
    pushed_log(airflow, run_id, ti["try_number"], f"Adopting Slurm job {job_id}")
    assert time.monotonic() - killed < 400
