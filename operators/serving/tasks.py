"""The pipeline's serving tasks: roll the promoted version out, retire the previous one after the grace
period, and the manual rollback. The champion alias moves only once the new version is the default."""

from __future__ import annotations

import datetime
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator

from operators.connections import MLFLOW_CONN
from operators.records import RegisteredVersion, Rollout
from operators.spec import Pipeline, Serving


def serving_target(serving: Serving) -> Any:
    """The target of the spec's ``serving`` section, from its Airflow connection (URL, credentials)."""
    from airflow.sdk.bases.hook import BaseHook

    from operators.serving.targets import target_from_connection

    connection = BaseHook.get_connection(serving.connection)
    try:
        return target_from_connection(serving.target, connection.host, connection.port, connection.schema,
                                      connection.login, connection.password, connection.extra_dejson)
    except ValueError as error:
        raise ValueError(f"connection {serving.connection}: {error}") from None


@contextmanager
def registered_model_folder(name: str, version: str, needed: bool = True) -> Iterator[Path | None]:
    """The version's MLflow model files in a temporary folder (None when the target needs none)."""
    if not needed:
        yield None
        return
    import mlflow

    with tempfile.TemporaryDirectory(prefix="serving-") as tmp:
        yield Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=tmp))


def push_to_inference(spec: Pipeline, registered: dict[str, Any], **context: Any) -> dict[str, Any]:
    """Roll the promoted version out (load → ready → smoke → latency → default), then move the champion
    alias. A failed step unloads the new version, tags why on it, and fails the task: the previous
    version keeps serving and stays champion."""
    from airflow.sdk.exceptions import AirflowSkipException

    from operators.clients import mlflow_tracking
    from operators.serving import record
    from operators.serving.rollout import RolloutFailed, roll_out, switch_back

    version_record = RegisteredVersion.of(registered)
    if not version_record.promoted:
        raise AirflowSkipException(f"{version_record.model} v{version_record.version} was not promoted: "
                                   f"champion v{version_record.previous_champion} keeps serving")
    name, version, served_as = version_record.model, str(version_record.version), spec.serving.model_name
    target, run = serving_target(spec.serving), f"{context['dag_run'].dag_id}/{context['run_id']}"
    with mlflow_tracking(MLFLOW_CONN):
        from mlflow import MlflowClient

        client = MlflowClient()
        with registered_model_folder(name, version, needed=target.kind == "v2") as model_dir:
            try:
                report = roll_out(target, served_as, version, model_dir, spec.serving.smoke, spec.serving.latency)
            except RolloutFailed as failure:
                record.rollout_failed(client, name, version, failure.step, failure.reason, run)
                raise RuntimeError(str(failure)) from None
        try:
            client.set_registered_model_alias(name, spec.registry.aliases.champion, version)
        except Exception as error:  # the registry must not name another champion than the one serving
            previous = report.previous_version
            if previous is not None:
                switch_back(target, served_as, previous, None, spec.serving.smoke)
            raise RuntimeError(f"moving alias {spec.registry.aliases.champion} to v{version} failed ({error}); "
                               f"the default is version {previous} again") from None
        record.rolled_out(client, name, report.as_dict(), target.kind, run)
    print(f"{served_as} version {version} serves unversioned requests; alias "
          f"{spec.registry.aliases.champion} -> v{version}; rollout {report.total_s} s {report.seconds}")
    return Rollout(**report.as_dict(), registered_model=name, rolled_out_at=time.time()).as_xcom()


class RetirePreviousVersionOperator(BaseOperator):
    """Unload the version the rollout replaced once the grace period has passed; waits in the triggerer.

    If the previous version is the default again by then (a manual rollback), it stays loaded.
    """

    ui_color = "#e8f0fe"
    template_fields = ("rollout",)

    def __init__(self, *, spec: Pipeline, rollout: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.rollout = rollout  # push_to_inference's Rollout (an XComArg until rendered)

    def execute(self, context: Any) -> Any:
        from airflow.providers.standard.triggers.temporal import DateTimeTrigger
        from airflow.sdk.exceptions import AirflowSkipException

        from operators.deferral import RESUME_AFTER_S

        pushed = Rollout.of(self.rollout) if self.rollout else None
        if pushed is None or not pushed.previous_version:
            raise AirflowSkipException("no version served before this one: nothing to retire")
        remaining = pushed.rolled_out_at + self.spec.serving.grace_period_s - time.time()
        if remaining > RESUME_AFTER_S:  # a shorter wait is slept here: Airflow fails a task resumed too soon
            print(f"version {pushed.previous_version} stays loaded for {remaining:.0f} s more (grace period)")
            moment = datetime.datetime.fromtimestamp(time.time() + remaining, tz=datetime.UTC)
            self.defer(trigger=DateTimeTrigger(moment), method_name="retire")
        time.sleep(max(0.0, remaining))
        return self.retire(context)

    def retire(self, context: Any, event: Any = None) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from operators.clients import mlflow_tracking
        from operators.serving import record

        pushed = Rollout.of(self.rollout)
        previous, model = pushed.previous_version, self.spec.serving.model_name
        target = serving_target(self.spec.serving)
        if target.default_version(model) == previous:
            raise AirflowSkipException(f"version {previous} is the default again (rolled back): kept loaded")
        print(target.unload(model, previous))
        with mlflow_tracking(MLFLOW_CONN):
            from mlflow import MlflowClient
            from mlflow.exceptions import MlflowException

            try:
                record.retired(MlflowClient(), pushed.registered_model, previous,
                               f"{context['dag_run'].dag_id}/{context['run_id']}")
            except MlflowException as error:  # deleted from the registry while it was served: unloaded all the same
                if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                print(f"version {previous} of {pushed.registered_model} is no longer in the registry: unloaded, "
                      "not tagged")
        return {"retired": previous}


def roll_back(**context: Any) -> dict[str, Any]:
    """The manual rollback: the previous version (or the one asked for) becomes the default and the
    champion again; the replaced version is tagged with the reason and unloaded."""
    from airflow.sdk.exceptions import AirflowFailException

    from operators.clients import mlflow_tracking
    from operators.registry.aliases import version_by_alias
    from operators.run_parameters import RunParameterError, rollback_run
    from operators.serving import record
    from operators.serving.rollout import switch_back
    from operators.spec import PIPELINES_DIR, discover, load_spec

    try:
        params = rollback_run(context["params"], context["dag_run"].conf,
                              [path.parent.name for path in discover(PIPELINES_DIR)])
    except RunParameterError as error:
        raise AirflowFailException(f"run parameters of serving_rollback:\n{error}") from None
    spec = load_spec(PIPELINES_DIR / params.pipeline / "pipeline.yaml")
    name, served_as, alias = spec.registry.model_name, spec.serving.model_name, spec.registry.aliases.champion
    reason = params.reason
    run = f"{context['dag_run'].dag_id}/{context['run_id']}"
    target = serving_target(spec.serving)
    with mlflow_tracking(MLFLOW_CONN):
        from mlflow import MlflowClient

        client = MlflowClient()
        current = version_by_alias(client, name, alias)
        if current is None:
            raise ValueError(f"{name} has no {alias} alias: nothing to roll back")
        to_version = params.to_version or \
            client.get_model_version(name, current).tags.get("serving.previous_version", "")
        if not to_version:
            raise ValueError(f"{name} v{current} records no previous serving version: give params.to_version")
        if to_version == current:
            raise ValueError(f"{name} v{current} is already the {alias}")
        client.get_model_version(name, to_version)  # an unknown version fails here, before anything changes
        needs_files = target.kind == "v2" and not target.ready(served_as, to_version)
        with registered_model_folder(name, to_version, needed=needs_files) as model_dir:
            switched = switch_back(target, served_as, to_version, model_dir, spec.serving.smoke)
        client.set_registered_model_alias(name, alias, to_version)
        record.rolled_back(client, name, current, to_version, reason, run)
    print(f"{served_as}: version {to_version} serves again and is {alias}; version {current} rolled back: {reason}")
    print(target.unload(served_as, current))
    return {**switched, "rolled_back": current, "reason": reason}
