"""A job's offline store is replayed from a copy: the paths its database recorded are on the cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from operators.tracking.replay import ReplayError, in_store

RECORDED = "file:///p/scratch/airflow-jobs/dag/run/train.-1.try1/mlflow/artifacts"


def test_a_recorded_artifact_path_on_the_cluster_is_found_in_the_fetched_copy(tmp_path: Path):
    store = tmp_path / "copy"
    (store / "artifacts" / "models" / "m-1" / "artifacts").mkdir(parents=True)
    found = in_store(f"{RECORDED}/models/m-1/artifacts", RECORDED, store)
    assert found == (store / "artifacts" / "models" / "m-1" / "artifacts").resolve()
    assert in_store(RECORDED, RECORDED, store) == (store / "artifacts").resolve()
    assert in_store("/p/scratch/airflow-jobs/dag/run/train.-1.try1/mlflow/artifacts/x", RECORDED, store).name == "x"


@pytest.mark.parametrize("uri", ["file:///var/lib/aifactory/secrets", f"{RECORDED}/../../../../etc",
                                 "/etc/shadow", f"{RECORDED}-other/models"])
def test_a_location_outside_the_job_s_artifact_folder_is_refused(tmp_path: Path, uri: str):
    """The database is the job's writing: it could name the orchestrator's secrets."""
    with pytest.raises(ReplayError, match="outside the job's artifact folder"):
        in_store(uri, RECORDED, tmp_path / "copy")
