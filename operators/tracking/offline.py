"""Prepare a job's offline MLflow store: SQLite and an artifact folder in the job's own folder.

Runs inside a Slurm job before the training or evaluation script, on nodes that may have no network:
``python -m operators.tracking.offline init mlflow --experiment NAME``. The job's environment points
MLflow at the store (``MLFLOW_TRACKING_URI=sqlite:///mlflow/mlflow.db``, ``MLFLOW_EXPERIMENT_NAME``), so
an unchanged ``mlflow.start_run()`` in the script logs there. The store is created here, once, by one
process: the schema migration must not race between the ranks of a distributed job. The orchestrator's
replay task copies the store into the central server after the job (``operators.tracking.replay``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

STORE_DIR = "mlflow"  # relative to the job's folder
DATABASE = "mlflow.db"
ARTIFACTS = "artifacts"


def tracking_uri(store: Path) -> str:
    return f"sqlite:///{store / DATABASE}"


def offline_env(experiment: str) -> dict[str, str]:
    """What a job's environment needs to log offline; the path is relative to the job's folder."""
    return {"MLFLOW_TRACKING_URI": tracking_uri(Path(STORE_DIR)), "MLFLOW_EXPERIMENT_NAME": experiment}


def init_store(store: Path, experiment: str) -> str:
    """Create the store and the experiment, its artifacts under ``store/artifacts``; returns its id."""
    from mlflow import MlflowClient

    store.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri(store.resolve()))
    existing = client.get_experiment_by_name(experiment)
    if existing is not None:
        return existing.experiment_id
    artifacts = (store / ARTIFACTS).resolve()
    artifacts.mkdir(exist_ok=True)
    experiment_id = client.create_experiment(experiment, artifact_location=artifacts.as_uri(),
                                             tags={"slurm.job_id": os.environ.get("SLURM_JOB_ID", "")})
    return experiment_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["init"])
    parser.add_argument("store", type=Path, help="folder of the store, relative to the job's folder")
    parser.add_argument("--experiment", required=True)
    args = parser.parse_args(argv)
    experiment_id = init_store(args.store, args.experiment)
    print(f"offline MLflow store {args.store.resolve()}: experiment {args.experiment} ({experiment_id})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
