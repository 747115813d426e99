"""Airflow runs a DAG whose tasks reach every service through the stack's connections."""

from __future__ import annotations

import pytest

from stack.airflow_api import AirflowAPI


def test_all_components_report_healthy(airflow):
    import json
    import urllib.request

    with urllib.request.urlopen(f"{airflow.url}/api/v2/monitor/health", timeout=10) as response:
        health = json.load(response)
    for component in ("metadatabase", "scheduler", "triggerer", "dag_processor"):
        assert health[component]["status"] == "healthy", (component, health[component])


def test_api_refuses_a_wrong_password(stack_info):
    api = AirflowAPI(stack_info["airflow"]["url"], "admin", "not-the-password")
    with pytest.raises(RuntimeError, match="HTTP 401"):
        api.token()


def test_connections_reach_airflow(airflow):
    ids = {connection["connection_id"] for connection in airflow.get("/connections?limit=100")["connections"]}
    assert {"factory_s3", "factory_mlflow", "factory_slurm_local", "factory_inference"} <= ids
    s3 = airflow.get("/connections/factory_s3")
    assert s3["conn_type"] == "aws"
    assert s3.get("password") in (None, "", "***"), "the API must not hand out the secret"


def test_smoke_dag_reaches_every_service(airflow, stack_info):
    airflow.wait_for_dag("stack_smoke")
    run_id = airflow.trigger("stack_smoke")
    run = airflow.wait_for_run("stack_smoke", run_id, timeout_s=300)
    states = airflow.task_states("stack_smoke", run_id)
    assert run["state"] == "success", states
    assert set(states.values()) == {"success"}
    job = airflow.get(f"/dags/stack_smoke/dagRuns/{run_id}/taskInstances/slurm_job/xcomEntries/return_value")
    value = job["value"]
    assert value["user"] == stack_info["job_user"] and value["state"] == "COMPLETED"
