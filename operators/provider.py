"""Provider metadata: registers the ``slurm`` connection type (form fields, test button) with Airflow.

Read by Airflow's providers manager through the ``apache_airflow_provider`` entry point in
pyproject.toml, without importing any hook.
"""

from __future__ import annotations

from typing import Any

PACKAGE = "ai-factory-pipelines"


def _text(label: str, description: str, default: str | None = None, enum: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": ["string", "null"]}
    if default is not None:
        schema["default"] = default
    if enum:
        schema["enum"] = enum
    return {"label": label, "description": description, "schema": schema}


# One definition of a Slurm connection's extra fields: the form shows them, the hook checks against them.
SLURM_CONNECTION_FIELDS: dict[str, dict[str, Any]] = {
    "transport": _text("Transport", "How Airflow reaches Slurm", "rest", ["local", "ssh", "rest", "pyslurm"]),
    "cluster": _text("Cluster", "The cluster's name, shown in logs and links"),
    "account": _text("Account", "Default Slurm account for jobs"),
    "job_workdir": _text("Job folder", "Folder on the cluster's shared file system where job folders are made"),
    "job_runtime": _text("Job Python environment", "Environment on the cluster that runs job code"),
    "api_version": _text("REST API version", "rest: OpenAPI version such as v0.0.38, or auto", "auto"),
    "files": _text("Job files", "How job files reach the cluster: shared (the Airflow workers see the cluster's "
                                "file system at the same paths) or ssh (through an SSH login node). local implies "
                                "shared, ssh implies ssh; rest and pyslurm must say"),
    "ssh_host": _text("SSH login node for files", "files=ssh on a rest or pyslurm connection: the login node job "
                                                  "files go through"),
    "ssh_port": {"label": "SSH port for files", "description": "files=ssh with ssh_host: its SSH port (22)",
                 "schema": {"type": ["integer", "null"]}},
    "ssh_user": _text("SSH user for files", "files=ssh with ssh_host: the account there (default: the login)"),
    "key_file": _text("SSH private key file", "ssh (transport or files): key file on the Airflow hosts"),
    "known_hosts": _text("SSH known_hosts file", "ssh (transport or files): file holding the login node's host key "
                                                 "(always checked)"),
    "control_dir": _text("SSH control socket folder", "ssh (transport or files): where the shared connection's "
                                                      "socket lives"),
    "job_s3_endpoint": _text("S3 endpoint for jobs", "The S3 endpoint URL as the compute nodes reach it, when it "
                                                     "differs from the Airflow workers' (a site proxy or relay)"),
    "timeout_s": {"label": "Call timeout (s)", "description": "Seconds before one Slurm call counts as unanswered",
                  "schema": {"type": ["number", "null"]}},
}


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": PACKAGE,
        "name": "AI Factory Pipelines",
        "description": "Slurm, dataset, contract, registry and serving operators for EuroHPC AI Factories",
        "connection-types": [{
            "connection-type": "slurm",
            "hook-class-name": "operators.slurm.hooks.SlurmHook",
            "hook-name": "Slurm",
            "conn-fields": SLURM_CONNECTION_FIELDS,
            "ui-field-behaviour": {
                "hidden-fields": [],
                "relabeling": {"login": "Slurm user", "password": "JWT (rest)", "host": "Login node or slurmrestd",
                               "schema": "Scheme (rest: http or https)"},
                "placeholders": {"port": "22 (ssh) or 6820 (rest)"},
            },
        }],
        "triggers": [{"integration-name": "Slurm", "python-modules": ["operators.slurm.triggers"]}],
    }
