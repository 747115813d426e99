"""What the Slurm transports read from Slurm's answers, without a cluster.

The sacct text and the v0.0.38 JSON below are real answers of the local Slurm 22.05 cluster; the v0.0.40+
JSON follows the shapes of later slurmrestd versions (states as lists, numbers as ``{"set", "number"}``).
"""

from __future__ import annotations

import importlib.resources
import json
from datetime import datetime
from importlib.metadata import entry_points
from typing import Any

import jsonschema
import pytest

from operators.provider import get_provider_info
from operators.slurm.budget import Allocation, over_budget, parse_sshare, request_minutes
from operators.slurm.cli import parse_sacct
from operators.slurm.model import (
    ControllerUnreachable,
    JobAccounting,
    JobStatus,
    SlurmError,
    SlurmUnavailable,
    is_transient,
)
from operators.slurm.rest import _status, accounting_record
from operators.slurm.retry import RetryWithDeadline
from operators.slurm.script import BatchJob
from operators.slurm.transports import make_transport

# sacct --noheader --parsable2 --format=JobID,State,ExitCode,Reason,ElapsedRaw,TotalCPU,MaxRSS,AllocTRES,
# ConsumedEnergyRaw,User for: exit 3; kill -9 of the batch shell; scancel of a sleep (hpcuser is uid 999);
# a 2-GPU job holding 170 MB. The cluster runs without PrologFlags=Contain, so it writes no .extern step:
# the one row marked below has the shape such clusters add, with the small MaxRSS that must not win.
SACCT_2205 = """\
65|FAILED|3:0|None|0|00:00.001||billing=1,cpu=1,mem=128M,node=1||hpcuser
65.batch|FAILED|3:0||0|00:00.001|0|cpu=1,mem=128M,node=1|0|
66|FAILED|0:9|None|0|00:00.002||billing=1,cpu=1,mem=128M,node=1||hpcuser
66.batch|CANCELLED|0:9||0|00:00.002|0|cpu=1,mem=128M,node=1|0|
67|CANCELLED by 999|0:0|None|2|00:00.001||billing=1,cpu=1,mem=128M,node=1||hpcuser
67.batch|CANCELLED|0:15||3|00:00.001|224K|cpu=1,mem=128M,node=1|0|
72|COMPLETED|0:0|None|8|00:00.282||billing=1,cpu=1,gres/gpu=2,mem=256M,node=1||hpcuser
72.batch|COMPLETED|0:0||8|00:00.282|176956K|cpu=1,gres/gpu=2,mem=256M,node=1|0|
72.extern|COMPLETED|0:0||8|00:00:00|924K|billing=1,cpu=1,gres/gpu=2,mem=256M,node=1|0|
"""


@pytest.fixture(scope="module")
def sacct() -> dict[int, JobAccounting]:
    return parse_sacct(SACCT_2205)


def test_sacct_job_rows_make_one_record_each_and_steps_do_not(sacct):
    assert sorted(sacct) == [65, 66, 67, 72]
    assert all(record.user == "hpcuser" for record in sacct.values())


def test_sacct_exit_code_and_signal(sacct):
    assert (sacct[65].state, sacct[65].exit_code) == ("FAILED", 3)
    assert (sacct[66].state, sacct[66].exit_code) == ("FAILED", 137), "0:9 is SIGKILL: 128 + 9"


def test_sacct_cancelled_by_a_uid_is_cancelled(sacct):
    assert sacct[67].state == "CANCELLED"
    assert sacct[67].exit_code == 0, "the job row's 0:0 counts, not the batch step's 0:15"


def test_sacct_max_rss_is_the_largest_step_peak(sacct):
    assert sacct[72].max_rss_bytes == 176956 * 1024
    assert sacct[67].max_rss_bytes == 224 * 1024
    assert sacct[65].max_rss_bytes == 0


def test_sacct_gpu_hours_from_alloc_tres(sacct):
    record = sacct[72]
    assert (record.state, record.exit_code, record.elapsed_s, record.gpus) == ("COMPLETED", 0, 8, 2)
    assert record.gpu_hours == round(2 * 8 / 3600, 6)
    assert record.cpu_time_s == pytest.approx(0.282)
    assert (sacct[65].gpus, sacct[65].gpu_hours) == (0, 0.0)
    assert record.energy_j is None, "ConsumedEnergyRaw 0 means no energy plugin, not zero joules"


# slurmrestd v0.0.38 (Slurm 22.05), trimmed to the fields the transport reads: GET /slurm/v0.0.38/job/65
CONTROLLER_JOB_V38 = {
    "job_id": 65, "job_state": "FAILED", "exit_code": 768, "state_reason": "NonZeroExitCode",
    "start_time": 1795354054, "restart_cnt": 0, "comment": "transport-test:rest:1",
    "current_working_directory": "/var/lib/aifactory/jobs/transport-tests/rest/job"}

# GET /slurmdb/v0.0.38/job/72, trimmed
ACCOUNTING_V38: dict[str, Any] = {
    "job_id": 72, "user": "hpcuser",
    "state": {"current": "COMPLETED", "reason": "None"},
    "exit_code": {"status": "SUCCESS", "return_code": 0},
    "time": {"elapsed": 8, "total": {"seconds": 0, "microseconds": 0}},
    "tres": {"allocated": [{"type": "cpu", "name": None, "id": 1, "count": 1},
                           {"type": "mem", "name": None, "id": 2, "count": 256},
                           {"type": "energy", "name": None, "id": 3, "count": None},
                           {"type": "gres", "name": "gpu", "id": 1001, "count": 2}]},
    "steps": [{
        "step": {"job_id": 72, "id": "batch", "name": "batch"},
        "time": {"elapsed": 8, "total": {"seconds": 0, "microseconds": 282835}},
        "tres": {"requested": {"max": [{"type": "cpu", "name": None, "id": 1, "count": 280},
                                       {"type": "mem", "name": None, "id": 2, "count": 181202944},
                                       {"type": "vmem", "name": None, "id": 7, "count": 181202944}]},
                 "consumed": {"max": [{"type": "energy", "name": None, "id": 3, "count": 0},
                                      {"type": "fs", "name": "disk", "id": 6, "count": 1}]}},
    }],
}


def number(value: int) -> dict[str, Any]:
    return {"set": True, "infinite": False, "number": value}


UNSET = {"set": False, "infinite": False, "number": 0}

# v0.0.40+ (Slurm 23.11 onwards)
CONTROLLER_JOB_V40 = {
    "job_id": 65, "job_state": ["FAILED"], "state_reason": "NonZeroExitCode",
    "exit_code": {"status": ["EXITED"], "return_code": number(3), "signal": {"id": UNSET, "name": ""}},
    "start_time": number(1795354054), "restart_cnt": number(2), "comment": "c",
    "current_working_directory": "/w"}

ACCOUNTING_V40: dict[str, Any] = {
    "job_id": 80, "user": "hpcuser",
    "state": {"current": ["FAILED"], "reason": "None"},
    "exit_code": {"status": ["EXITED"], "return_code": number(3), "signal": {"id": UNSET, "name": ""}},
    "time": {"elapsed": 10, "total": {"seconds": 0, "microseconds": 0}},
    "tres": {"allocated": [{"type": "gres", "name": "gpu", "id": 1001, "count": 1}]},
    "restart_cnt": number(1),
    "steps": [
        {"time": {"total": {"seconds": 1, "microseconds": 500000}},
         "tres": {"requested": {"max": [{"type": "mem", "count": 1048576}]},
                  "consumed": {"max": [{"type": "energy", "count": 42}]}}},
        {"time": {"total": {"seconds": 0, "microseconds": 250000}},
         "tres": {"requested": {"max": [{"type": "mem", "count": 4096}]}, "consumed": {"max": []}}},
    ],
}


def test_status_from_a_v0_0_38_job():
    status = _status(CONTROLLER_JOB_V38)
    assert status == JobStatus(65, "FAILED", 3, "NonZeroExitCode",
                               datetime.fromtimestamp(1795354054).isoformat(timespec="seconds"), 0,
                               "transport-test:rest:1", "/var/lib/aifactory/jobs/transport-tests/rest/job")
    assert _status({**CONTROLLER_JOB_V38, "state_reason": "None", "comment": None}).reason == ""


def test_status_from_a_v0_0_40_job():
    status = _status(CONTROLLER_JOB_V40)
    assert (status.job_id, status.state, status.exit_code, status.reason) == (65, "FAILED", 3, "NonZeroExitCode")
    assert status.start_time == datetime.fromtimestamp(1795354054).isoformat(timespec="seconds")
    assert (status.restarts, status.comment, status.workdir) == (2, "c", "/w")


def test_status_signal_reads_128_plus_n_from_v0_0_40():
    killed = {**CONTROLLER_JOB_V40, "exit_code": {"status": ["SIGNALED"], "return_code": number(0),
                                                  "signal": {"id": number(9), "name": "KILL"}}}
    assert _status(killed).exit_code == 137


def test_status_signal_reads_128_plus_n_from_v0_0_38():
    # the real v0.0.38 answer for a job whose batch shell got SIGKILL (sacct: 0:9)
    assert _status({**CONTROLLER_JOB_V38, "exit_code": 9, "state_reason": "JobLaunchFailure"}).exit_code == 137


def test_accounting_record_from_v0_0_38():
    record = accounting_record(ACCOUNTING_V38)
    assert record == JobAccounting(72, "COMPLETED", 0, "", 8, 0.283, 181202944, 2, round(2 * 8 / 3600, 6), None,
                                   0, "hpcuser")


def test_accounting_record_from_v0_0_40():
    record = accounting_record(ACCOUNTING_V40)
    assert (record.job_id, record.state, record.exit_code, record.reason) == (80, "FAILED", 3, "")
    assert record.cpu_time_s == pytest.approx(1.75)
    assert (record.max_rss_bytes, record.energy_j, record.restarts) == (1048576, 42, 1)
    assert (record.gpus, record.gpu_hours) == (1, round(10 / 3600, 6))


def test_accounting_record_signal_reads_128_plus_n_from_v0_0_38():
    # the real v0.0.38 record of a job whose batch shell got SIGKILL
    killed = {**ACCOUNTING_V38, "state": {"current": "FAILED", "reason": "None"},
              "exit_code": {"status": "SIGNALED", "return_code": None, "signal": {"signal_id": 9, "name": "Killed"}}}
    assert accounting_record(killed).exit_code == 137


@pytest.mark.parametrize("state", ["PREEMPTED", "NODE_FAIL"])
def test_requeued_jobs_are_not_ended_by_preemption_or_node_failure(state):
    status = JobStatus(1, state)
    assert status.finished
    assert not status.ended(requeue=True), "Slurm puts it back in the queue under the same id"
    assert status.ended(requeue=False)


@pytest.mark.parametrize("state", ["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY"])
def test_other_final_states_end_a_job_either_way(state):
    assert JobStatus(1, state).ended(requeue=True) and JobStatus(1, state).ended(requeue=False)


@pytest.mark.parametrize(("message", "transient"), [
    ("sbatch: error: Batch job submission failed: Socket timed out on send/recv operation", True),
    ("squeue: error: Unable to contact slurm controller (connect failure)", True),
    ("sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified",
     False),
])
def test_is_transient(message, transient):
    assert is_transient(message) is transient


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_retry_pauses_double_up_to_the_cap_and_success_resets():
    clock = FakeClock()
    retry = RetryWithDeadline(unreachable_limit_s=600, first_pause_s=1, max_pause_s=8, clock=clock)
    error = SlurmUnavailable("Socket timed out on send/recv operation")
    assert [retry.failure(error) for _ in range(6)] == [1, 2, 4, 8, 8, 8]
    assert retry.failing
    retry.success()
    assert not retry.failing
    assert retry.failure(error) == 1, "after a success the pauses start small again"


def test_retry_gives_up_after_the_limit_naming_it():
    clock = FakeClock()
    retry = RetryWithDeadline(unreachable_limit_s=30, first_pause_s=1, max_pause_s=60, clock=clock)
    error = SlurmUnavailable("Unable to contact slurm controller (connect failure)")
    retry.failure(error)
    clock.now += 30
    retry.failure(error)  # exactly at the limit: still waiting
    clock.now += 1
    with pytest.raises(ControllerUnreachable, match=r"for 31 s \(limit 30 s\); last error: Unable to contact"):
        retry.failure(error)


def test_retry_call_retries_transient_errors_only():
    clock = FakeClock()
    retry = RetryWithDeadline(unreachable_limit_s=600, clock=clock)
    answers: list[Exception | str] = [SlurmUnavailable("Socket timed out"), SlurmUnavailable("Socket timed out"),
                                      "ok"]
    pauses: list[float] = []

    def answer() -> str:
        result = answers.pop(0)
        if isinstance(result, Exception):
            raise result
        return result

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        clock.now += seconds

    assert retry.call(answer, sleep=sleep) == "ok"
    assert pauses == [1, 2] and not retry.failing

    def refuse() -> str:
        raise SlurmError("Invalid account or account/partition combination specified")

    with pytest.raises(SlurmError, match="Invalid account"):
        retry.call(refuse, sleep=sleep)
    assert pauses == [1, 2], "a refusal is not retried"


def test_make_transport_names_the_valid_kinds():
    with pytest.raises(SlurmError, match=r"unknown Slurm transport 'nope': choose one of local, pyslurm, rest, ssh$"):
        make_transport("nope")


def airflow_schema(name: str) -> dict[str, Any]:
    return json.loads(importlib.resources.files("airflow").joinpath(name).read_text())


def test_provider_info_passes_airflows_runtime_schema():
    info = get_provider_info()
    schema = airflow_schema("provider_info.schema.json")
    jsonschema.validators.validator_for(schema)(schema).validate(info)  # what Airflow's providers manager does
    # the form's field behaviour, keys converted as ProvidersManager._add_customized_fields does before checking
    behaviour = info["connection-types"][0]["ui-field-behaviour"]
    customized = {"hidden_fields": behaviour.get("hidden-fields", []), "relabeling": behaviour.get("relabeling", {}),
                  "placeholders": behaviour.get("placeholders", {})}
    behaviour_schema = airflow_schema("customized_form_field_behaviours.schema.json")
    jsonschema.validators.validator_for(behaviour_schema)(behaviour_schema).validate(customized)


def test_provider_info_declares_the_slurm_connection_type():
    (connection,) = get_provider_info()["connection-types"]
    assert connection["connection-type"] == "slurm"
    assert connection["hook-class-name"] == "operators.slurm.hooks.SlurmHook"
    assert connection["conn-fields"]["transport"]["schema"]["enum"] == ["local", "ssh", "rest", "pyslurm"]


def test_the_provider_entry_point_is_registered():
    ours = [point for point in entry_points(group="apache_airflow_provider")
            if point.dist is not None and point.dist.name == "ai-factory-pipelines"]
    assert len(ours) == 1, ours
    assert ours[0].load() is get_provider_info


# ------------------------------------------------------------------ a wrong exit code is impossible

def test_a_failed_job_is_never_reported_with_exit_code_0() -> None:
    """Accounting caught between two writes (FAILED with 0:0 while the batch step says 3:0, seen on a busy
    2-core machine) yields the batch step's code; a FAILED 0 with nothing better is not final yet."""
    from operators.slurm.model import JobAccounting, settled
    from operators.slurm.transport import ControlChannel

    half_written = ("81|FAILED|0:0|None|2|00:00.010||cpu=1,mem=1G,node=1|0|hpcuser\n"
                    "81.batch|FAILED|3:0||2|00:00.010|1024K|||\n")
    assert (parse_sacct(half_written)[81].state, parse_sacct(half_written)[81].exit_code) == ("FAILED", 3)
    assert not settled(JobAccounting(81, "FAILED", 0)) and not settled(JobAccounting(81, "COMPLETED", 3))
    assert settled(JobAccounting(81, "FAILED", 3)) and settled(JobAccounting(81, "COMPLETED", 0))
    assert settled(JobAccounting(81, "CANCELLED", 0)) and settled(JobAccounting(81, "TIMEOUT", 0))

    class HalfWritten(ControlChannel):
        kind = "test"
        submit = jobs = cancel = describe = None  # type: ignore[assignment]

        def accounting(self, job_ids, since=None):
            return {81: JobAccounting(81, "FAILED", 0)}

    assert HalfWritten().final(81) is None  # asked again later; after the operator's deadline: no exit code at all


# ---------------------------------------------------------------------------------------------- allocations
SSHARE_OUTPUT = (
    "root|||cpu=0,mem=3,node=0,billing=0,gres/gpu=0|cpu=0,node=0,gres/gpu=0\n"
    " tight|||cpu=10,node=20\n"  # too few fields: a different sshare; not read as a limit
    " proj42||cpu=6000,gres/gpu=1200|cpu=4100,mem=9,node=700,billing=4100,gres/gpu=300|cpu=400,gres/gpu=100\n"
    "  proj42|alice|cpu=6000|cpu=4000,gres/gpu=290|cpu=400\n"
)


def budget_job(**overrides: Any) -> BatchJob:
    fields = dict(name="n", account="proj42", partition=None, cpus=4, memory="1G", time="02:00:00", gpus=1,
                  workdir="/w", commands=[["true"]], nodes=2, tasks_per_node=1)
    return BatchJob(**{**fields, **overrides})


def test_the_account_row_gives_limit_usage_and_what_running_jobs_hold():
    allocations = parse_sshare(SSHARE_OUTPUT, "proj42")
    assert allocations == [Allocation("proj42", "cpu", 6000, 4100, 400),
                           Allocation("proj42", "gres/gpu", 1200, 300, 100)]
    assert [a.remaining_minutes for a in allocations] == [1500, 800]
    assert allocations[0].describe() == "1500 CPU-minutes left of 6000 (account proj42)"
    assert parse_sshare(SSHARE_OUTPUT, "root") == []  # no GrpTRESMins: nothing to check
    assert parse_sshare(SSHARE_OUTPUT, "alice") == []  # a user row is not an account
    assert parse_sshare("", "proj42") == []


def test_a_job_larger_than_what_is_left_is_refused_with_both_figures():
    allocations = parse_sshare(SSHARE_OUTPUT, "proj42")
    assert request_minutes(budget_job()) == {"cpu": 960, "node": 240, "gres/gpu": 240, "billing": 960}
    assert over_budget(budget_job(), allocations) is None
    refused = over_budget(budget_job(time="04:00:00"), allocations)  # 1920 CPU-minutes > 1500 left
    assert refused is not None
    assert "1500 CPU-minutes left of 6000 (account proj42)" in refused and "up to 1920 CPU-minutes" in refused
    assert "time limit 04:00:00" in refused
    gpu_bound = over_budget(budget_job(cpus=1, gpus=4, time="1-00:00:00"), allocations)
    assert gpu_bound is not None and "CPU-minutes" in gpu_bound  # 2880 CPU-minutes is checked first
    assert "GPU-minutes" in (over_budget(budget_job(cpus=1, gpus=8, time="03:00:00"), allocations) or "")


def test_an_exhausted_allocation_never_reports_negative_minutes():
    spent = Allocation("proj42", "cpu", 100, 90, 50)
    assert spent.remaining_minutes == 0
    assert over_budget(budget_job(cpus=1, nodes=1, time="00:01:00"), [spent]) is not None


def test_a_jobs_cost_line_names_only_what_the_site_recorded():
    from operators.slurm.model import JobAccounting

    cpu_only = JobAccounting(5, "COMPLETED", 0, elapsed_s=6, cpu_time_s=5.429, max_rss_bytes=185884672)
    assert cpu_only.cost_line() == "elapsed 6 s, CPU time 5.429 s, MaxRSS 177 MiB"  # no "energy None J"
    gpu = JobAccounting(6, "COMPLETED", 0, elapsed_s=3600, gpus=4, gpu_hours=4.0, energy_j=1200)
    assert gpu.cost_line() == "elapsed 3600 s, GPU-hours 4, energy 1200 J"
    assert JobAccounting(7, "COMPLETED", 0).cost_line() == "no usage recorded"
