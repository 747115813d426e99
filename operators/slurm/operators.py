"""``SlurmJobOperator``: run a batch job on a factory's Slurm cluster, deferring while it runs."""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowException

from operators.links import StoredLink
from operators.slurm.hooks import SlurmRestHook
from operators.slurm.rest import JobStatus, SlurmRestError, max_rss_bytes, rest_job_fields
from operators.slurm.script import BatchJob, render, write_env_file
from operators.slurm.triggers import SlurmJobTrigger

LOG_TAIL_LINES = 30


class SlurmJobLink(StoredLink):
    """The job's page in the factory plugin: state, accounting and the tail of its log."""

    name = "Slurm job"


def safe_path_part(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", value)[:120]


def connection_env(conn_id: str) -> dict[str, str]:
    """Environment a job needs to reach a service behind an Airflow connection (MLflow, S3)."""
    from airflow.sdk.bases.hook import BaseHook

    connection = BaseHook.get_connection(conn_id)
    if connection.conn_type == "aws":
        extra = connection.extra_dejson
        env = {"AWS_ACCESS_KEY_ID": connection.login or "", "AWS_SECRET_ACCESS_KEY": connection.password or "",
               "AWS_DEFAULT_REGION": extra.get("region_name", "us-east-1")}
        if extra.get("endpoint_url"):
            env["AWS_ENDPOINT_URL"] = extra["endpoint_url"]
        return env
    from operators.registry.connection import tracking_env

    return tracking_env(conn_id)


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 8192))  # only the end: never re-read a whole log
            return "\n".join(handle.read().decode(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"(no log at {path})"


class SlurmJobOperator(BaseOperator):
    """Stage files into a job folder, submit a batch job as the connection's user, defer until it ends.

    The final state comes from the controller and then accounting; anything but COMPLETED with
    exit code 0 fails the task with the state, reason, exit code and the tail of the job's log.
    Files are staged on a file system the cluster shares with the worker (the local factory);
    remote staging over SSH comes with the SSH transport.
    """

    template_fields: Sequence[str] = ("commands", "json_files", "env", "job_name")
    operator_extra_links = (SlurmJobLink(),)
    ui_color = "#d6e4f0"

    def __init__(self, *, commands: list[list[str]], slurm_conn_id: str = SlurmRestHook.default_conn_name,
                 files: dict[str, str] | None = None, json_files: dict[str, Any] | None = None,
                 env: dict[str, str] | None = None, env_connections: Sequence[str] = (),
                 job_name: str | None = None, cpus: int = 1, memory: str = "1G", time_limit: str = "00:30:00",
                 partition: str | None = None, gpus: int = 0, poll_interval_s: float = 2.0,
                 deferrable: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.commands = commands
        self.slurm_conn_id = slurm_conn_id
        self.files = files or {}
        self.json_files = json_files or {}
        self.env = env or {}
        self.env_connections = tuple(env_connections)
        self.job_name = job_name
        self.cpus, self.memory, self.time_limit = cpus, memory, time_limit
        self.partition, self.gpus = partition, gpus
        self.poll_interval_s = poll_interval_s
        self.deferrable = deferrable

    # ------------------------------------------------------------------ helpers
    def _site(self) -> dict[str, Any]:
        from airflow.sdk.bases.hook import BaseHook

        connection = BaseHook.get_connection(self.slurm_conn_id)
        return {"user": connection.login, **connection.extra_dejson}

    def _workdir(self, context: Context, site: dict[str, Any]) -> Path:
        ti = context["ti"]
        parts = [ti.dag_id, ti.run_id, f"{ti.task_id}.{ti.map_index}.try{ti.try_number}"]
        return Path(site["job_workdir"]).joinpath(*(safe_path_part(part) for part in parts))

    def _stage(self, workdir: Path, owner: str) -> Path:
        """Copy code, write inputs and a 0600 environment file, all owned by the job user."""
        account = pwd.getpwnam(owner)
        if workdir.exists():
            shutil.rmtree(workdir)
        workdir.mkdir(parents=True)
        for parent in [workdir, *list(workdir.parents)[:2]]:
            os.chown(parent, account.pw_uid, account.pw_gid)
        for target, source in self.files.items():
            shutil.copy(source, workdir / target)
        for target, content in self.json_files.items():
            (workdir / target).write_text(json.dumps(content, indent=2))
        env = dict(self.env)
        for conn_id in self.env_connections:
            env.update(connection_env(conn_id))
        env_file = workdir / "job.env"
        write_env_file(env_file, env)
        for path in workdir.iterdir():
            os.chown(path, account.pw_uid, account.pw_gid)
        return env_file

    # ------------------------------------------------------------------ task semantics
    @staticmethod
    def task_identity(ti) -> str:
        """Deterministic per task and map index, the same for every try: how a retry finds its job."""
        return f"airflow:{ti.dag_id}/{ti.run_id}/{ti.task_id}/{ti.map_index}"

    def execute(self, context: Context) -> Any:
        hook = SlurmRestHook(self.slurm_conn_id)
        site = self._site()
        ti = context["ti"]
        adopted = hook.get_conn().find_active(self.task_identity(ti))
        if adopted:
            # an earlier try submitted it (worker crash, lost submit answer): watch it, never submit twice
            job_id, workdir = int(adopted[0]["job_id"]), Path(adopted[0]["current_working_directory"])
            self.log.warning("Adopting Slurm job %s submitted by an earlier try of this task", job_id)
            return self._watch(context, site, job_id, workdir)
        workdir = self._workdir(context, site)
        env_file = self._stage(workdir, site["user"])
        runtime = site.get("job_runtime")
        commands = [[f"{runtime}/bin/python", *command[1:]] if runtime and command[0] == "python" else command
                    for command in self.commands]
        job = BatchJob(
            name=self.job_name or safe_path_part(f"{ti.dag_id}.{ti.task_id}")[:64],
            account=site.get("account"), partition=self.partition, cpus=self.cpus, memory=self.memory,
            time=self.time_limit, gpus=self.gpus, workdir=str(workdir), commands=commands,
            env_file=str(env_file), comment=self.task_identity(ti))
        script = render(job)
        (workdir / "job.sh").write_text(script)
        job_id = hook.get_conn().submit(script, **rest_job_fields(job))
        self.log.info("Submitted Slurm job %s on %s (workdir %s)", job_id, site.get("cluster"), workdir)
        return self._watch(context, site, job_id, workdir)

    def _watch(self, context: Context, site: dict[str, Any], job_id: int, workdir: Path) -> Any:
        ti = context["ti"]
        ti.xcom_push(key="slurm_job", value={"job_id": job_id, "cluster": site.get("cluster"),
                                             "workdir": str(workdir)})
        SlurmJobLink.store(context, self._job_url(job_id))
        if self.deferrable:
            self.defer(trigger=SlurmJobTrigger(self.slurm_conn_id, job_id, self.poll_interval_s,
                                               env_file=str(workdir / "job.env")),
                       method_name="execute_complete")
        SlurmRestHook(self.slurm_conn_id).get_conn().wait_finished(job_id, self.poll_interval_s)
        return self.execute_complete(context, {"job_id": job_id})

    def _job_url(self, job_id: int) -> str:
        from airflow.configuration import conf

        base = conf.get("api", "base_url", fallback="http://127.0.0.1:8080").rstrip("/")
        return f"{base}/factory/slurm/{self.slurm_conn_id}/jobs/{job_id}"

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        job_id = int(event["job_id"])
        if event.get("state") in ("UNREACHABLE", "WATCH_FAILED"):
            raise AirflowException(f"Slurm job {job_id}: could not watch the job ({event['state']}): "
                                   f"{event.get('error')}")
        client = SlurmRestHook(self.slurm_conn_id).get_conn()
        accounting = client.final_accounting(job_id)
        if accounting is None:
            self.log.warning("Slurm job %s: no final accounting record after 15 s", job_id)
        status = self._final_status(client, job_id, accounting)
        site = self._site()
        recorded = context["ti"].xcom_pull(task_ids=context["ti"].task_id, key="slurm_job") or {}
        workdir = Path(recorded.get("workdir") or self._workdir(context, site))
        log = workdir / f"slurm-{job_id}.out"
        (workdir / "job.env").unlink(missing_ok=True)  # credentials do not outlive the job
        result = {
            "job_id": job_id, "cluster": site.get("cluster"), "state": status.state,
            "exit_code": status.exit_code, "reason": status.reason, "workdir": str(workdir),
            "elapsed_s": (accounting or {}).get("time", {}).get("elapsed"),
            "max_rss_bytes": max_rss_bytes(accounting or {}),
        }
        if status.state != "COMPLETED" or status.exit_code:
            raise AirflowException(
                f"Slurm job {job_id} ended {status.state} with exit code {status.exit_code} "
                f"(reason: {status.reason or 'none'}). Last lines of {log}:\n{tail(log)}")
        self.log.info("Slurm job %s COMPLETED in %s s, MaxRSS %s bytes", job_id, result["elapsed_s"],
                      result["max_rss_bytes"])
        return result

    @staticmethod
    def _final_status(client, job_id: int, accounting: dict[str, Any] | None) -> JobStatus:
        """The controller's view while it still lists the job (its exit code is right on 22.05,
        JSON accounting's is not); accounting's once the controller has forgotten the job."""
        try:
            return client.status(job_id)
        except SlurmRestError:
            if accounting is None:
                raise
            state = accounting.get("state", {})
            return JobStatus(job_id, state.get("current", "UNKNOWN"),
                             accounting.get("exit_code", {}).get("return_code"), state.get("reason", ""))
