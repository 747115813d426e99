"""The pyslurm control channel without a cluster: the submit description it builds for pyslurm 22.5.3 and
24.11.0, how it reads their answers, and the JSON call that runs it in another Python (issue 18, point 3).
A small fake ``pyslurm`` stands in for the real one (the integration tests use both real builds)."""

from __future__ import annotations

import os
import pwd
import sys
import textwrap
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from operators.slurm import pyslurm_control
from operators.slurm.model import SlurmError, SlurmUnavailable
from operators.slurm.pyslurm_call import PyslurmCommand, job_as_json, job_from_json
from operators.slurm.pyslurm_control import (
    BUILD_HINT,
    PyslurmControl,
    accounting_record,
    cpu_seconds,
    description_class,
    exit_status,
    job_status,
    load_pyslurm,
    on_behalf_of,
    peak_rss,
    submit_fields,
    tres_count,
    warning_signal,
)
from operators.slurm.script import BatchJob, ContainerRun

REPO = Path(__file__).resolve().parents[2]
FAKE_PYSLURM = textwrap.dedent('''
    """Just enough of pyslurm's surface for the control channel."""
    __version__ = "24.11.0"
    SUBMITTED = []


    class PyslurmError(Exception):
        pass


    class RPCError(PyslurmError):
        pass


    class JobSubmitDescription:
        name = working_directory = standard_output = cpus_per_task = memory_per_node = time_limit = None
        nodes = ntasks = ntasks_per_node = comment = is_requeueable = environment = account = None
        partitions = qos = signal = gres_per_node = user_id = group_id = script = None

        def __init__(self, **fields):
            for name, value in fields.items():
                setattr(self, name, value)

        def _create_job_submit_desc(self, is_update=False):
            self.built = ["description"]

        def _set_signal(self):
            self.built.append("signal")

        def submit(self):
            self._create_job_submit_desc()
            with open(self.script) as handle:
                SUBMITTED.append({**vars(self), "script": handle.read()})
            if self.name == "refused":
                raise RPCError("Invalid account or account/partition combination specified")
            if self.name == "busy":
                raise RPCError("Socket timed out on send/recv operation")
            return 42


    def slurm_api_version():
        return (24, 11, 5)


    class slurmctld:
        class Config:
            @staticmethod
            def load():
                return type("Config", (), {"cluster": "fake"})()
''')


def batch_job(**fields: Any) -> BatchJob:
    settings: dict[str, Any] = {
        "name": "train", "account": "demo", "partition": "gpu", "cpus": 2, "memory": "1G", "time": "01:30:00",
        "gpus": 2, "workdir": "/scratch/job", "commands": [["python", "train.py"]], "comment": "task:1",
        "requeue": True}
    return BatchJob(**{**settings, **fields})


@pytest.fixture
def fake_pyslurm(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    module = ModuleType("pyslurm")
    exec(compile(FAKE_PYSLURM, "pyslurm.py", "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, "pyslurm", module)
    return module


# ---------------------------------------------------------------------------- the submit description

def test_the_submit_description_uses_the_field_names_pyslurm_has() -> None:
    assert submit_fields(batch_job()) == {
        "name": "train", "working_directory": "/scratch/job", "standard_output": "/scratch/job/slurm-%j.out",
        "cpus_per_task": 2, "memory_per_node": "1024M", "time_limit": 90, "nodes": 1, "ntasks": 1,
        "comment": "task:1", "is_requeueable": True, "environment": {"PATH": "/usr/local/bin:/usr/bin:/bin"},
        "account": "demo", "partitions": "gpu", "signal": "B:SIGUSR2@300", "gres_per_node": "gpu:2"}


def test_several_tasks_per_node_are_asked_for_per_node() -> None:
    fields = submit_fields(batch_job(nodes=2, tasks_per_node=4, gpus=0, partition=None, signal=None))
    assert (fields["nodes"], fields["ntasks"], fields["ntasks_per_node"]) == (2, 8, 4)
    assert not {"partitions", "signal", "gres_per_node"} & set(fields)


@pytest.mark.parametrize(("sbatch", "pyslurm"), [("B:USR2@300", "B:SIGUSR2@300"), ("USR1", "SIGUSR1"),
                                                 ("SIGTERM@60", "SIGTERM@60"), ("R:10@5", "R:10@5")])
def test_a_warning_signal_is_written_as_pyslurm_takes_it(sbatch: str, pyslurm: str) -> None:
    assert warning_signal(sbatch) == pyslurm


def test_directives_pyslurm_would_drop_are_refused() -> None:
    with pytest.raises(SlurmError, match=r"does not read #SBATCH lines, so --begin=now\+1hour"):
        submit_fields(batch_job(extra_directives=["--begin=now+1hour"]))
    with pytest.raises(SlurmError, match="--gres=gpu:N only, not --gpus-per-node=2"):
        submit_fields(batch_job(gpu_directives=("--gpus-per-node=2",)))


def test_pyslurm_22_5_gets_the_warning_signal_applied_and_24_11_is_left_alone(fake_pyslurm: ModuleType) -> None:
    assert description_class(fake_pyslurm) is fake_pyslurm.JobSubmitDescription
    fake_pyslurm.__version__ = "22.5.3"
    description = description_class(fake_pyslurm)(script="/dev/null")
    description._create_job_submit_desc()
    assert description.built == ["description", "signal"]


# ---------------------------------------------------------------------------- the channel, on a fake pyslurm

def test_submit_sends_the_script_text_and_the_fields(fake_pyslurm: ModuleType) -> None:
    own_user = pwd.getpwuid(os.geteuid()).pw_name
    control = PyslurmControl(user=own_user)
    script = "#!/bin/bash\n" + "echo long line\n" * 400  # over 4096 bytes: pyslurm must get a path
    assert control.submit(batch_job(), script) == 42
    sent = fake_pyslurm.SUBMITTED[-1]
    assert sent["script"] == script and sent["partitions"] == "gpu" and "user_id" not in sent


def test_root_submits_on_behalf_of_the_connection_user_and_a_user_for_itself() -> None:
    nobody = pwd.getpwnam("nobody")
    assert on_behalf_of("nobody") == {"user_id": nobody.pw_uid, "group_id": nobody.pw_gid}
    assert on_behalf_of(pwd.getpwuid(os.geteuid()).pw_name) == {} and on_behalf_of(None) == {}


def test_submit_names_refusals_and_marks_a_busy_controller_transient(fake_pyslurm: ModuleType) -> None:
    control = PyslurmControl()
    with pytest.raises(SlurmError, match="pyslurm submit: Invalid account") as refused:
        control.submit(batch_job(name="refused"), "#!/bin/bash\n")
    assert not isinstance(refused.value, SlurmUnavailable)
    with pytest.raises(SlurmUnavailable, match="Socket timed out"):
        control.submit(batch_job(name="busy"), "#!/bin/bash\n")


def test_submitting_for_an_unknown_user_fails_naming_it(fake_pyslurm: ModuleType) -> None:
    with pytest.raises(SlurmError, match="no user 'no-such-user-here' on this machine"):
        PyslurmControl(user="no-such-user-here").submit(batch_job(), "#!/bin/bash\n")


def test_describe_names_the_slurm_release_pyslurm_and_the_cluster(fake_pyslurm: ModuleType) -> None:
    assert PyslurmControl().describe() == "Slurm 24.11.5 via pyslurm 24.11.0, cluster fake"


def test_without_pyslurm_the_channel_says_how_to_build_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyslurm", None)
    with pytest.raises(SlurmError) as missing:
        load_pyslurm()
    assert BUILD_HINT in str(missing.value) and "SLURM_INCLUDE_DIR" in BUILD_HINT


# ---------------------------------------------------------------------------- reading answers

@pytest.mark.parametrize(("code", "signal", "expected"), [(0, 0, 0), (3, 0, 3), (0, 9, 137), (None, None, None)])
def test_a_signal_reads_as_128_plus_n(code: int | None, signal: int | None, expected: int | None) -> None:
    assert exit_status(code, signal) == expected


def controller_job(**fields: Any) -> SimpleNamespace:
    values = {"id": 7, "state": "RUNNING", "exit_code": 0, "exit_code_signal": 0, "state_reason": "None",
              "start_time": 1_800_000_000, "requeue_count": 1, "comment": "task:1", "working_directory": "/w"}
    return SimpleNamespace(**{**values, **fields})


def test_a_running_job_has_no_exit_code_yet_and_an_ended_one_has() -> None:
    running = job_status(controller_job())
    assert (running.exit_code, running.reason, running.restarts) == (None, "", 1)
    assert running.start_time is not None and running.start_time.startswith("2027-01-15T")
    assert job_status(controller_job(state="FAILED", exit_code_signal=9)).exit_code == 137
    assert job_status(controller_job(state="PENDING", start_time=0)).start_time is None


def test_tres_counts_by_id_and_unmeasured_values_read_0() -> None:
    tres = "1=1,2=128,3=18446744073709551614,4=1,5=1,1001=2"
    assert (tres_count(tres, 1001), tres_count(tres, 3), tres_count(tres, 1002), tres_count("", 1001)) == (2, 0, 0, 0)


def test_cpu_time_adds_up_every_step_as_sacct_does() -> None:
    steps = {4294967291: {"tot_cpu_sec": 1, "tot_cpu_usec": 579889}, 0: {"tot_cpu_sec": 2, "tot_cpu_usec": 0}}
    assert cpu_seconds({"steps": steps}) == 3.58
    assert cpu_seconds({"steps": {}}) is None


def test_peak_memory_is_read_from_either_release() -> None:
    assert peak_rss(SimpleNamespace(max_resident_memory=60588032)) == 60588032  # 22.5
    assert peak_rss(SimpleNamespace(resident_memory=66396160)) == 66396160  # 24.11


def test_an_accounting_record_takes_gpus_user_and_cpu_time_from_the_older_view() -> None:
    stats = SimpleNamespace(total_cpu_time=0, max_resident_memory=1024, consumed_energy=0)
    job = SimpleNamespace(id=9, state="COMPLETED", exit_code=0, exit_code_signal=0, state_reason="None",
                          elapsed_time=None, stats=stats, user_name="root")
    legacy = {"user": "hpcuser", "tres_alloc_str": "1=1,1001=2", "steps": {0: {"tot_cpu_sec": 0, "tot_cpu_usec": 5}}}
    record = accounting_record(job, legacy, 1001)
    assert (record.elapsed_s, record.cpu_time_s, record.gpus, record.gpu_hours) == (0, 0.0, 2, 0.0)
    assert (record.max_rss_bytes, record.energy_j, record.user, record.reason) == (1024, None, "hpcuser", "")


# ---------------------------------------------------------------------------- the channel in another Python

def test_a_job_survives_its_trip_through_json() -> None:
    job = batch_job(container=ContainerRun("apptainer", "img.sif", "--nv"), gpu_directives=("--gres=gpu:2",))
    assert job_from_json(job_as_json(job)) == job


def test_the_call_runs_pyslurm_control_in_the_other_python(tmp_path: Path) -> None:
    (tmp_path / "pyslurm.py").write_text(FAKE_PYSLURM)
    command = [sys.executable, "-m", "operators.slurm.pyslurm_call"]
    channel = PyslurmCommand(command, env={**os.environ, "PYTHONPATH": f"{tmp_path}:{REPO}"})
    assert channel.describe() == "Slurm 24.11.5 via pyslurm 24.11.0, cluster fake"
    assert channel.submit(batch_job(), "#!/bin/bash\n") == 42
    assert channel.accounting([]) == {}
    with pytest.raises(SlurmUnavailable, match="Socket timed out"):
        channel.submit(batch_job(name="busy"), "#!/bin/bash\n")


def test_a_call_that_dies_fails_with_what_it_said() -> None:
    channel = PyslurmCommand([sys.executable, "-c", "import sys; sys.exit('no pyslurm here')"])
    with pytest.raises(SlurmError, match=r"pyslurm jobs via .*exit 1, no answer: no pyslurm here"):
        channel.jobs()


def test_the_module_imports_without_pyslurm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyslurm", None)
    assert pyslurm_control.JOB_ENVIRONMENT["PATH"].startswith("/usr/local/bin")
