"""Which model version an alias points at, telling "not there yet" apart from every other failure.

Imports no Airflow: the evaluation job (on a compute node) and the pipeline tasks both ask it.
"""

from __future__ import annotations

from typing import Any


def version_by_alias(client: Any, name: str, alias: str) -> str | None:
    """The version behind ``alias``, or None when the model or the alias does not exist yet. Any other
    answer (a 401/403, a server error) raises: it must not read as "no champion". The model is looked
    up first because MLflow's basic-auth app answers an alias lookup on an unknown model with 403."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
        return client.get_model_version_by_alias(name, alias).version
    except MlflowException as error:
        message = str(error.message).lower()
        alias_missing = error.error_code == "INVALID_PARAMETER_VALUE" and "alias" in message and "not found" in message
        if error.error_code == "RESOURCE_DOES_NOT_EXIST" or alias_missing:
            return None
        raise
