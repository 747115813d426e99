"""``SlurmJobOperator``: run a batch job on a factory's Slurm cluster, deferring while it runs."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from operators.clients import credentials_env
from operators.slurm.budget import over_budget
from operators.slurm.hooks import SlurmHook
from operators.slurm.model import ControllerUnreachable, JobAccounting, SlurmError, SlurmUnavailable
from operators.slurm.reconciler import TaskIdentity
from operators.slurm.retry import RetryWithDeadline
from operators.slurm.script import (
    JOB_ENV_FILE,
    JOB_OPTIONS,
    BatchJob,
    ContainerRun,
    Launcher,
    batch_job,
    env_file_text,
    render,
)
from operators.slurm.transport import SlurmTransport
from operators.slurm.triggers import SlurmJobTrigger, SlurmReconcileTrigger
from operators.slurm.watcher import ClusterWatcher, PollSettings
from operators.staged_files import read_inside
from operators.stored_link import StoredLink

LOG_TAIL_BYTES = 8192
STATE_KEY = "slurm_job"  # task state store key; renaming it breaks in-flight retries


class SlurmJobLink(StoredLink):
    """The job's page in the factory plugin: state, accounting and the tail of its log."""

    name = "Slurm job"


def safe_path_part(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", value)[:120]


def log_tail(transport: SlurmTransport, path: str, lines: int = 30) -> str:
    """The end of a job's log through the transport: never the whole file."""
    try:
        text = transport.tail(path, LOG_TAIL_BYTES)
    except Exception as error:  # the failure message must still be written
        return f"(could not read {path}: {error})"
    return "\n".join(text.decode(errors="replace").splitlines()[-lines:]) or f"(no output in {path})"


def job_environment(env: dict[str, str], credentials: list[dict[str, str]], site: dict[str, Any]) -> dict[str, str]:
    """The job's variables: its own, the credentials of its connections, and the S3 endpoint as the site's
    compute nodes reach it (``job_s3_endpoint``) in place of the Airflow workers' one."""
    merged = dict(env)
    for values in credentials:
        merged.update(values)
    if site.get("job_s3_endpoint") and "AWS_ENDPOINT_URL" in merged:
        merged["AWS_ENDPOINT_URL"] = site["job_s3_endpoint"]
    return merged


class SlurmJobOperator(BaseOperator):
    """Stage files into a job folder, submit a batch job as the connection's user, defer until it ends.

    Crash-safe: the job id goes to the task state store before the task defers, and every job carries
    its task's identity as comment; a retry adopts the job instead of submitting a second one.
    The final state comes from the controller and accounting; anything but COMPLETED with exit code
    0 fails the task with the state, reason, exit code and the tail of the job's log.
    """

    template_fields: Sequence[str] = ("commands", "json_files", "env", "job_name", "memory", "time_limit", "account")
    operator_extra_links = (SlurmJobLink(),)
    ui_color = "#d6e4f0"

    def __init__(self, *, commands: list[list[str]], slurm_conn_id: str = SlurmHook.default_conn_name,
                 files: dict[str, str] | None = None, files_root: str | None = None,
                 json_files: dict[str, Any] | None = None,
                 env: dict[str, str] | None = None, env_connections: Sequence[str] = (),
                 job_name: str | None = None, cpus: int = 1, memory: str = "1G", time_limit: str = "00:30:00",
                 partition: str | None = None, gpus: int = 0, poll_interval_s: float = 2.0,
                 signal: str | None = "B:USR2@300", requeue: bool = False, max_restarts: int = 3,
                 unreachable_limit_s: float = 600.0, deferrable: bool = True, nodes: int = 1,
                 tasks_per_node: int = 1, procs_per_node: int = 1, qos: str | None = None,
                 account: str | None = None, gpu_directives: Sequence[str] | None = None,
                 launcher: Launcher = "plain", container: ContainerRun | None = None,
                 environment: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.commands = commands
        self.slurm_conn_id = slurm_conn_id
        self.files = files or {}
        if self.files and not files_root:
            raise ValueError("files are staged from inside one folder: give files_root (files name paths in it)")
        self.files_root = files_root
        self.json_files = json_files or {}
        self.env = env or {}
        self.env_connections = tuple(env_connections)
        self.job_name = job_name
        self.cpus, self.memory, self.time_limit = cpus, memory, time_limit
        self.partition, self.gpus = partition, gpus
        self.poll_interval_s = poll_interval_s
        self.signal, self.requeue, self.max_restarts = signal, requeue, max_restarts
        self.unreachable_limit_s = unreachable_limit_s
        self.deferrable = deferrable
        self.nodes, self.tasks_per_node, self.procs_per_node = nodes, tasks_per_node, procs_per_node
        self.qos, self.account = qos, account
        self.gpu_directives = tuple(gpu_directives) if gpu_directives is not None else None
        self.launcher, self.container, self.environment = launcher, container, environment
        self._submitted: tuple[SlurmTransport, int] | None = None

    # ------------------------------------------------------------------ helpers
    def _retry(self) -> RetryWithDeadline:
        return RetryWithDeadline(self.unreachable_limit_s, min(self.poll_interval_s, 5.0))

    def _workdir(self, context: Context, site: dict[str, Any]) -> str:
        ti = context["ti"]
        parts = [ti.dag_id, ti.run_id, f"{ti.task_id}.{ti.map_index}.try{ti.try_number}"]
        return str(Path(site["job_workdir"]).joinpath(*(safe_path_part(part) for part in parts)))

    def _files(self, job_script: str, env: dict[str, str]) -> dict[str, bytes]:
        files = {target: read_inside(Path(self.files_root or "."), source) for target, source in self.files.items()}
        files.update({target: json.dumps(content, indent=2).encode() for target, content in self.json_files.items()})
        files[JOB_ENV_FILE] = env_file_text(env).encode()
        files["job.sh"] = job_script.encode()
        return files

    @staticmethod
    def task_identity(ti) -> str:
        """Deterministic per task and map index, the same for every try: how a retry finds its job."""
        return str(TaskIdentity(ti.dag_id, ti.run_id, ti.task_id, ti.map_index))

    def batch_job(self, settings: dict[str, Any], workdir: str, comment: str, name: str) -> BatchJob:
        """The job this task submits, from the connection's settings; ``factory render`` shows the same."""
        return batch_job(name=name, workdir=workdir, comment=comment, settings=settings,
                         **{option: getattr(self, option) for option in JOB_OPTIONS})

    # ------------------------------------------------------------------ task semantics
    def execute(self, context: Context) -> Any:
        hook = SlurmHook(self.slurm_conn_id)
        site, transport, retry = hook.settings, hook.get_transport(), self._retry()
        store = context.get("task_state_store")
        found = self._earlier_job(context, transport, retry, store)
        if found is not None:
            return found
        workdir = self._workdir(context, site)
        ti = context["ti"]
        job = self.batch_job(site, workdir, self.task_identity(ti),
                             self.job_name or safe_path_part(f"{ti.dag_id}.{ti.task_id}")[:64])
        script = render(job)
        self._check_budget(transport, retry, job)
        env = job_environment(self.env, [credentials_env(conn_id) for conn_id in self.env_connections], site)
        retry.call(lambda: transport.stage(workdir, self._files(script, env), hook.job_user))
        job_id = self._submit_once(transport, retry, job, script)
        self._submitted = (transport, job_id)
        record = {"job_id": job_id, "workdir": workdir, "cluster": site.get("cluster"),
                  "submitted_at": datetime.now(UTC).isoformat(timespec="seconds")}
        if store is not None:  # before deferring: a crash from here on finds the job again
            store.set(STATE_KEY, record)
        self.log.info("Submitted Slurm job %s on %s (workdir %s)", job_id, site.get("cluster"), workdir)
        return self._watch(context, transport, record)

    def _cleared(self, ti: Any) -> bool:
        """A try a user asked for by clearing the task, not a retry: clearing starts a fresh retry budget,
        so this try is its first (Airflow's own ``first_try_number = max_tries - retries + 1``)."""
        return ti.try_number > 1 and ti.try_number == ti.max_tries - (self.retries or 0) + 1

    def _cancel_cleared(self, transport: SlurmTransport, retry: RetryWithDeadline, job_ids: list[int]) -> None:
        """The earlier try's job belongs to a run the user threw away: never adopt or reuse it."""
        for job_id in job_ids:
            self.log.warning("The task was cleared: cancelling Slurm job %s of an earlier try, submitting anew",
                             job_id)
            try:
                retry.call(lambda job_id=job_id: transport.cancel(job_id))
            except ControllerUnreachable:
                raise  # past the limit: the task fails, as on any unanswered call
            except SlurmError as error:  # it has ended already
                self.log.info("Slurm job %s: %s", job_id, error)

    def _earlier_job(self, context: Context, transport: SlurmTransport, retry: RetryWithDeadline,
                     store: Any) -> Any:
        """A job an earlier try submitted: adopt it if active, reuse its result if it succeeded; after a
        clear, cancel it and start afresh."""
        record = store.get(STATE_KEY) if store is not None else None
        if self._cleared(context["ti"]):
            active = retry.call(lambda: transport.find_active(self.task_identity(context["ti"])))
            self._cancel_cleared(transport, retry, [job.job_id for job in active])
            if store is not None and record:
                store.delete(STATE_KEY)
            return None
        if record:
            status = retry.call(transport.jobs).get(int(record["job_id"]))
            if status is not None and not status.ended(self.requeue):
                self.log.warning("Adopting Slurm job %s submitted by an earlier try (task state store)",
                                 record["job_id"])
                return self._watch(context, transport, record)
            final = retry.call(lambda: transport.final(int(record["job_id"]), self._since(record)))
            if final is not None and final.state == "COMPLETED" and final.exit_code == 0:
                self.log.info("Slurm job %s of an earlier try already COMPLETED: not submitting again",
                              record["job_id"])
                return self.execute_complete(context, {"job_id": record["job_id"], "state": final.state})
            self.log.warning("Slurm job %s of an earlier try ended %s: submitting a new one",
                             record["job_id"], final.state if final else status and status.state)
            if store is not None:
                store.delete(STATE_KEY)
            return None
        # no record: the worker may have died between submit and store.set, or the answer got lost
        active = retry.call(lambda: transport.find_active(self.task_identity(context["ti"])))
        if active:
            job = active[0]
            self.log.warning("Adopting Slurm job %s found by its task identity (comment)", job.job_id)
            record = {"job_id": job.job_id, "workdir": job.workdir, "cluster": None, "submitted_at": None}
            if store is not None:
                store.set(STATE_KEY, record)
            return self._watch(context, transport, record)
        return None

    def _check_budget(self, transport: SlurmTransport, retry: RetryWithDeadline, job: BatchJob) -> None:
        """Refuse, before anything is staged, a job that asks for more than its account has left: Slurm would
        keep it pending forever (AssocGrpCPUMinutesLimit). An allocation this way in cannot read is not checked."""
        if not job.account:
            return
        allocations = retry.call(lambda: transport.allocation(job.account))
        if allocations is None:
            self.log.info("Allocation of account %s: not readable through %s; not checked", job.account,
                          transport.kind)
            return
        refused = over_budget(job, allocations)
        if refused:
            raise AirflowFailException(f"Slurm job not submitted: {refused}")
        for allocation in allocations:
            self.log.info("Allocation: %s", allocation.describe())

    def _remaining(self, transport: SlurmTransport, settings: dict[str, Any]) -> dict[str, int] | None:
        """What the account has left once the job has ended ({TRES: minutes}); None when not readable."""
        account = self.account or settings.get("account")
        try:
            allocations = transport.allocation(account) if account else None
        except SlurmError as error:
            self.log.warning("Allocation of account %s not read: %s", account, error)
            return None
        return None if allocations is None else {a.tres: a.remaining_minutes for a in allocations}

    def _submit_once(self, transport: SlurmTransport, retry: RetryWithDeadline, job: BatchJob, script: str) -> int:
        """Submit; after a lost answer, look for the job by its identity before trying again."""
        while True:
            try:
                job_id = transport.submit(job, script)
            except SlurmUnavailable as error:
                pause = retry.failure(error)
                self.log.warning("Submission unanswered (%s); checking whether it arrived", error)
                time.sleep(pause)
                try:
                    arrived = transport.find_active(job.comment)
                except SlurmUnavailable:
                    continue
                if arrived:
                    return arrived[0].job_id
                continue
            retry.success()
            return job_id

    @staticmethod
    def _since(record: dict[str, Any]) -> datetime | None:
        return datetime.fromisoformat(record["submitted_at"]) if record.get("submitted_at") else None

    def _log_path(self, record: dict[str, Any]) -> str:
        return f"{record['workdir']}/slurm-{record['job_id']}.out"

    def _watch(self, context: Context, transport: SlurmTransport, record: dict[str, Any]) -> Any:
        job_id = int(record["job_id"])
        context["ti"].xcom_push(key="slurm_job", value=record)
        SlurmJobLink.store(context, self._job_url(job_id))
        trigger = SlurmJobTrigger(self.slurm_conn_id, job_id, self.poll_interval_s, self.unreachable_limit_s,
                                  env_file=f"{record['workdir']}/{JOB_ENV_FILE}", log_path=self._log_path(record),
                                  requeue=self.requeue, max_restarts=self.max_restarts,
                                  submitted_at=record.get("submitted_at"),
                                  task_identity=self.task_identity(context["ti"]),
                                  deferred_at=time.time() if self.deferrable else None)
        if self.deferrable:
            self.defer(trigger=trigger, method_name="execute_complete")
        settings = PollSettings(interval_s=self.poll_interval_s, unreachable_limit_s=self.unreachable_limit_s)
        shared = SlurmHook(self.slurm_conn_id).shared_status_transport(self.poll_interval_s)
        status = asyncio.run(ClusterWatcher(lambda: shared, settings).wait(job_id, self.requeue))
        return self.execute_complete(context, {"job_id": job_id, "state": status.state})

    def _job_url(self, job_id: int) -> str:
        from airflow.configuration import conf

        base = conf.get("api", "base_url", fallback="http://127.0.0.1:8080").rstrip("/")
        return f"{base}/factory/slurm/{self.slurm_conn_id}/jobs/{job_id}"

    def _final(self, transport: SlurmTransport, retry: RetryWithDeadline, job_id: int,
               since: datetime | None) -> JobAccounting | None:
        """Accounting lags the controller by a moment; wait for it a little, never assume success."""
        deadline = time.monotonic() + 20
        while (record := retry.call(lambda: transport.final(job_id, since))) is None:
            if time.monotonic() > deadline:
                return None
            time.sleep(0.5)
        return record

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        job_id = int(event["job_id"])
        hook = SlurmHook(self.slurm_conn_id)
        transport, retry = hook.get_transport(), self._retry()
        record = context["ti"].xcom_pull(task_ids=context["ti"].task_id, key="slurm_job") or {}
        store = context.get("task_state_store")
        if store is not None:
            record = store.get(STATE_KEY) or record
        workdir = record.get("workdir") or ""
        log = self._log_path({"workdir": workdir, "job_id": job_id})
        if event.get("state") in ("UNREACHABLE", "WATCH_FAILED", "RESTART_LIMIT"):
            try:  # a requeueable job keeps its credentials for restarts: no task is left to use them
                transport.remove(f"{workdir}/{JOB_ENV_FILE}")
            except SlurmError as error:  # one try only: the controller or login node may be what is gone
                self.log.warning("Could not remove %s/job.env: %s", workdir, error)
            raise AirflowException(f"Slurm job {job_id}: {event['state']}: {event.get('error')}")
        accounting = self._final(transport, retry, job_id, self._since(record))
        if accounting is None:
            raise AirflowException(f"Slurm job {job_id} left the queue as {event.get('state')}, but accounting "
                                   "has no final record after 20 s: not assuming success")
        retry.call(lambda: transport.remove(f"{workdir}/{JOB_ENV_FILE}"))  # credentials do not outlive the job
        result = {**accounting.as_dict(), "cluster": hook.settings.get("cluster"), "workdir": workdir,
                  "transport": transport.kind, "allocation": self._remaining(transport, hook.settings)}
        if accounting.state != "COMPLETED" or accounting.exit_code:
            raise AirflowException(
                f"Slurm job {job_id} ended {accounting.state} with exit code {accounting.exit_code} "
                f"(reason: {accounting.reason or 'none'}). Last lines of {log}:\n{log_tail(transport, log)}")
        self.log.info("Slurm job %s COMPLETED: %s", job_id, accounting.cost_line())
        return result

    def on_kill(self) -> None:
        """The task was killed while the worker still held it (before deferring): cancel its job."""
        if self._submitted is not None:
            transport, job_id = self._submitted
            self.log.info("Task killed: cancelling Slurm job %s", job_id)
            transport.cancel(job_id)


class SlurmJobReconcilerOperator(BaseOperator):
    """Keeps a ``SlurmReconcileTrigger`` running for one cluster: the task defers at once and ends
    after ``run_for_s`` with the jobs it cancelled; a continuous DAG starts it again."""

    ui_color = "#f0e0d6"

    def __init__(self, *, slurm_conn_id: str = SlurmHook.default_conn_name, check_interval_s: float = 10.0,
                 run_for_s: float = 3600.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.slurm_conn_id = slurm_conn_id
        self.check_interval_s = check_interval_s
        self.run_for_s = run_for_s

    def execute(self, context: Context) -> None:
        self.defer(trigger=SlurmReconcileTrigger(self.slurm_conn_id, self.check_interval_s, self.run_for_s),
                   method_name="execute_complete")

    def execute_complete(self, context: Context, event: dict[str, Any]) -> list[dict[str, Any]]:
        for job in event["cancelled"]:
            self.log.warning("Cancelled Slurm job %s: task %s was %s", job["job_id"], job["task"], job["task_state"])
        self.log.info("%d orphaned Slurm job(s) cancelled on %s in %.0f s", len(event["cancelled"]),
                      self.slurm_conn_id, event["ran_for_s"])
        return event["cancelled"]
