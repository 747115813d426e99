"""Data contracts on the real stack: the steward page in a real browser, steward decisions resuming or
stopping a run, and validation as a Slurm job next to the data."""

from __future__ import annotations

import json
import time

import pytest

from stack.airflow_api import AirflowAPI

DAG = "pipeline_breast_cancer"
SHIFTED = "breast-cancer-v3-shifted"  # breaks only warn rules: mean and drift of mean_texture
CORRUPT = "breast-cancer-v2-corrupt"  # breaks error rules


STARTED: list[str] = []


def trigger(airflow: AirflowAPI, revision: str, **conf) -> str:
    run_id = airflow.trigger(DAG, {"revision": revision, "train_params": {}, **conf})
    STARTED.append(run_id)
    return run_id


@pytest.fixture(autouse=True, scope="module")
def no_run_left_waiting(airflow):
    """A failed assertion must not leave a run waiting 24 h for a steward: it would block the DAG's next runs."""
    yield
    for run_id in STARTED:
        if airflow.get(f"/dags/{DAG}/dagRuns/{run_id}")["state"] not in ("success", "failed"):
            airflow.patch(f"/dags/{DAG}/dagRuns/{run_id}", {"state": "failed"})


def wait_for_review(airflow: AirflowAPI, run_id: str, timeout_s: float = 300) -> None:
    """Until steward_review waits for input, plus the few seconds the executor needs to report the paused
    process: Airflow 3.3 marks a task FAILED when a response resumes it before that report arrives
    (scheduler: "finished with state success, but the task instance's state attribute is queued")."""
    wait_for_task_state(airflow, run_id, "steward_review", "awaiting_input", timeout_s)
    time.sleep(5)


def wait_for_task_state(airflow: AirflowAPI, run_id: str, task: str, wanted: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = airflow.task_states(DAG, run_id)
        if states.get(task) == wanted:
            return
        run = airflow.get(f"/dags/{DAG}/dagRuns/{run_id}")
        assert run["state"] not in ("success", "failed"), f"run ended before {task} was {wanted}: {states}"
        time.sleep(2)
    pytest.fail(f"{task} of {run_id} not {wanted} within {timeout_s} s: {airflow.task_states(DAG, run_id)}")


def xcom(airflow: AirflowAPI, run_id: str, task: str):
    return airflow.get(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/{task}/xcomEntries/return_value")["value"]


def s3_json(stack_info, key: str):
    import boto3

    s3 = stack_info["s3"]
    client = boto3.client("s3", endpoint_url=s3["endpoint_url"], aws_access_key_id=s3["access_key"],
                          aws_secret_access_key=s3["secret_key"], region_name="us-east-1")
    return json.loads(client.get_object(Bucket="reports", Key=key)["Body"].read())


def row_of(browser, run_id: str):
    from selenium.webdriver.common.by import By

    rows = [row for row in browser.find_elements(By.CSS_SELECTOR, "tr.run")
            if row.get_attribute("data-run-id") == run_id]
    assert rows, f"run {run_id} is not on the steward page"
    return rows[0]


@pytest.fixture(scope="module")
def failed_run(airflow):
    """A run whose data broke error rules: it must show on the page as failed, with its rules."""
    run_id = trigger(airflow, CORRUPT)
    run = airflow.wait_for_run(DAG, run_id, timeout_s=300)
    assert run["state"] == "failed"
    return run_id


def test_steward_page_shows_a_failed_run_and_an_approval_resumes_the_pipeline(failed_run, airflow, browser,
                                                                              stack_info):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    run_id = trigger(airflow, SHIFTED)
    wait_for_review(airflow, run_id)
    assert airflow.task_states(DAG, run_id)["start_run"] in (None, "none", "scheduled", "queued")

    browser.get(f"{airflow.url}/factory/stewards")
    assert "Data validation runs" in browser.title
    failed = row_of(browser, failed_run)
    assert failed.get_attribute("data-status") == "failed"
    assert "columns.mean_radius.rules.0" in failed.text and "columns.diagnosis.rules.0" in failed.text
    assert not failed.find_elements(By.TAG_NAME, "button"), "a failed run cannot be approved"

    waiting = row_of(browser, run_id)
    assert waiting.get_attribute("data-status") == "warned"
    assert "columns.mean_texture.rules.1" in waiting.text and SHIFTED in waiting.text
    report = waiting.find_element(By.LINK_TEXT, "report").get_attribute("href")
    waiting.find_element(By.CSS_SELECTOR, "button.approve").click()
    # the form posts and the page comes back with the note: wait for the navigation, not just the click
    notes = WebDriverWait(browser, 30).until(lambda page: page.find_elements(By.CSS_SELECTOR, ".note"))
    assert "Approve sent" in notes[0].text

    run = airflow.wait_for_run(DAG, run_id, timeout_s=600)
    assert run["state"] == "success", airflow.task_states(DAG, run_id)
    decision = xcom(airflow, run_id, "steward_review")
    assert decision["decision"] == "approve" and decision["by"] == stack_info["airflow"]["username"]
    prefix = xcom(airflow, run_id, "apply_contract")["report"]["prefix"]
    assert s3_json(stack_info, f"{prefix}/decision.json")["decision"] == "approve"
    # drift compares only with versions on v3's history in the registry, never with a later release
    assert sorted(xcom(airflow, run_id, "pin_dataset")["earlier"]) == ["breast-cancer-v1", CORRUPT]

    browser.get(f"{airflow.url}/factory/stewards")
    assert row_of(browser, run_id).get_attribute("data-status") == "approved"
    browser.get(report)  # the Data Docs page, through the same login
    assert "breast_cancer contract" in browser.page_source


def test_a_rejection_stops_the_run_before_slurm_and_is_recorded(airflow, stack_info):
    run_id = trigger(airflow, SHIFTED)
    wait_for_review(airflow, run_id)
    airflow.patch(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/steward_review/-1/hitlDetails",
                  {"chosen_options": ["Reject"], "params_input": {}})
    run = airflow.wait_for_run(DAG, run_id, timeout_s=300)
    states = airflow.task_states(DAG, run_id)
    assert run["state"] == "failed" and states["steward_review"] == "failed"
    assert states["train"] == "upstream_failed"
    log = json.dumps(airflow.get(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/steward_review/logs/1"
                                 "?full_content=true"))
    assert f"rejected breast_cancer at {SHIFTED}" in log
    prefix = xcom(airflow, run_id, "apply_contract")["report"]["prefix"]
    assert s3_json(stack_info, f"{prefix}/decision.json")["decision"] == "reject"


def test_validation_as_a_slurm_job_gives_the_same_verdict(airflow, stack_info):
    """conf ``validate_on=cluster`` (what the contract's size threshold picks for large data): the same code runs
    as a Slurm CPU job; apply_contract reads its summary back from S3 and applies the same policy."""
    run_id = trigger(airflow, CORRUPT, validate_on="cluster")
    run = airflow.wait_for_run(DAG, run_id, timeout_s=300)
    states = airflow.task_states(DAG, run_id)
    assert run["state"] == "failed"
    assert states["validate_data"] == "success" and states["validate_data_on_cluster"] == "success"
    assert states["apply_contract"] == "failed" and states["train"] == "upstream_failed"
    job = xcom(airflow, run_id, "validate_data_on_cluster")
    pinned = xcom(airflow, run_id, "pin_dataset")
    summary = s3_json(stack_info, f"validation/breast_cancer/{CORRUPT}/{run_id}/summary.json")
    assert summary["validated_on"].startswith(f"slurm job {job['job_id']} on ")
    assert summary["status"] == "failed" and summary["md5"] == pinned["data"]["md5"]
    broken = {rule["rule"]: rule for rule in summary["failed"]}
    assert broken["columns.mean_radius.rules.0"]["unexpected_count"] == 5
    assert broken["columns.diagnosis.rules.0"]["unexpected_count"] == 3
