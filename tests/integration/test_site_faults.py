"""Faults at the site level, on site A of the local stack (Slurm 22.05, two compute nodes, a login node),
with a deferred ``SlurmJobOperator`` task that reaches the site only through its login node (SSH):

- the login node's link goes down for 60 s mid-job (inside its own network namespace): the task keeps
  waiting, its log says the site is unreachable and since when, and it succeeds with exactly one job once
  the link is back;
- one compute node's slurmd is killed mid-job: Slurm marks the node down (NODE_FAIL) and, the job being
  requeueable, runs it again on the other node; the task succeeds with the same single job id.

Each outage is in the task's log within one poll interval of being noticed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime

import pytest

from stack.airflow_api import AirflowAPI
from stack.clusters.site import SITE_A
from stack.manager import SiteStack, Stack
from stack.services.sites import SiteCluster
from stack.settings import StackPaths
from tests.integration.test_slurm_cancel_and_faults import begin as begin_run
from tests.integration.test_slurm_operator import TASK, identity, jobs_with_comment

DAG = "slurm_job_example_site_a"
REQUEUE_DAG = "slurm_job_example_site_a_requeue"
LINK_DOWN_S = 60
POLL_INTERVAL_S = 1.0  # the example DAGs' poll_interval_s
# noticing a dead link: a command through the ControlMaster hangs until ssh's keep-alive gives up
# (ServerAliveInterval 15 x 3) or the command's own timeout (60 s), whichever is first
NOTICED_WITHIN_S = 75


@pytest.fixture(scope="module")
def site_a() -> SiteCluster:
    paths = StackPaths.from_env()
    cluster = SiteCluster(paths, SITE_A)
    if not cluster.layout.info_file.exists():
        if os.environ.get("FACTORY_REQUIRE_STACK") == "1" and os.environ.get("FACTORY_WITH_SITES", "1") != "0":
            pytest.fail(f"site A is not up (no {cluster.layout.info_file}): ./factory stack up")
        pytest.skip(f"site A is not up (no {cluster.layout.info_file}): run ./factory stack up")
    return cluster


def on_ctl(site: SiteCluster, *command: str) -> str:
    return site.checked_on(site.site.ctl, list(command), " ".join(command))


def job_row(site: SiteCluster, job_id: int) -> dict[str, str]:
    fields = ("State", "NodeList", "Restarts", "Comment")
    out = on_ctl(site, "squeue", "-h", "-j", str(job_id), "-o", "%T|%N|%k").strip()
    if out:  # the controller's view: sacct lags a requeue by a few seconds
        state, nodes, comment = out.split("|")
        restarts = on_ctl(site, "scontrol", "show", "job", str(job_id)).split("Restarts=")[1].split()[0]
        return dict(zip(fields, (state, nodes, restarts, comment), strict=True))
    row = on_ctl(site, "sacct", "-X", "-n", "-P", "-j", str(job_id), "-o", "State,NodeList,Comment").strip()
    state, nodes, comment = row.split("|") if row else ("UNKNOWN", "", "")
    return dict(zip(fields, (state.split()[0], nodes, "?", comment), strict=True))


def jobs_of_task(site: SiteCluster, comment: str) -> list[str]:
    return jobs_with_comment(comment, run=lambda argv: on_ctl(site, *argv))


def task_events(airflow: AirflowAPI, dag: str, run_id: str) -> list[dict]:
    log = airflow.get(f"/dags/{dag}/dagRuns/{run_id}/taskInstances/{TASK}/logs/1?full_content=true")
    content = log.get("content", [])
    return [entry for entry in content if isinstance(entry, dict) and "timestamp" in entry]


def first_event(events: list[dict], text: str) -> dict | None:
    return next((entry for entry in events if text in str(entry.get("event", ""))), None)


def at(entry: dict) -> float:
    return datetime.fromisoformat(str(entry["timestamp"]).replace("Z", "+00:00")).timestamp()


@pytest.fixture
def runs(airflow: AirflowAPI, site_a: SiteCluster) -> Iterator[list[tuple[str, str]]]:
    started: list[tuple[str, str]] = []
    yield started
    for dag, run_id in started:  # a failed test leaves no job running on the site
        for job_id in jobs_of_task(site_a, identity(dag, run_id)):
            site_a.run_on(site_a.site.ctl, ["scancel", job_id])


def begin(airflow: AirflowAPI, runs: list, dag: str, seconds: int) -> tuple[str, str]:
    """The run (its jobs cancelled on the site by ``runs``) and its task's identity, the comment its jobs carry."""
    run_id = begin_run(airflow, runs, dag, seconds)
    return run_id, identity(dag, run_id)


def wait_until_running(airflow: AirflowAPI, site: SiteCluster, dag: str, run_id: str, comment: str,
                       timeout_s: float = 180) -> int:
    """The job id once the job runs and the task is deferred on it (its trigger watches it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ti = airflow.get(f"/dags/{dag}/dagRuns/{run_id}/taskInstances/{TASK}")
        assert ti["state"] not in ("failed", "success", "upstream_failed"), ti
        jobs = jobs_of_task(site, comment)
        if ti["state"] == "deferred" and jobs and job_row(site, int(jobs[0]))["State"] == "RUNNING":
            return int(jobs[0])
        time.sleep(1)
    pytest.fail(f"{dag}/{run_id}: no running, watched job in {timeout_s:.0f} s")


def ip_link(site: SiteCluster, state: str) -> None:
    login = site.site.node("login")
    subprocess.run(["ip", "-n", site.site.netns(login), "link", "set", "dev", "eth0", state], check=True)


def test_login_node_off_the_network_for_60_s_the_task_waits_says_so_and_succeeds_with_one_job(
        airflow: AirflowAPI, site_a: SiteCluster, runs):
    run_id, comment = begin(airflow, runs, DAG, seconds=150)
    job_id = wait_until_running(airflow, site_a, DAG, run_id, comment)
    went_down = time.time()
    ip_link(site_a, "down")
    try:
        deadline = time.monotonic() + LINK_DOWN_S
        while time.monotonic() < deadline:  # all the while, the task waits (deferred), never fails
            ti = airflow.get(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/{TASK}")
            assert ti["state"] == "deferred", ti
            time.sleep(5)
    finally:
        ip_link(site_a, "up")
    came_back = time.time()
    run = airflow.wait_for_run(DAG, run_id, timeout_s=300)
    events = task_events(airflow, DAG, run_id)
    assert run["state"] == "success", [entry.get("event") for entry in events][-30:]
    assert jobs_of_task(site_a, comment) == [str(job_id)]  # one job: no second submission
    assert job_row(site_a, job_id)["State"] == "COMPLETED"
    outage = first_event(events, "the cluster is unreachable since")
    assert outage is not None, [entry.get("event") for entry in events][-30:]
    assert went_down <= at(outage) <= went_down + NOTICED_WITHIN_S + POLL_INTERVAL_S, outage
    since = re.search(r"unreachable since (\S+) \(no answer for (\d+) s\)", str(outage["event"]))
    assert since, outage  # since the last good answer, before the link went down: not since the failed call
    assert went_down - 10 <= datetime.fromisoformat(since.group(1)).timestamp() <= went_down + 2, outage
    back = first_event(events, "the cluster answers again after")
    assert back is not None and came_back - 1 <= at(back) <= came_back + 60 + POLL_INTERVAL_S, back
    assert first_event(events, "tick 150") is not None  # the job's own output came through after the outage


def slurmd_pid(stack: Stack, node: str) -> int:
    pid = stack.supervised(f"site_a-slurmd-{node}").pid()
    assert pid, f"site_a-slurmd-{node} is not running"
    return pid


def test_a_compute_node_whose_slurmd_dies_fails_the_job_over_to_the_other_node_with_the_same_job(
        airflow: AirflowAPI, site_a: SiteCluster, runs):
    stack = SiteStack(StackPaths.from_env())
    # longer than slurmctld takes to call the node down (SlurmdTimeout=60 s, then its next ping): the
    # job's slurmstepd outlives slurmd, so a shorter job would simply complete on the dead node's word
    run_id, comment = begin(airflow, runs, REQUEUE_DAG, seconds=150)
    job_id = wait_until_running(airflow, site_a, REQUEUE_DAG, run_id, comment)
    first_node = job_row(site_a, job_id)["NodeList"]
    node = first_node.split("-", 1)[1]  # a-node1 -> node1
    killed = time.time()
    os.kill(slurmd_pid(stack, node), signal.SIGKILL)
    try:
        run = airflow.wait_for_run(REQUEUE_DAG, run_id, timeout_s=600)
    finally:
        stack.up(progress=lambda *_: None)  # slurmd back; ReturnToService=2 returns the node to service
        deadline = time.monotonic() + 120
        while "idle" not in on_ctl(site_a, "sinfo", "-h", "-n", first_node, "-o", "%t") \
                and time.monotonic() < deadline:
            time.sleep(2)
    events = task_events(airflow, REQUEUE_DAG, run_id)
    texts = [str(entry.get("event", "")) for entry in events]
    assert run["state"] == "success", texts[-30:]
    assert jobs_of_task(site_a, comment) == [str(job_id)]  # requeued: the same job id, no second submission
    final = on_ctl(site_a, "sacct", "-X", "-n", "-P", "-j", str(job_id), "-o", "State,NodeList").strip()
    state, ran_on = final.split("|")
    assert state == "COMPLETED" and ran_on != first_node, (final, first_node)
    history = on_ctl(site_a, "sacct", "-D", "-X", "-n", "-P", "-j", str(job_id), "-o", "State,NodeList")
    assert f"NODE_FAIL|{first_node}" in history, history
    requeued = first_event(events, "requeued 1 time(s)")  # the trigger's word on the job's new state
    assert requeued is not None, texts[-40:]
    assert at(requeued) >= killed, requeued
    assert json.dumps(texts).count("tick 150") >= 1
