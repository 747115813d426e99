"""``PyslurmControl`` in another Python, one call at a time: a JSON request on stdin, a JSON answer on stdout.

pyslurm imports only where it was built: against that site's libslurm, and (Slurm 24.11's libslurmfull)
under a glibc >= 2.38. ``PyslurmCommand`` is a control channel that runs each call as
``<python> -m operators.slurm.pyslurm_call`` there (a chroot, a container, a login node's venv behind a
command prefix) and gives the answers ``PyslurmControl`` would give in-process. It is not a connection
transport of its own; the local stack's tests reach its Slurm 24.11 cluster (a trixie chroot) with it.
This module imports only the standard library and the Slurm modules of this package, which is all the
other Python needs of the project.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any, ClassVar

from operators.slurm.model import JobAccounting, JobStatus, SlurmError, SlurmUnavailable
from operators.slurm.script import BatchJob, ContainerRun
from operators.slurm.transport import ControlChannel

METHODS = ("submit", "jobs", "accounting", "cancel", "describe")


def job_as_json(job: BatchJob) -> dict[str, Any]:
    return dataclasses.asdict(job)


def job_from_json(data: dict[str, Any]) -> BatchJob:
    container = data.get("container")
    directives = data.get("gpu_directives")
    return BatchJob(**{**data, "container": ContainerRun(**container) if container else None,
                       "gpu_directives": tuple(directives) if directives is not None else None})


def answer_as_json(method: str, result: Any) -> Any:
    """Job ids become JSON object keys (strings); records become objects."""
    if method in ("jobs", "accounting"):
        return {str(job_id): dataclasses.asdict(record) for job_id, record in result.items()}
    return result


def answer_from_json(method: str, data: Any) -> Any:
    if method == "jobs":
        return {int(job_id): JobStatus(**record) for job_id, record in data.items()}
    if method == "accounting":
        return {int(job_id): JobAccounting(**record) for job_id, record in data.items()}
    return data


def run_request(request: dict[str, Any]) -> Any:
    """Run one call of ``PyslurmControl`` (imported here: only this side has pyslurm)."""
    from operators.slurm.pyslurm_control import PyslurmControl

    method, arguments = request["method"], request.get("arguments", {})
    if method not in METHODS:
        raise SlurmError(f"pyslurm_call: unknown method {method!r}: one of {', '.join(METHODS)}")
    control = PyslurmControl(**request.get("settings", {}))
    if method == "submit":
        return control.submit(job_from_json(arguments["job"]), arguments["script"])
    if method == "accounting":
        since = arguments.get("since")
        return control.accounting(arguments["job_ids"], datetime.fromisoformat(since) if since else None)
    if method == "cancel":
        return control.cancel(arguments["job_id"])
    return getattr(control, method)()


def main() -> int:
    """One request from stdin; the answer, or the error's kind and words, on stdout."""
    request = json.load(sys.stdin)
    try:
        answer = {"result": answer_as_json(request["method"], run_request(request))}
    except SlurmError as error:
        answer = {"error": type(error).__name__, "message": str(error)}
    json.dump(answer, sys.stdout)
    return 0


class PyslurmCommand(ControlChannel):
    """The pyslurm control channel behind a command (``command`` ends with ``-m operators.slurm.pyslurm_call``
    run by a Python that has pyslurm); one process per call."""

    kind: ClassVar[str] = "pyslurm"

    def __init__(self, command: Sequence[str], user: str | None = None, timeout_s: float = 60.0,
                 env: dict[str, str] | None = None) -> None:
        self.command = list(command)
        self.user = user
        self.timeout_s = timeout_s
        self.env = env

    def __repr__(self) -> str:
        return f"PyslurmCommand({self.command!r}, user={self.user!r})"

    def _call(self, method: str, **arguments: Any) -> Any:
        request = {"method": method, "arguments": arguments, "settings": {"user": self.user}}
        try:
            done = subprocess.run(self.command, input=json.dumps(request), capture_output=True, text=True,
                                  timeout=self.timeout_s, env=self.env)
        except subprocess.TimeoutExpired:
            raise SlurmUnavailable(f"pyslurm {method}: no answer within {self.timeout_s:.0f} s") from None
        try:
            answer = json.loads(done.stdout)
        except ValueError:
            raise SlurmError(f"pyslurm {method} via {self.command[0]}: exit {done.returncode}, no answer: "
                             f"{(done.stderr or done.stdout).strip()[-2000:]}") from None
        if "error" in answer:
            raise (SlurmUnavailable if answer["error"] == "SlurmUnavailable" else SlurmError)(answer["message"])
        return answer_from_json(method, answer["result"])

    def submit(self, job: BatchJob, script: str) -> int:
        return int(self._call("submit", job=job_as_json(job), script=script))

    def jobs(self) -> dict[int, JobStatus]:
        return self._call("jobs")

    def accounting(self, job_ids: Collection[int], since: datetime | None = None) -> dict[int, JobAccounting]:
        return self._call("accounting", job_ids=sorted(set(job_ids)), since=since.isoformat() if since else None)

    def cancel(self, job_id: int) -> None:
        self._call("cancel", job_id=job_id)

    def describe(self) -> str:
        return self._call("describe")


if __name__ == "__main__":
    sys.exit(main())
