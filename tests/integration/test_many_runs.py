"""Many runs at once on the production profile: 20 runs across both sites and every way in, together.

Five runs each of site A through its Edge worker (waiting in the worker on the login node), site A over
SSH (deferred), site B over SSH and site B through slurmrestd (deferred), all triggered at once. Every run
succeeds; each task has exactly one Slurm job on its site (sacct, by the comment that names the task); no
component logged a database error; and from the trigger to the last run's end, the status calls each
controller counted (``sdiag``: the job-info RPCs) stay at one per interval per host that waits on the
cluster: the triggerers and connections of the Airflow host share one call, and so do the Edge worker's
waiting tasks on its login node (operators/slurm/shared_status.py) — not one per job, triggerer or
connection.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from stack.airflow_api import AirflowAPI
from stack.clusters.site import SITE_A, SITE_B
from stack.manager import Stack
from stack.services.sites import SiteCluster
from tests.integration.test_slurm_operator import identity, jobs_with_comment

RUNS_PER_WAY = 5
JOB_S = 60
POLL_INTERVAL_S = 1.0  # the example DAGs' poll_interval_s
WAYS = {  # DAG -> site
    "slurm_job_example_site_a_edge": SITE_A,
    "slurm_job_example_site_a": SITE_A,
    "slurm_job_example_site_b": SITE_B,
    "slurm_job_example_site_b_rest": SITE_B,
}
TRIGGERERS = ("airflow-triggerer", "airflow-triggerer-2")
LOGGED_BY = ("airflow-scheduler", "airflow-api", "airflow-dag-processor", *TRIGGERERS,
             "airflow-celery-worker-1", "airflow-celery-worker-2")
DATABASE_ERRORS = ("Database error", "OperationalError", "deadlock detected", "too many clients")


@pytest.fixture(scope="module")
def stack(production_stack: Stack) -> Stack:
    return production_stack


@pytest.fixture(scope="module")
def sites(stack: Stack) -> dict[str, SiteCluster]:
    return {cluster.site.name: cluster for cluster in stack.factory.sites}


def on_ctl(site: SiteCluster):
    return lambda argv: site.checked_on(site.site.ctl, list(argv), " ".join(argv))


@pytest.fixture(scope="module")
def runs(airflow: AirflowAPI, sites: dict[str, SiteCluster]) -> Iterator[list[tuple[str, str]]]:
    started: list[tuple[str, str]] = []
    yield started
    for dag, run_id in started:  # a failed test leaves no job running on the sites
        site = sites[WAYS[dag].name]
        for job_id in jobs_with_comment(identity(dag, run_id), run=on_ctl(site)):
            site.run_on(site.site.ctl, ["scancel", job_id])


def log_sizes(stack: Stack) -> dict[str, int]:
    return {name: stack.supervised(name).log_file.stat().st_size for name in LOGGED_BY}


def database_errors(stack: Stack, since: dict[str, int]) -> list[str]:
    found = []
    for name, offset in since.items():
        with open(stack.supervised(name).log_file, errors="replace") as log:
            log.seek(offset)
            found += [f"{name}: {line.strip()[:300]}" for line in log if any(e in line for e in DATABASE_ERRORS)]
    return found


def job_info_rpcs(sites: dict[str, SiteCluster]) -> dict[str, int]:
    return {name: site.job_info_rpcs() for name, site in sites.items()}


def test_twenty_runs_across_both_sites_at_once_all_succeed_with_one_job_each(
        airflow: AirflowAPI, stack: Stack, sites: dict[str, SiteCluster], runs):
    for dag in WAYS:
        airflow.wait_for_dag(dag)
    logs_before = log_sizes(stack)
    began, before = time.monotonic(), job_info_rpcs(sites)
    for number in range(RUNS_PER_WAY):
        for dag in WAYS:
            run_id = f"many-{number}-{uuid.uuid4().hex[:8]}"
            runs.append((dag, run_id))
            airflow.trigger(dag, {"seconds": JOB_S, "exit_code": 0}, run_id=run_id)
    assert len(runs) == 20
    for dag, run_id in runs:
        assert airflow.wait_for_run(dag, run_id, timeout_s=900)["state"] == "success", (dag, run_id)
    after, period = job_info_rpcs(sites), time.monotonic() - began
    for dag, run_id in runs:
        jobs = jobs_with_comment(identity(dag, run_id), run=on_ctl(sites[WAYS[dag].name]))
        assert len(jobs) == 1, (dag, run_id, jobs)  # no duplicate
    assert database_errors(stack, logs_before) == []
    # the hosts that wait on a cluster, each asking once per interval whatever waits there: on the Airflow
    # host, both triggerers and both connections to site B (SSH and slurmrestd) share one answer; on site
    # A's login node, the Edge worker's waiting tasks share theirs. Site B is waited on from one host, site A
    # from two (this test reaches it through its Edge worker and over SSH at once). Over the whole period
    # (watchers ask only while they have jobs); with a call per job it would be up to 10 per interval
    places = {"site_a": 2, "site_b": 1}
    per_interval = {name: (after[name] - before[name]) / (period / POLL_INTERVAL_S) for name in sites}
    for name, rate in per_interval.items():
        assert rate <= places[name] * 1.1, (name, per_interval, places, round(period))
