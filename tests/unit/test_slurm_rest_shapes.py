"""The REST transport's readers and writers against real Slurm 24.11 answers (OpenAPI v0.0.40-42).

The fixtures are unedited slurmrestd answers from the local 24.11 cluster (``./factory slurm24 up``),
captured by ``tests/unit/fixtures/slurm24/capture.py``; ``tests/integration/test_slurm_rest_newer.py``
runs the same cases live. The hand-written v0.0.40 shapes of ``test_slurm_parsing.py`` predate them.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from operators.slurm.model import SlurmError
from operators.slurm.rest import (
    _newer_body,
    _older_body,
    _status,
    accounting_record,
    cancel_errors,
    ignored_fields,
    offered_versions,
    rest_job_fields,
    slurm_release,
    warning_fields,
)
from operators.slurm.script import BatchJob

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "slurm24"
VERSIONS = ("v0.0.40", "v0.0.41", "v0.0.42")


@cache
def answer(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def only_job(name: str) -> dict[str, Any]:
    jobs = answer(name)["jobs"]
    assert len(jobs) == 1, name
    return jobs[0]


JOB = BatchJob(name="train", account="demo", partition="gpu", cpus=2, memory="1G", time="01:30:00", gpus=1,
               workdir="/jobs/run", commands=[["python", "train.py"]], comment="airflow:d/r/t/-1",
               signal="B:USR2@300")


# ---------------------------------------------------------------- negotiation and describe

def test_24_11_offers_v0_0_40_to_42_and_negotiation_takes_v0_0_42():
    from operators.slurm.rest import SUPPORTED_VERSIONS

    offered = offered_versions(answer("openapi_paths")["paths"])
    assert offered == set(VERSIONS)
    assert next(version for version in SUPPORTED_VERSIONS if version in offered) == "v0.0.42"


def test_the_release_comes_from_the_lowercase_meta_block():
    assert slurm_release(answer("ping_v0.0.42")).startswith("24.11.")


# ---------------------------------------------------------------- writing a job

@pytest.mark.parametrize("version", VERSIONS)
def test_every_field_the_submit_body_sends_exists_in_the_job_description(version: str):
    """24.11 ignores an unknown field with a mere warning: the job would run without it."""
    known = set(answer("job_desc_fields")[version])
    fields = {**rest_job_fields(JOB), "environment": {"PATH": "/usr/bin:/bin"}}
    body = _newer_body(fields, "#!/bin/bash\ntrue\n")
    assert set(body) == {"job"}, "the script belongs in the job (top-level script is deprecated from v0.0.41)"
    assert set(body["job"]) <= known, sorted(set(body["job"]) - known)
    assert {"signal", "gres"}.isdisjoint(known), "v0.0.38's names: rest_job_fields still uses them"


def test_v0_0_38_takes_a_node_count_as_a_min_max_pair_and_no_batch_shell_signal_flag():
    """22.05 answers HTTP 400 to ``maximum_nodes``; its ``minimum_nodes`` is a prefer-fewer flag."""
    two_nodes = dataclasses.replace(JOB, nodes=2, tasks_per_node=1, gpus=0)
    body = _older_body({**rest_job_fields(two_nodes), "environment": {"PATH": "/usr/bin"}}, "script")
    assert body["job"]["nodes"] == [2, 2]
    assert {"minimum_nodes", "maximum_nodes"}.isdisjoint(body["job"])
    assert (body["job"]["signal"], body["script"]) == ("USR2@300", "script")


def test_the_submit_body_translates_signal_gres_and_numbers():
    fields = {**rest_job_fields(JOB), "environment": {"PATH": "/usr/bin:/bin", "A": "b c"}}
    job = _newer_body(fields, "script")["job"]
    assert (job["kill_warning_signal"], job["kill_warning_delay"], job["kill_warning_flags"]) == (
        "USR2", {"set": True, "number": 300}, ["BATCH_JOB"])
    assert job["tres_per_node"] == "gres/gpu:1"
    assert job["memory_per_node"] == {"set": True, "number": 1024}
    assert job["time_limit"] == {"set": True, "number": 90}
    assert job["environment"] == ["PATH=/usr/bin:/bin", "A=b c"]
    assert job["script"] == "script"


@pytest.mark.parametrize(("signal", "expected"), [
    ("B:USR2@300", ("USR2", 300, ["BATCH_JOB"])),
    ("USR1", ("USR1", 60, [])),  # sbatch's default warning time
    ("R:SIGTERM@5", ("TERM", 5, ["RESERVATION_JOB"])),
    ("10@30", ("10", 30, [])),
])
def test_warning_fields_read_sbatch_signal_syntax(signal: str, expected: tuple[str, int, list[str]]):
    fields = warning_fields(signal)
    assert (fields["kill_warning_signal"], fields["kill_warning_delay"]["number"],
            fields["kill_warning_flags"]) == expected


@pytest.mark.parametrize("signal", ["X:USR2@300", "B:USR2@soon", "B:"])
def test_warning_fields_refuse_what_sbatch_would_refuse(signal: str):
    with pytest.raises(SlurmError, match="expected"):
        warning_fields(signal)


def test_a_field_slurmrestd_ignored_is_named():
    """The real answer to a v0.0.38-style ``signal`` sent to v0.0.42: HTTP 200, a job id, one warning."""
    submitted = answer("submit_unknown_field_v0.0.42")
    assert submitted["job_id"] and not submitted["errors"]
    assert ignored_fields(submitted) == ["#/job/signal/"]
    assert ignored_fields({"job_id": 1, "warnings": []}) == []


# ---------------------------------------------------------------- cancel

def test_cancelling_an_unknown_job_is_an_error_in_v0_0_42_status():
    assert cancel_errors(answer("cancel_unknown_v0.0.42")) == ["Invalid job id specified"]


@pytest.mark.parametrize("version", ["v0.0.40", "v0.0.41"])
def test_v0_0_40_and_41_say_nothing_about_an_unknown_job(version: str):
    assert answer(f"cancel_unknown_{version}") == {"errors": [], "warnings": []}
    assert cancel_errors(answer(f"cancel_unknown_{version}")) == []


# ---------------------------------------------------------------- the controller's view

@pytest.mark.parametrize("version", VERSIONS)
def test_a_job_that_exited_3(version: str):
    status = _status(only_job(f"job_exit3_{version}"))
    assert (status.state, status.exit_code, status.reason, status.restarts) == ("FAILED", 3, "NonZeroExitCode", 0)
    assert status.comment.startswith("fixture:exit3:")
    assert status.workdir.endswith(f"/slurm24-fixtures/{version}/exit3")


@pytest.mark.parametrize("version", VERSIONS)
def test_a_job_killed_by_sigkill_reads_137(version: str):
    """return_code is unset ({"set": false}) and signal.id 9: 128 + 9, as sacct's ``0:9``."""
    status = _status(only_job(f"job_sigkill_{version}"))
    assert (status.state, status.exit_code, status.reason) == ("FAILED", 137, "RaisedSignal")


def test_a_running_job():
    status = _status(only_job("job_running_v0.0.42"))
    assert (status.state, status.exit_code, status.reason) == ("RUNNING", 0, "")
    assert status.start_time is not None


def test_a_job_waiting_for_its_begin_time_has_reason_and_expected_start():
    raw = only_job("job_pending_begintime_v0.0.42")
    status = _status(raw)
    assert (status.state, status.reason) == ("PENDING", "BeginTime")
    assert status.start_time == datetime.fromtimestamp(raw["start_time"]["number"]).isoformat(timespec="seconds")
    assert raw["start_time"]["number"] - raw["submit_time"]["number"] == 3600


# ---------------------------------------------------------------- slurmdbd's records

@pytest.mark.parametrize("version", VERSIONS)
def test_accounting_of_a_completed_job(version: str):
    record = accounting_record(only_job(f"db_completed_{version}"))
    assert (record.state, record.exit_code, record.reason, record.restarts) == ("COMPLETED", 0, "", 0)
    assert record.elapsed_s is not None and record.elapsed_s >= 7, record
    assert record.cpu_time_s is not None and record.cpu_time_s > 0.1, record
    assert record.max_rss_bytes is not None and record.max_rss_bytes > 60_000_000, record  # the 60 MB string
    assert (record.gpus, record.gpu_hours, record.user) == (0, 0.0, "hpcuser")


@pytest.mark.parametrize("version", VERSIONS)
def test_accounting_of_exit_3_is_right_on_24_11(version: str):
    """22.05's slurmdbd records 0 here (the transport asks the controller); 24.11's has it right."""
    record = accounting_record(only_job(f"db_exit3_{version}"))
    assert (record.state, record.exit_code) == ("FAILED", 3)


@pytest.mark.parametrize("version", VERSIONS)
def test_accounting_of_a_sigkilled_job_reads_137(version: str):
    assert accounting_record(only_job(f"db_sigkill_{version}")).exit_code == 137


@pytest.mark.parametrize("version", VERSIONS)
def test_accounting_of_a_cancelled_job(version: str):
    record = accounting_record(only_job(f"db_cancelled_{version}"))
    assert (record.state, record.exit_code) == ("CANCELLED", 0)


def test_v0_0_40_records_have_no_restart_count():
    assert "restart_cnt" not in only_job("db_exit3_v0.0.40")
    assert accounting_record(only_job("db_exit3_v0.0.40")).restarts == 0


@pytest.mark.parametrize("version", ["v0.0.40", "v0.0.42"])
def test_one_query_by_step_answers_for_every_known_job(version: str):
    """``/slurmdb/{v}/jobs/?step=A&step=B&step=1``: the records of A and B, none for the unknown 1."""
    records = [accounting_record(record) for record in answer(f"db_jobs_by_step_{version}")["jobs"]]
    assert sorted((record.state, record.exit_code) for record in records) == [("COMPLETED", 0), ("FAILED", 3)]
    assert 1 not in {record.job_id for record in records}
