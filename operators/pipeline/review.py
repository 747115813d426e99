"""A data steward's decision on data that broke only ``warn`` rules: Airflow's human-in-the-loop approval.

Data that passed needs no decision and the task completes at once. Otherwise the task waits (state
``awaiting_input``) for Approve or Reject in Airflow's UI, the steward page (``/factory/stewards``) or
the REST API, for the contract's ``review.timeout``, then takes ``review.on_timeout``. The decision is
written next to the validation report (``decision.json``) so the history shows who decided what.
A rejection fails the run with the steward's name and the broken rules: nothing trains on it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk.exceptions import AirflowFailException

from operators.clients import s3_client
from operators.pipeline.links import ValidationReportLink
from operators.records import ValidationOutcome
from operators.spec import Pipeline


class StewardReviewOperator(ApprovalOperator):
    operator_extra_links = (ValidationReportLink(),)

    template_fields = (*ApprovalOperator.template_fields, "validation")

    def __init__(self, *, spec: Pipeline, validation: Any, reports_bucket: str, s3_conn_id: str,
                 **kwargs: Any) -> None:
        review = spec.data_contract.review
        super().__init__(
            subject=f"Data steward review: {spec.dataset.name} for pipeline {spec.name}",
            body="The dataset version broke warn rules of its contract; see the validation report.",
            defaults=[self.APPROVE if review.on_timeout == "approve" else self.REJECT],
            response_timeout=review.timeout_delta, fail_on_reject=False, **kwargs)
        self.contract_name, self.dataset = spec.contract, spec.dataset.name
        self.on_timeout = review.on_timeout
        self.reports_bucket, self.s3_conn_id = reports_bucket, s3_conn_id
        self.validation = validation  # apply_contract's ValidationOutcome (an XComArg until rendered)

    def _summary(self, context: Any) -> dict[str, Any]:
        return ValidationOutcome.of(self.validation).as_xcom()

    def execute(self, context: Any) -> Any:
        from operators.contracts.validate import failure_message, get_json

        summary = self._summary(context)
        if summary["status"] != "warned":
            self.log.info("Validation %s: no steward decision needed.", summary["status"])
            return {"decision": "not needed"}
        full = get_json(s3_client(self.s3_conn_id), self.reports_bucket, f"{summary['report']['prefix']}/summary.json")
        broken = failure_message(full, "warn")
        self.body = (f"**{self.dataset}** at **{summary['revision']}** ({summary['commit'][:10]}) broke "
                     f"{summary['counts']['failed_warn']} warn rule(s) of contract `{self.contract_name}`:\n\n"
                     + "\n".join(f"- {part}" for part in broken.split("; ")) +
                     f"\n\nReport: /factory/reports/{summary['report']['index']}\n\n"
                     f"Approve to train on this data, Reject to stop the run. Without an answer it is "
                     f"**{self.on_timeout}ed** at the timeout.")
        ValidationReportLink.store(context, f"/factory/reports/{summary['report']['index']}")
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        from operators.contracts.validate import record_decision

        summary = self._summary(context)
        chosen = (event.get("chosen_options") or [None])[0]
        user = event.get("responded_by_user") or {}
        who = user.get("name") or user.get("id") if isinstance(user, dict) else str(user or "")
        decision = {"decision": "approve" if chosen == self.APPROVE else "reject",
                    "by": who or f"timeout ({self.on_timeout})", "at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "dag_id": context["ti"].dag_id, "run_id": context["run_id"]}
        if "error" not in event:
            record_decision(s3_client(self.s3_conn_id), self.reports_bucket, summary["report"]["prefix"], decision)
        if chosen == self.REJECT:
            raise AirflowFailException(
                f"data steward {decision['by']} rejected {self.dataset} at {summary['revision']} "
                f"({summary['commit'][:10]}): it broke {summary['counts']['failed_warn']} warn rule(s) of contract "
                f"{self.contract_name}. Nothing was submitted to Slurm.")
        super().execute_complete(context, event)
        return decision
