"""The contract's policy as the DAG carries it: where data is validated, and the steward review's
timeout and default answer."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from operators.contracts.contract import CONTRACTS_DIR, load_contract, size_bytes
from operators.pipeline.build import build_dag
from operators.pipeline.tasks import validates_on_cluster
from operators.spec import PIPELINES_DIR, load_spec


def test_size_threshold_and_the_run_parameter_pick_where_data_is_validated():
    threshold = load_contract(CONTRACTS_DIR / "breast_cancer.yaml").validation.cluster_above_bytes
    assert threshold == size_bytes("256M") == 256 * 2**20
    assert not validates_on_cluster(40_000, threshold)
    assert validates_on_cluster(threshold + 1, threshold)
    assert not validates_on_cluster(threshold + 1, threshold, "worker")
    assert validates_on_cluster(10, threshold, "cluster")


def test_steward_review_takes_timeout_and_default_from_the_contract():
    spec = load_spec(PIPELINES_DIR / "breast_cancer" / "pipeline.yaml")
    review = build_dag(spec).get_task("steward_review")
    assert review.response_timeout == timedelta(hours=24) and review.defaults == ["Reject"]
    patient = dataclasses.replace(spec.data_contract, review=dataclasses.replace(
        spec.data_contract.review, timeout="90m", on_timeout="approve"))
    object.__setattr__(spec, "data_contract", patient)
    review = build_dag(spec).get_task("steward_review")
    assert review.response_timeout == timedelta(minutes=90) and review.defaults == ["Approve"]
    assert build_dag(spec).get_task("apply_contract").trigger_rule == "none_failed_min_one_success"
