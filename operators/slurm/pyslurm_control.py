"""pyslurm as a control channel, for sites that build it against their own libslurm (no subprocess, no
HTTP hop). Like slurmrestd it moves no files: a pyslurm connection names its file channel.

pyslurm must match libslurm's major.minor exactly and PyPI has it only for Slurm 25.11, so a site builds
it (``BUILD_HINT``). The local stack builds 22.5.3 for its Slurm 22.05 and 24.11.0 for 24.11
(``stack.pyslurm``); this channel speaks both, and each difference between them is one small function
below. Like slurmrestd, pyslurm does not read ``#SBATCH`` lines: every job option is a field of the
submit description, and directives it has no field for are refused rather than dropped.

The module imports without pyslurm; the channel fails with a clear message when it is chosen on a
machine without it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
import tempfile
from collections.abc import Collection, Iterable, Iterator
from datetime import datetime
from typing import Any, ClassVar

from operators.slurm.model import JobAccounting, JobStatus, SlurmError, SlurmUnavailable, gpu_hours, is_transient
from operators.slurm.script import BatchJob, signal_name
from operators.slurm.transport import ControlChannel, default_since

BUILD_HINT = ("Build pyslurm against the site's libslurm: take the pyslurm release tagged for its Slurm "
              "major.minor (github.com/PySlurm/pyslurm, e.g. 24.11.0 for Slurm 24.11; PyPI has 25.11 only), then "
              "SLURM_INCLUDE_DIR=<folder with slurm/slurm.h> SLURM_LIB_DIR=<folder with libslurm.so or "
              "libslurmfull.so> pip wheel --no-build-isolation --no-deps <source folder> (Cython and setuptools "
              "installed first; releases before 23.2 need Cython<3 and setuptools<70) and install the wheel "
              "where the transport runs. See README \"pyslurm\".")
# passed explicitly (24.11.0's default sent an empty environment, which slurmctld refuses); as for the rest
# transport, the job's own variables come from the job.env file its script sources
JOB_ENVIRONMENT = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
NOT_RECORDED = 0xFFFFFFFFFFFFFFFE  # Slurm's NO_VAL64 - 1: a TRES count accounting did not measure


def load_pyslurm() -> Any:
    try:
        import pyslurm
    except ImportError as error:
        raise SlurmError(f"the 'pyslurm' transport needs pyslurm built against this site's libslurm ({error}). "
                         f"{BUILD_HINT}") from None
    return pyslurm


# ---------------------------------------------------------------------------- differences between releases

def is_22_5(pyslurm: Any) -> bool:
    return str(pyslurm.__version__).startswith("22.5.")


def slurm_release(pyslurm: Any) -> str:
    """``22.05.8``: the libslurm pyslurm was built against (``pyslurm.version()`` is pyslurm's own version in
    22.5, and ``pyslurm.version`` a module in 24.11)."""
    major, minor, micro = pyslurm.slurm_api_version()
    return f"{major}.{minor:02d}.{micro}"


def description_class(pyslurm: Any) -> type:
    """pyslurm 22.5.3 accepts ``signal`` but never puts it in the request (24.11 does): there a subclass
    applies it after the rest of the description is built."""
    base = pyslurm.JobSubmitDescription
    if not is_22_5(pyslurm):
        return base

    class WithWarningSignal(base):  # type: ignore[misc, valid-type]
        def _create_job_submit_desc(self, is_update: bool = False) -> None:
            super()._create_job_submit_desc(is_update)
            self._set_signal()

    return WithWarningSignal


def peak_rss(stats: Any) -> int | None:
    """The job's MaxRSS (the highest of its steps'): ``max_resident_memory`` in 22.5, ``resident_memory`` in
    24.11 (where ``max_resident_memory`` is a step's field only)."""
    value = stats.max_resident_memory if hasattr(stats, "max_resident_memory") else stats.resident_memory
    return None if value is None else int(value)


# ---------------------------------------------------------------------------- the submit description

def warning_signal(signal: str) -> str:
    """sbatch's ``B:USR2@300`` as pyslurm takes it, ``B:SIGUSR2@300`` (a bare ``USR2`` is refused)."""
    name = signal_name(signal)
    flags, _, rest = signal.rpartition(":")
    _, at, seconds = rest.partition("@")
    prefixed = name if name.isdigit() else f"SIG{name}"
    return f"{flags + ':' if flags else ''}{prefixed}{at}{seconds}"


def gpu_request(job: BatchJob) -> str | None:
    if not job.gpus:
        return None
    if job.gpu_directives is not None and list(job.gpu_directives) != [f"--gres=gpu:{job.gpus}"]:
        raise SlurmError(f"pyslurm: this client asks for GPUs as --gres=gpu:N only, not "
                         f"{' '.join(job.gpu_directives)}: use the ssh or local transport for this site")
    return f"gpu:{job.gpus}"


def submit_fields(job: BatchJob) -> dict[str, Any]:
    """``JobSubmitDescription``'s fields for ``job`` (the script is added by the caller)."""
    if job.extra_directives:
        raise SlurmError(f"pyslurm does not read #SBATCH lines, so {', '.join(job.extra_directives)} would be "
                         "silently dropped: use the local or ssh transport for these directives")
    fields: dict[str, Any] = {
        "name": job.name, "working_directory": job.workdir, "standard_output": job.output,
        "cpus_per_task": job.cpus, "memory_per_node": f"{job.memory_mb}M", "time_limit": job.time_minutes,
        "nodes": job.nodes, "ntasks": job.nodes * job.tasks_per_node, "comment": job.comment,
        "is_requeueable": job.requeue, "environment": dict(JOB_ENVIRONMENT),
    }
    if job.nodes > 1 or job.tasks_per_node > 1:
        fields["ntasks_per_node"] = job.tasks_per_node
    optional = {"account": job.account, "partitions": job.partition, "qos": job.qos,
                "signal": warning_signal(job.signal) if job.signal else None, "gres_per_node": gpu_request(job)}
    fields.update({name: value for name, value in optional.items() if value})
    return fields


def on_behalf_of(user: str | None) -> dict[str, Any]:
    """``user_id``/``group_id`` when this process is another user (root submitting for the job user, as
    ``runuser`` does for the command transports); Slurm allows that to root and SlurmUser only."""
    if not user or pwd.getpwuid(os.geteuid()).pw_name == user:
        return {}
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        raise SlurmError(f"pyslurm: no user {user!r} on this machine to submit as") from None
    return {"user_id": account.pw_uid, "group_id": account.pw_gid}


@contextlib.contextmanager
def script_file(script: str) -> Iterator[str]:
    """The script as a private file for the description's ``script``: pyslurm first tries the text as a
    path (``Path(script).is_file()``), which raises "File name too long" for scripts over 4096 bytes."""
    with tempfile.TemporaryDirectory(prefix="pyslurm-") as folder:
        path = os.path.join(folder, "job.sh")
        with open(path, "w") as handle:
            handle.write(script)
        yield path


# ---------------------------------------------------------------------------- answers

def exit_status(code: int | None, signal: int | None) -> int | None:
    """A job killed by a signal reads as 128 + n, as in the other transports."""
    return code or (128 + signal if signal else code)


def reason_text(reason: Any) -> str:
    return "" if reason in (None, "None") else str(reason)


def iso_time(timestamp: Any) -> str | None:
    """A Unix time as the local ISO time the other transports give; None for 0 (not known yet)."""
    if not isinstance(timestamp, int) or not timestamp:
        return None
    return datetime.fromtimestamp(timestamp).isoformat(timespec="seconds")


def every(collection: Any) -> Iterable[Any]:
    """The jobs of a ``Jobs`` collection (one cluster or several, as pyslurm keys them)."""
    return list(collection.values())


def job_status(job: Any) -> JobStatus:
    """A controller job (``pyslurm.Job``) as our ``JobStatus``; exit codes only once it ended."""
    status = JobStatus(int(job.id), str(job.state), None, reason_text(job.state_reason), iso_time(job.start_time),
                       int(job.requeue_count or 0), job.comment or "", job.working_directory or "")
    if status.finished:
        return dataclasses.replace(status, exit_code=exit_status(job.exit_code, job.exit_code_signal))
    return status


def tres_count(tres: str, tres_id: int | None) -> int:
    """``1=1,2=128,1001=2`` (TRES ids as slurmdbd stores them) -> the count of ``tres_id``."""
    counts = dict(item.split("=", 1) for item in tres.split(",") if "=" in item)
    value = int(counts.get(str(tres_id), 0) or 0)
    return 0 if value >= NOT_RECORDED else value


def cpu_seconds(legacy: dict[str, Any]) -> float | None:
    """TotalCPU as sacct adds it up: each step's seconds and microseconds (``db.Job``'s job-level figure is
    0 in 22.5, whole seconds in 24.11)."""
    steps = (legacy.get("steps") or {}).values()
    parts = [(step.get("tot_cpu_sec") or 0) + (step.get("tot_cpu_usec") or 0) / 1e6 for step in steps
             if (step.get("tot_cpu_sec") or 0) < NOT_RECORDED]
    return round(sum(parts), 3) if parts else None


def accounting_record(job: Any, legacy: dict[str, Any], gpu_tres_id: int | None) -> JobAccounting:
    """A slurmdbd job (``pyslurm.db.Job``) and its older ``slurmdb_jobs`` view as our ``JobAccounting``.

    pyslurm reads the record itself, so 22.05's exit code is right here (its JSON view, in ``sacct --json``
    and slurmrestd, says 0). GPUs come from the allocated TRES and the user from the association, as
    sacct's User column: the uid column says 0 for a while when root submitted for the user. CPU time too
    comes from the older view (``cpu_seconds``)."""
    stats = job.stats
    elapsed = int(job.elapsed_time or 0)  # pyslurm says None for 0 s
    gpus = tres_count(legacy.get("tres_alloc_str") or "", gpu_tres_id) if gpu_tres_id is not None else 0
    cpu_time = cpu_seconds(legacy) or float(stats.total_cpu_time or 0)
    return JobAccounting(
        int(job.id), str(job.state), exit_status(job.exit_code, job.exit_code_signal), reason_text(job.state_reason),
        elapsed, cpu_time, peak_rss(stats), gpus, gpu_hours(gpus, elapsed), stats.consumed_energy or None,
        user=legacy.get("user") or job.user_name or "")


class PyslurmControl(ControlChannel):
    kind: ClassVar[str] = "pyslurm"

    def __init__(self, user: str | None = None, **_: object) -> None:
        self.user = user
        self.pyslurm = load_pyslurm()
        self._gpu_tres_id: int | None = None

    def __repr__(self) -> str:
        return f"PyslurmControl(user={self.user!r}, pyslurm {self.pyslurm.__version__})"

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """pyslurm's errors as ours, in Slurm's words; a busy or restarting controller is worth a retry."""
        try:
            yield
        except (self.pyslurm.PyslurmError, ValueError, TypeError) as error:
            text = f"pyslurm {what}: {error}"
            raise (SlurmUnavailable if is_transient(text) else SlurmError)(text) from None

    def submit(self, job: BatchJob, script: str) -> int:
        fields = {**submit_fields(job), **on_behalf_of(self.user)}
        description_type = description_class(self.pyslurm)
        if unknown := [name for name in fields if not hasattr(self.pyslurm.JobSubmitDescription, name)]:
            raise SlurmError(f"pyslurm {self.pyslurm.__version__} has no submit field {', '.join(unknown)}")
        with self._errors("submit"), script_file(script) as path:
            return int(description_type(script=path, **fields).submit())

    def jobs(self) -> dict[int, JobStatus]:
        """One REQUEST_JOB_INFO for slurmctld, whatever the number of jobs."""
        with self._errors("Jobs.load"):
            jobs = every(self.pyslurm.Jobs.load())
            return {int(job.id): job_status(job) for job in jobs if not self.user or job.user_name == self.user}

    def accounting(self, job_ids: Collection[int], since: datetime | None = None) -> dict[int, JobAccounting]:
        """Two slurmdbd queries (three the first time: the TRES table): ``db.Jobs`` for the records, the older
        ``slurmdb_jobs`` for what ``pyslurm.db.Job`` of 22.5 and 24.11 leaves out (allocated TRES, TotalCPU
        to the microsecond, the association's user)."""
        if not job_ids:
            return {}
        wanted = sorted(set(job_ids))
        job_filter = self.pyslurm.db.JobFilter(ids=wanted, start_time=since or default_since())
        with self._errors("db.Jobs.load"):
            records = [job for job in every(self.pyslurm.db.Jobs.load(job_filter)) if int(job.id) in wanted]
            if not records:
                return {}
            legacy = self.pyslurm.slurmdb_jobs().get(jobids=[int(job.id) for job in records],
                                                     clusters=sorted({job.cluster for job in records}))
            gpu_tres_id = self._gres_gpu_id()
        return {int(job.id): accounting_record(job, legacy.get(int(job.id), {}), gpu_tres_id) for job in records}

    def _gres_gpu_id(self) -> int | None:
        """The id slurmdbd gave ``gres/gpu`` (fixed once created; None on a cluster without GPUs)."""
        if self._gpu_tres_id is None:
            tres = self.pyslurm.db.TrackableResources.load(name_is_key=False)
            self._gpu_tres_id = next((int(tres_id) for tres_id, entry in tres.items()
                                      if (entry.type, entry.name) == ("gres", "gpu")), -1)
        return None if self._gpu_tres_id < 0 else self._gpu_tres_id

    def cancel(self, job_id: int) -> None:
        with self._errors(f"cancel of job {job_id}"):
            self.pyslurm.Job(job_id).cancel()

    def describe(self) -> str:
        with self._errors("slurmctld.Config.load"):
            cluster = self.pyslurm.slurmctld.Config.load().cluster
        return f"Slurm {slurm_release(self.pyslurm)} via pyslurm {self.pyslurm.__version__}, cluster {cluster}"
