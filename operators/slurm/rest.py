"""slurmrestd with JWT as a control channel, speaking whichever OpenAPI version the server offers.

It moves no files: slurmrestd has no way to, so a REST connection names its file channel
(``operators.slurm.transports``). Slurm 22.05 serves v0.0.36-38; 24.11 v0.0.40-42; 25.11 v0.0.44;
26.05 v0.0.45. With ``api_version="auto"`` the channel reads ``/openapi/v3`` once and takes the newest
version it knows. From v0.0.40 numbers come as ``{"set", "number"}`` objects and states as lists; the
readers below accept both shapes. What a real 24.11 slurmrestd (v0.0.40-42) changed for writers:
the job description lost ``signal`` (now ``kill_warning_*``) and ``gres`` (now ``tres_per_node``),
and an unknown field is only a warning, so the job would run without it; the script belongs in the
job. v0.0.42 answers the cancel of an unknown job with HTTP 200 and the error in ``status``
(v0.0.40-41 with nothing at all); slurmdbd takes many job ids in one ``/jobs/?step=..`` query.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Collection
from datetime import datetime
from typing import Any, ClassVar

from operators.http_json import JsonClient
from operators.slurm.model import (
    JobAccounting,
    JobStatus,
    SlurmError,
    SlurmUnavailable,
    gpu_hours,
    is_transient,
    settled,
)
from operators.slurm.script import BatchJob
from operators.slurm.transport import ControlChannel

ACCOUNTING_BATCH = 100  # job ids per slurmdbd query: keeps the URL short
SUPPORTED_VERSIONS = ("v0.0.45", "v0.0.44", "v0.0.43", "v0.0.42", "v0.0.41", "v0.0.40", "v0.0.38", "v0.0.37")


def _number(value: Any) -> int | None:
    """v0.0.38 plain numbers and v0.0.40+ ``{"set": true, "number": n}`` alike."""
    if isinstance(value, dict):
        return int(value["number"]) if value.get("set", True) and value.get("number") is not None else None
    return int(value) if isinstance(value, int | float) else None


def _state(value: Any) -> str:
    return value[0] if isinstance(value, list) and value else str(value or "UNKNOWN")


def _signal_exit(code: int | None, signal: int | None) -> int | None:
    """A job killed by a signal reads as 128 + n, as text sacct's ``0:9`` does in ``cli._exit_code``."""
    return code or (128 + signal if signal else code)


def _controller_exit_code(job: dict[str, Any]) -> int | None:
    raw = job.get("exit_code")
    if isinstance(raw, dict):  # v0.0.40+: {"status": [...], "return_code": {...}, "signal": {"id": {...}}}
        signal = raw.get("signal")
        return _signal_exit(_number(raw.get("return_code")),
                            _number(signal.get("id")) if isinstance(signal, dict) else None)
    if isinstance(raw, int):  # v0.0.38: a wait status, 768 = exit 3, 9 = killed by SIGKILL
        return _signal_exit(raw >> 8, raw & 0x7F)
    return None


def _status(job: dict[str, Any]) -> JobStatus:
    start = _number(job.get("start_time"))
    return JobStatus(
        int(job["job_id"]), _state(job.get("job_state")), _controller_exit_code(job),
        "" if job.get("state_reason") in (None, "None") else job["state_reason"],
        datetime.fromtimestamp(start).isoformat(timespec="seconds") if start else None,
        _number(job.get("restart_cnt")) or 0, job.get("comment") or "", job.get("current_working_directory") or "")


def _tres_count(entries: list[dict[str, Any]], kind: str, name: str | None = None) -> int | None:
    counts = [_number(entry.get("count")) for entry in entries
              if entry.get("type") == kind and (name is None or entry.get("name") == name)]
    counts = [count for count in counts if count is not None]
    return max(counts) if counts else None


def _seconds(value: Any) -> float:
    if isinstance(value, dict):
        return (_number(value.get("seconds")) or 0) + (_number(value.get("microseconds")) or 0) / 1e6
    return float(value or 0)


def accounting_record(record: dict[str, Any]) -> JobAccounting:
    """A slurmdbd job record as our ``JobAccounting``. Its exit code is 0 for failed jobs on 22.05:
    callers prefer the controller's while it still lists the job."""
    steps = record.get("steps", [])
    elapsed = _number(record.get("time", {}).get("elapsed"))
    gpus = _tres_count(record.get("tres", {}).get("allocated", []), "gres", "gpu") or 0
    rss = [_tres_count(step.get("tres", {}).get("requested", {}).get("max", []), "mem") for step in steps]
    energy = [_tres_count(step.get("tres", {}).get("consumed", {}).get("max", []), "energy") for step in steps]
    state = record.get("state", {})
    exit_info = record.get("exit_code", {})
    signal = exit_info.get("signal") if isinstance(exit_info.get("signal"), dict) else {}
    signal_id = _number(signal.get("signal_id", signal.get("id")))
    return JobAccounting(
        int(record["job_id"]), _state(state.get("current")), _signal_exit(_number(exit_info.get("return_code")),
                                                                          signal_id),
        "" if state.get("reason") in (None, "None") else state["reason"], elapsed,
        round(sum(_seconds(step.get("time", {}).get("total")) for step in steps), 3) if steps else None,
        max((value for value in rss if value is not None), default=None), gpus, gpu_hours(gpus, elapsed),
        max((value for value in energy if value), default=None), _number(record.get("restart_cnt")) or 0,
        record.get("user") or "")


def rest_job_fields(job: BatchJob) -> dict[str, Any]:
    """The job description slurmrestd wants: it ignores ``#SBATCH`` lines in the script."""
    fields: dict[str, Any] = {
        "name": job.name, "current_working_directory": job.workdir, "standard_output": job.output,
        "cpus_per_task": job.cpus, "memory_per_node": job.memory_mb, "time_limit": job.time_minutes,
        "tasks": job.nodes * job.tasks_per_node, "comment": job.comment, "requeue": job.requeue,
    }
    if job.nodes > 1 or job.tasks_per_node > 1:
        fields.update(minimum_nodes=job.nodes, maximum_nodes=job.nodes, tasks_per_node=job.tasks_per_node)
    if job.qos:
        fields["qos"] = job.qos
    if job.signal:
        fields["signal"] = job.signal
    if job.account:
        fields["account"] = job.account
    if job.partition:
        fields["partition"] = job.partition
    if job.gpus:
        if job.gpu_directives is not None and list(job.gpu_directives) != [f"--gres=gpu:{job.gpus}"]:
            raise SlurmError(f"slurmrestd: this client asks for GPUs as --gres=gpu:N only, not "
                             f"{' '.join(job.gpu_directives)}: use the ssh or local transport for this site")
        fields["gres"] = f"gpu:{job.gpus}"
    return fields


WARNING_FLAGS = {"B": "BATCH_JOB", "R": "RESERVATION_JOB"}


def warning_fields(signal: str) -> dict[str, Any]:
    """sbatch's ``--signal=[{R|B}:]SIG[@SECONDS]`` as the v0.0.40+ fields that replaced ``signal``."""
    flags, _, rest = signal.rpartition(":")
    name, _, seconds = rest.partition("@")
    if any(flag not in WARNING_FLAGS for flag in flags) or not name or not (seconds or "60").isdigit():
        raise SlurmError(f"--signal={signal!r}: expected [{{R|B}}:]SIGNAL[@SECONDS], e.g. B:USR2@300")
    return {"kill_warning_signal": name.removeprefix("SIG"),
            "kill_warning_delay": {"set": True, "number": int(seconds or 60)},  # sbatch's default: 60 s
            "kill_warning_flags": [WARNING_FLAGS[flag] for flag in flags]}


def _newer_body(fields: dict[str, Any], script: str) -> dict[str, Any]:
    """v0.0.40+: the script goes inside the job, numbers are objects, environment a list; ``signal``
    and ``gres`` are gone from the job description (24.11 ignores them with a warning)."""
    job = dict(fields, script=script)
    job["environment"] = [f"{key}={value}" for key, value in fields["environment"].items()]
    for key in ("memory_per_node", "time_limit"):
        job[key] = {"set": True, "number": fields[key]}
    if "signal" in job:
        job.update(warning_fields(job.pop("signal")))
    if "gres" in job:
        job["tres_per_node"] = f"gres/{job.pop('gres')}"
    return {"job": job}


def _older_body(fields: dict[str, Any], script: str) -> dict[str, Any]:
    """v0.0.38: a node count is ``nodes: [min, max]`` (its ``minimum_nodes`` is a prefer-fewer flag and
    ``maximum_nodes`` is unknown: HTTP 400); the batch-shell flag of ``signal`` is rejected ("Invalid SIGNAL
    specification"), so the warning reaches job steps only (srun/torchrun launchers)."""
    job = dict(fields)
    if "maximum_nodes" in job:
        job["nodes"] = [job.pop("minimum_nodes"), job.pop("maximum_nodes")]
    if job.get("signal", "").startswith("B:"):
        job["signal"] = job["signal"].removeprefix("B:")
    return {"job": job, "script": script}


def ignored_fields(answer: dict[str, Any]) -> list[str]:
    """Fields slurmrestd dropped from a request: v0.0.40+ only warns ("Ignoring unknown field")."""
    return [warning.get("source") or warning.get("description", "")
            for warning in answer.get("warnings", []) if "unknown field" in warning.get("description", "")]


def offered_versions(paths: Collection[str]) -> set[str]:
    """``v0.0.42`` and its kind from the paths of ``/openapi/v3`` (24.11 writes ``/slurm/v0.0.42/ping/``)."""
    return set(re.findall(r"/slurm/(v\d+\.\d+\.\d+)/", " ".join(paths)))


def cancel_errors(answer: dict[str, Any]) -> list[str]:
    """v0.0.42's per-job errors of a cancel, which it answers with HTTP 200."""
    errors = [entry["error"] for entry in answer.get("status", []) if isinstance(entry.get("error"), dict)]
    return [error.get("message") or error.get("string") or f"error {error['code']}"
            for error in errors if error.get("code")]


def slurm_release(answer: dict[str, Any]) -> str:
    """The server's release from any answer's ``meta`` (``Slurm`` in v0.0.38, ``slurm`` from v0.0.40)."""
    meta = answer.get("meta", {})
    return meta.get("Slurm", meta.get("slurm", {})).get("release", "unknown release")


class RestControl(ControlChannel):
    kind: ClassVar[str] = "rest"

    def __init__(self, base_url: str, user: str, token: str, api_version: str = "auto",
                 timeout_s: float = 30.0, **_: object) -> None:
        self.base_url = base_url.rstrip("/")
        self.user = user
        self.timeout_s = timeout_s
        self._api_version = None if api_version == "auto" else api_version
        # connection errors and timeouts are transient: the watcher retries them
        self.http = JsonClient(self.base_url, SlurmUnavailable, {"X-SLURM-USER-NAME": user,
                                                                 "X-SLURM-USER-TOKEN": token},
                               timeout_s=timeout_s, secrets=[token])

    def __repr__(self) -> str:  # never show the token
        return f"RestControl({self.base_url!r}, user={self.user!r}, api={self._api_version or 'auto'})"

    @property
    def api_version(self) -> str:
        if self._api_version is None:
            self._api_version = self.negotiate()
        return self._api_version

    def negotiate(self) -> str:
        """The newest version both sides speak, from the paths the server's OpenAPI document lists."""
        offered = offered_versions(self._call("GET", "/openapi/v3")["paths"])
        for version in SUPPORTED_VERSIONS:
            if version in offered:
                return version
        raise SlurmError(f"slurmrestd at {self.base_url} offers {', '.join(sorted(offered)) or 'no version'}; "
                         f"this client speaks {', '.join(SUPPORTED_VERSIONS)}")

    @property
    def _newer(self) -> bool:
        return self.api_version >= "v0.0.40"

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.http.send(method, path, body)
        if response.status_code >= 400:
            text = self.http.redact(response.text[:4000])
            with contextlib.suppress(ValueError):  # keep Slurm's own words, not the meta block around them
                text = json.dumps(json.loads(text).get("errors") or text)
            kind = SlurmUnavailable if response.status_code in (502, 503, 504) or is_transient(text) else SlurmError
            raise kind(f"{method} {path}: HTTP {response.status_code}: {text}")
        answer = self.http.decode(method, path, response) or {}
        errors = [e for e in answer.get("errors", []) if e.get("error_number", e.get("errno", 0))]
        if errors:
            text = json.dumps(errors)
            raise (SlurmUnavailable if is_transient(text) else SlurmError)(f"{method} {path}: {text}")
        return answer

    def submit(self, job: BatchJob, script: str) -> int:
        if job.extra_directives:
            raise SlurmError(f"slurmrestd ignores #SBATCH lines, so {', '.join(job.extra_directives)} would be "
                             "silently dropped: use the local or ssh transport for these directives")
        fields = rest_job_fields(job)
        fields["environment"] = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
        body = _newer_body(fields, script) if self._newer else _older_body(fields, script)
        answer = self._call("POST", f"/slurm/{self.api_version}/job/submit", body)
        job_id = int(answer["job_id"])
        if dropped := ignored_fields(answer):  # the job would run without them: take it back and say so
            with contextlib.suppress(SlurmError):
                self.cancel(job_id)
            raise SlurmError(f"slurmrestd {self.api_version} at {self.base_url} ignored {', '.join(dropped)} "
                             f"of the job description; job {job_id} was cancelled")
        return job_id

    def status(self, job_id: int) -> JobStatus:
        """The controller's view of one job (its exit code is right even on 22.05)."""
        jobs = self._call("GET", f"/slurm/{self.api_version}/job/{job_id}").get("jobs", [])
        if not jobs:
            raise SlurmError(f"job {job_id} is not known to the controller")
        return _status(jobs[0])

    def jobs(self) -> dict[int, JobStatus]:
        """One REQUEST_JOB_INFO for slurmctld, whatever the number of jobs."""
        jobs = self._call("GET", f"/slurm/{self.api_version}/jobs").get("jobs", [])
        return {int(job["job_id"]): _status(job) for job in jobs}

    def accounting(self, job_ids: Collection[int], since: datetime | None = None) -> dict[int, JobAccounting]:
        """slurmdbd's records: from v0.0.40 one ``/jobs/?step=..`` query per 100 jobs (the ids alone, as
        ``sacct -j``: a ``start_time`` with a clock time does not parse); before, one call per job, which
        the watcher only makes for jobs the controller has already forgotten."""
        if self._newer:
            return self._accounting_by_query(sorted(set(job_ids)))
        records = {}
        for job_id in job_ids:
            try:
                jobs = self._call("GET", f"/slurmdb/{self.api_version}/job/{job_id}").get("jobs", [])
            except SlurmError as error:
                if isinstance(error, SlurmUnavailable):
                    raise
                continue  # not recorded yet
            if jobs:
                records[job_id] = accounting_record(jobs[0])
        return records

    def _accounting_by_query(self, job_ids: list[int]) -> dict[int, JobAccounting]:
        records: dict[int, JobAccounting] = {}
        wanted = set(job_ids)
        for start in range(0, len(job_ids), ACCOUNTING_BATCH):
            query = "&".join(f"step={job_id}" for job_id in job_ids[start:start + ACCOUNTING_BATCH])
            for record in self._call("GET", f"/slurmdb/{self.api_version}/jobs/?{query}").get("jobs", []):
                if int(record["job_id"]) in wanted:
                    records[int(record["job_id"])] = accounting_record(record)
        return records

    def final(self, job_id: int, since: datetime | None = None) -> JobAccounting | None:
        record = self.accounting([job_id], since).get(job_id)
        if record is not None and record.state not in ("COMPLETED", "PENDING", "RUNNING", "REQUEUED"):
            try:  # 22.05's accounting says exit 0 for failed jobs; the controller knows better while it lists the job
                controller = self.status(job_id)
            except SlurmError:
                controller = None
            if controller is not None:
                record = JobAccounting(**{**record.as_dict(), "exit_code": controller.exit_code,
                                          "restarts": controller.restarts})
        return record if record is not None and settled(record) else None

    def cancel(self, job_id: int) -> None:
        """v0.0.42 answers HTTP 200 with per-job errors in ``status``; v0.0.40-41 say nothing at all."""
        answer = self._call("DELETE", f"/slurm/{self.api_version}/job/{job_id}")
        if failed := cancel_errors(answer):
            raise SlurmError(f"DELETE /slurm/{self.api_version}/job/{job_id}: {'; '.join(failed)}")

    def diag(self) -> dict[str, Any]:
        return self._call("GET", f"/slurm/{self.api_version}/diag")

    def describe(self) -> str:
        release = slurm_release(self._call("GET", f"/slurm/{self.api_version}/ping"))
        return f"Slurm {release} via slurmrestd {self.api_version} at {self.base_url}"
