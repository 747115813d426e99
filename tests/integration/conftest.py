from __future__ import annotations

import os
import shlex
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver


@dataclass
class FinishedJob:
    job_id: str
    state: str
    exit_code: str
    user: str
    account: str
    partition: str
    output: str


def sacct_row(job_id: str) -> dict[str, str] | None:
    fields = ["JobID", "State", "ExitCode", "User", "Account", "Partition", "Elapsed", "MaxRSS"]
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job_id, "--starttime", "now-1days",
                          "-o", ",".join(fields)], capture_output=True, text=True, check=True).stdout
    lines = [line for line in out.splitlines() if line.startswith(job_id + "|")]
    return dict(zip(fields, lines[0].split("|"), strict=True)) if lines else None


@pytest.fixture
def run_job(stack_info):
    """Submit a batch script as the unprivileged job user with sbatch and wait for accounting."""
    jobs_dir = Path(stack_info["jobs_dir"])

    def submit(body: str, *sbatch_args: str, timeout_s: float = 60) -> FinishedJob:
        name = f"test-{uuid.uuid4().hex[:8]}"
        script = jobs_dir / f"{name}.sh"
        script.write_text("#!/bin/bash\nset -e\n" + body + "\n")
        script.chmod(0o644)
        output = jobs_dir / f"{name}.out"
        command = ["runuser", "-u", stack_info["job_user"], "--", "sbatch", "--parsable",
                   f"--account={stack_info['account']}", f"--job-name={name}", f"--output={output}",
                   f"--chdir={jobs_dir}", *sbatch_args, str(script)]
        submitted = subprocess.run(command, capture_output=True, text=True)
        assert submitted.returncode == 0, f"{shlex.join(command)}: {submitted.stderr}"
        job_id = submitted.stdout.strip().split(";")[0]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            row = sacct_row(job_id)
            if row and row["State"] not in ("PENDING", "RUNNING", "COMPLETING", "REQUEUED"):
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"job {job_id} did not finish in {timeout_s} s: {row}")
        text = output.read_text() if output.exists() else ""
        return FinishedJob(job_id, row["State"], row["ExitCode"], row["User"], row["Account"],
                           row["Partition"], text)

    return submit


@pytest.fixture(scope="module")
def production_stack():
    """The stack on its production profile (Celery, two triggerers, the Edge worker, PostgreSQL): what the
    engine's fault and load tests need. Another profile skips them, saying why; under ``./factory test``
    (``FACTORY_REQUIRE_STACK=1``) it fails them."""
    from stack.manager import Stack
    from stack.settings import StackPaths

    paths = StackPaths.from_env()
    if paths.profile() != "production":
        message = (f"the stack runs the {paths.profile()!r} profile; this needs Celery workers, two triggerers "
                   "and the Edge worker: ./factory stack up --profile production")
        if os.environ.get("FACTORY_REQUIRE_STACK") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return Stack(paths)


@pytest.fixture(scope="module")
def airflow(stack_info, request):
    """Airflow's REST API as the stack's admin; waits for the module's ``DAG`` to be parsed."""
    from stack.airflow_api import AirflowAPI

    api = AirflowAPI.of_stack(stack_info)
    dag_id = getattr(request.module, "DAG", None)
    if dag_id:
        api.wait_for_dag(dag_id)
    return api


@pytest.fixture(scope="module")
def browser(stack_info) -> Iterator[WebDriver]:
    """A headless Chromium logged in to the Airflow UI as the stack's admin (UI and plugin pages).

    Skips, naming the binary, when Debian's chromium or chromedriver is absent (stack/install.sh
    installs both, so ``./factory test`` normally runs these tests).
    """
    from tests.integration.browser import missing_binaries, open_browser

    if missing := missing_binaries():
        pytest.skip(f"no headless browser: {', '.join(missing)} not installed (apt-get install chromium "
                    "chromium-driver, as stack/install.sh does)")
    config = stack_info["airflow"]
    driver = open_browser(config["url"], config["username"], config["password"])
    yield driver
    driver.quit()


@pytest.fixture
def offline_browser(stack_info) -> Iterator[WebDriver]:
    """As ``browser``, without the Internet (as at an HPC site): only loopback addresses answer, and
    ``tests.integration.browser.requests_made`` tells every request the pages made."""
    from tests.integration.browser import missing_binaries, open_browser

    if missing := missing_binaries():
        pytest.skip(f"no headless browser: {', '.join(missing)} not installed (apt-get install chromium "
                    "chromium-driver, as stack/install.sh does)")
    config = stack_info["airflow"]
    driver = open_browser(config["url"], config["username"], config["password"], offline=True)
    yield driver
    driver.quit()


@pytest.fixture
def job_python(stack_info) -> str:
    return os.path.join(stack_info["venvs"]["job-runtime"], "bin", "python")


@pytest.fixture(scope="module")
def registry_client(stack_info):
    """An MLflow client of the stack's registry, logged in (the pipeline end-to-end tests)."""
    import os

    os.environ["MLFLOW_TRACKING_USERNAME"] = stack_info["mlflow"]["username"]
    os.environ["MLFLOW_TRACKING_PASSWORD"] = stack_info["mlflow"]["password"]
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=stack_info["mlflow"]["url"])
