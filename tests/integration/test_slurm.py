"""The local Slurm cluster behaves like a factory's: accounting, limits, GPUs, users, REST."""

from __future__ import annotations

import json
import time
import urllib.request

from tests.integration.conftest import sacct_row


def test_job_runs_as_unprivileged_user_and_is_accounted(run_job, stack_info):
    job = run_job('echo "user=$(id -un) uid=$(id -u)"')
    assert job.state == "COMPLETED"
    assert job.exit_code == "0:0"
    assert job.user == stack_info["job_user"]
    assert job.account == stack_info["account"]
    assert f"user={stack_info['job_user']}" in job.output
    assert "uid=0" not in job.output


def test_failing_script_reports_its_exit_code(run_job):
    job = run_job("exit 3")
    assert job.state == "FAILED"
    assert job.exit_code == "3:0"  # text sacct is right on 22.05; its JSON says 0


def test_job_over_its_memory_limit_ends_out_of_memory(run_job, job_python):
    grab_memory = (f"{job_python} -c 'import time\nblocks = []\n"
                   "for _ in range(40):\n    blocks.append(bytearray(20 * 2**20)); time.sleep(0.05)'")
    job = run_job(grab_memory, "--mem=100M")
    assert job.state == "OUT_OF_MEMORY"


def test_gpu_partition_hands_out_fake_gpus(run_job):
    job = run_job('echo "gpus=$CUDA_VISIBLE_DEVICES partition=$SLURM_JOB_PARTITION"', "--partition=gpu",
                  "--gres=gpu:2")
    assert job.state == "COMPLETED"
    assert "partition=gpu" in job.output
    assert "gpus=0,1" in job.output


def test_user_without_association_is_rejected(stack_info):
    import subprocess

    result = subprocess.run(["runuser", "-u", "nobody", "--", "sbatch", "--wrap", "true"],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "Invalid account" in result.stderr


def test_slurmrestd_submits_with_jwt_as_the_job_user(stack_info):
    rest = stack_info["slurmrestd"]
    headers = {"X-SLURM-USER-NAME": rest["user"], "X-SLURM-USER-TOKEN": rest["token"],
               "Content-Type": "application/json"}
    body = {"job": {"name": "rest-submit-test", "account": stack_info["account"],
                    "current_working_directory": stack_info["jobs_dir"],
                    "environment": {"PATH": "/usr/bin:/bin"}},
            "script": "#!/bin/bash\nid -un\n"}
    request = urllib.request.Request(f"{rest['url']}/slurm/v0.0.38/job/submit", method="POST",
                                     data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        job_id = str(json.load(response)["job_id"])
    deadline = time.monotonic() + 60
    while (row := sacct_row(job_id)) is None or row["State"] in ("PENDING", "RUNNING", "COMPLETING"):
        assert time.monotonic() < deadline, f"REST job {job_id} did not finish: {row}"
        time.sleep(0.5)
    assert row["State"] == "COMPLETED"
    assert row["User"] == stack_info["job_user"]


def test_slurmrestd_rejects_a_forged_token(stack_info):
    rest = stack_info["slurmrestd"]
    header, claims, _signature = rest["token"].split(".")
    forged = f"{header}.{claims}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    request = urllib.request.Request(f"{rest['url']}/slurm/v0.0.38/ping",
                                     headers={"X-SLURM-USER-NAME": rest["user"], "X-SLURM-USER-TOKEN": forged})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    assert status >= 400  # 22.05 answers a bad token with 500, not 401
