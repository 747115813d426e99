"""What a pipeline's jobs may do in MLflow: EDIT on the pipeline's own experiment (create runs, log metrics,
params, artifacts and models into it) and READ on its own registered model (the evaluation job scores the
champion). Nothing else: with the server's ``default_permission = NO_PERMISSIONS`` another pipeline's runs,
artifacts and models answer 403 to the job's user. Granted by the orchestrator (``start_run``), idempotently.
"""

from __future__ import annotations

from typing import Any


def grant_job_access(tracking_uri: str, job_user: str, experiment_id: str, model_name: str) -> list[str]:
    """Grant (or keep) the job user's two permissions; what changed, for the task log."""
    from mlflow.server import get_app_client

    auth = get_app_client("basic-auth", tracking_uri=tracking_uri)
    changed = []
    for resource_type, resource_id, permission in (("experiment", experiment_id, "EDIT"),
                                                   ("registered_model", model_name, "READ")):
        if _ensure(auth, job_user, resource_type, resource_id, permission):
            changed.append(f"{permission} on {resource_type} {resource_id}")
    return changed


def _ensure(auth: Any, user: str, resource_type: str, resource_id: str, permission: str) -> bool:
    current = auth.get_user_permission(user, resource_type, resource_id)
    if current.permission == permission:
        return False
    if current.allowed:  # another explicit grant: replace it (MLflow refuses a grant over a grant)
        auth.revoke_user_permission(user, resource_type, resource_id)
    auth.grant_user_permission(user, resource_type, resource_id, permission)
    return True
