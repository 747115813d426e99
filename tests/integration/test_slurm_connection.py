"""The ``slurm`` connection type as Airflow shows it: form fields, and the Test button on every transport."""

from __future__ import annotations

import json

import pytest

SLURM_CONNECTIONS = {"factory_slurm_local": "slurmrestd v0.0.38", "factory_slurm_cli": "local commands",
                     "factory_slurm_ssh": "ssh commands"}


def test_the_connection_form_offers_the_slurm_type_and_its_fields(airflow):
    meta = {entry["connection_type"]: entry for entry in airflow.ui_get("/connections/hook_meta")}
    slurm = meta["slurm"]
    assert slurm["hook_class_name"] == "operators.slurm.hooks.SlurmHook"
    assert slurm["extra_fields"]["transport"]["schema"]["enum"] == ["local", "ssh", "rest", "pyslurm"]
    assert {"account", "job_workdir", "key_file", "known_hosts", "api_version"} <= set(slurm["extra_fields"])


def connection_body(airflow, conn_id: str, **changes) -> dict:
    stored = airflow.get(f"/connections/{conn_id}")
    body = {key: stored.get(key) for key in ("connection_id", "conn_type", "host", "port", "login", "schema", "extra")}
    return {**body, **changes}


@pytest.mark.parametrize(("conn_id", "way_in"), list(SLURM_CONNECTIONS.items()))
def test_the_test_button_reaches_slurm_on_every_transport(airflow, conn_id, way_in):
    answer = airflow.post("/connections/test", connection_body(airflow, conn_id))
    assert answer["status"] is True, answer
    assert "22.05" in answer["message"] and way_in in answer["message"]


def test_a_mistyped_transport_or_field_is_named_with_the_valid_choices(airflow):
    extra = json.loads(connection_body(airflow, "factory_slurm_cli")["extra"])
    wrong_transport = connection_body(airflow, "factory_slurm_cli", extra=json.dumps({**extra, "transport": "sshh"}))
    answer = airflow.post("/connections/test", wrong_transport)
    assert answer["status"] is False and "'sshh'" in answer["message"]
    assert "local, pyslurm, rest, ssh" in answer["message"]
    typo = connection_body(airflow, "factory_slurm_cli", extra=json.dumps({**extra, "acount": "demo"}))
    answer = airflow.post("/connections/test", typo)
    assert answer["status"] is False and "acount" in answer["message"] and "account:" in answer["message"]
