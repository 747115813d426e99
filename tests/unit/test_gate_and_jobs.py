"""Pure parts of the pipeline: the promotion gate, batch scripts, REST job fields, V2 requests."""

from __future__ import annotations

from operators.registry.gate import decide
from operators.serving.checks import v2_smoke_inputs
from operators.slurm.rest import accounting_record, rest_job_fields
from operators.slurm.script import BatchJob, render

THRESHOLDS = {"roc_auc": 0.95, "accuracy": 0.9}


def test_first_version_meeting_thresholds_is_promoted():
    decision = decide({"roc_auc": 0.99, "accuracy": 0.95}, None, THRESHOLDS, "roc_auc", 0.0)
    assert decision.promote
    assert any("no champion yet" in reason for reason in decision.reasons)


def test_threshold_miss_blocks_promotion_and_says_which():
    decision = decide({"roc_auc": 0.99, "accuracy": 0.6}, None, THRESHOLDS, "roc_auc", 0.0)
    assert not decision.promote
    assert "accuracy 0.6000 below threshold 0.9" in decision.reasons


def test_worse_than_champion_is_not_promoted():
    decision = decide({"roc_auc": 0.97, "accuracy": 0.95}, {"roc_auc": 0.99}, THRESHOLDS, "roc_auc", 0.0)
    assert not decision.promote
    assert decision.champion == 0.99
    assert any("below the required" in reason for reason in decision.reasons)


def test_minimum_improvement_is_required():
    just_better = decide({"roc_auc": 0.991, "accuracy": 0.95}, {"roc_auc": 0.99}, THRESHOLDS, "roc_auc", 0.005)
    clearly_better = decide({"roc_auc": 0.999, "accuracy": 0.95}, {"roc_auc": 0.99}, THRESHOLDS, "roc_auc", 0.005)
    assert not just_better.promote and clearly_better.promote


def test_missing_metric_fails_closed():
    assert not decide({"accuracy": 0.95}, None, THRESHOLDS, "roc_auc", 0.0).promote


JOB = BatchJob(name="pipeline.train", account="demo", partition="cpu", cpus=2, memory="1G", time="01:30:00",
               gpus=1, workdir="/jobs/run 1", commands=[["python", "train.py", "--params", "p; rm -rf /"]],
               env_file="/jobs/run 1/job.env", comment="airflow:d/r/t/-1")


def test_batch_script_quotes_everything_it_did_not_write():
    script = render(JOB)
    assert script.startswith("#!/bin/bash\n")
    assert "#SBATCH --account=demo" in script and "#SBATCH --gres=gpu:1" in script
    assert "#SBATCH '--chdir=/jobs/run 1'" in script
    assert "python train.py --params 'p; rm -rf /'" in script
    assert "source '/jobs/run 1/job.env'; set +a; rm -f '/jobs/run 1/job.env'" in script


def test_rest_fields_carry_what_sbatch_lines_would():
    fields = rest_job_fields(JOB)
    assert fields["memory_per_node"] == 1024 and fields["time_limit"] == 90
    assert fields["cpus_per_task"] == 2 and fields["gres"] == "gpu:1"
    assert fields["standard_output"] == "/jobs/run 1/slurm-%j.out"
    assert fields["comment"] == "airflow:d/r/t/-1"


def test_max_rss_is_the_largest_step_peak():
    record = {"job_id": 1, "steps": [
        {"tres": {"requested": {"max": [{"type": "mem", "count": 5}, {"type": "cpu", "count": 9}]}}},
        {"tres": {"requested": {"max": [{"type": "mem", "count": 70}]}}}]}
    assert accounting_record(record).max_rss_bytes == 70
    assert accounting_record({"job_id": 1, "steps": []}).max_rss_bytes is None


def test_smoke_request_has_one_input_per_named_column():
    example = {"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2.5], [3, 4]]}}
    assert v2_smoke_inputs(example) == [
        {"name": "a", "shape": [2, 1], "datatype": "FP64", "data": [1.0, 3.0]},
        {"name": "b", "shape": [2, 1], "datatype": "FP64", "data": [2.5, 4.0]},
    ]


def test_job_environment_file_keeps_values_literal(tmp_path):
    """Secrets with shell characters must reach the job unchanged, never expanded by bash."""
    import getpass
    import subprocess

    from operators.slurm.files import SharedFiles
    from operators.slurm.operators import SlurmJobOperator

    tricky = "p$HOME`id`\"'; echo pwned"
    operator = SlurmJobOperator(task_id="t", commands=[["true"]], env={"SECRET": tricky, "PLAIN": "x"})
    workdir = tmp_path / "dag" / "run" / "task"
    SharedFiles().stage(str(workdir), operator._files("#!/bin/bash\n", operator.env), getpass.getuser())
    env_file = workdir / "job.env"
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    shown = subprocess.run(["bash", "-c", f"set -a; source {env_file}; printf %s \"$SECRET\""],
                           capture_output=True, text=True, check=True).stdout
    assert shown == tricky


def test_staging_hands_the_job_user_only_the_folders_it_made(tmp_path):
    """Handing a parent folder to the job user would let a job replace the stack's venvs or secrets."""
    import os
    import pwd

    import pytest

    from operators.slurm.files import SharedFiles

    if os.geteuid() != 0:
        pytest.skip("changing file owners needs root (CI runs as root)")
    try:
        job_user = pwd.getpwnam("hpcuser")
    except KeyError:
        pytest.skip("the stack's job user hpcuser does not exist yet (./factory setup creates it)")
    jobs_root = tmp_path / "jobs"
    jobs_root.mkdir()
    workdir = jobs_root / "dag" / "run"
    SharedFiles().stage(str(workdir), {"job.sh": b"#!/bin/bash\n"}, "hpcuser")
    assert tmp_path.stat().st_uid == 0 and jobs_root.stat().st_uid == 0
    for made in (jobs_root / "dag", workdir, workdir / "job.sh"):
        assert made.stat().st_uid == job_user.pw_uid, made


def test_a_site_s_job_s3_endpoint_replaces_the_workers_one_and_nothing_else():
    from operators.slurm.operators import job_environment

    credentials = [{"AWS_ACCESS_KEY_ID": "k", "AWS_ENDPOINT_URL": "http://127.0.0.1:8333"},
                   {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"}]
    site = {"job_s3_endpoint": "http://10.77.1.1:18331"}
    assert job_environment({"A": "1"}, credentials, site) == {
        "A": "1", "AWS_ACCESS_KEY_ID": "k", "AWS_ENDPOINT_URL": "http://10.77.1.1:18331",
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"}
    assert job_environment({}, credentials, {})["AWS_ENDPOINT_URL"] == "http://127.0.0.1:8333"
    assert "AWS_ENDPOINT_URL" not in job_environment({}, credentials[1:], site), "no S3 connection, no endpoint"
