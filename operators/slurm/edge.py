"""Slurm steps run by an Airflow Edge worker on a site's login node (``apache-airflow-providers-edge3``).

The worker takes its queue's tasks over HTTP from the API server and runs them on the login node, where
the Slurm commands are: the steps use the ``local`` transport and wait in the worker (a deferred task
would wait in the central triggerer, which cannot run the login node's commands)."""

from __future__ import annotations

from typing import Any

EDGE_EXECUTOR = "airflow.providers.edge3.executors.EdgeExecutor"


def configured_executors() -> list[str]:
    """The executors of ``[core] executor``, as class paths or names (an ``alias:`` prefix dropped)."""
    from airflow.configuration import conf

    return [name.strip().split(":")[-1] for name in conf.get("core", "executor", fallback="").split(",")
            if name.strip()]


def edge_executor_configured() -> bool:
    return any(name in (EDGE_EXECUTOR, "EdgeExecutor") for name in configured_executors())


def edge_task_options(queue: str) -> dict[str, Any]:
    """An operator's arguments for a Slurm step on the Edge worker that takes ``queue``."""
    return {"executor": EDGE_EXECUTOR, "queue": queue, "deferrable": False}
