"""Nothing that reaches a batch script can run as a command: property-based, executed with bash."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.slurm.script import BatchJob, UnsafeScriptError, render, write_env_file

# any text bash can carry in an argument (no NUL), biased towards shell syntax
SHELLISH = st.text(alphabet=st.sampled_from([*"$`'\"\\;|&<>(){}[]*?!~#%=:, \t\n", "a", "é", "x"]))
TEXT = st.one_of(SHELLISH, st.text(alphabet=st.characters(blacklist_characters="\0"), max_size=40))


def job(tmp: Path, **overrides) -> BatchJob:
    fields = {"name": "safe", "account": "demo", "partition": "cpu", "cpus": 1, "memory": "1G",
              "time": "00:10:00", "gpus": 0, "workdir": str(tmp), "commands": [["true"]],
              "env_file": str(tmp / "job.env"), "comment": "airflow:d/r/t/-1"}
    return BatchJob(**{**fields, **overrides})


def run_script(script: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    """Run the script's body with bash; output decoded without newline translation (\r stays)."""
    result = subprocess.run(["bash", "-c", script], cwd=tmp, capture_output=True, timeout=10,
                            env={"PATH": "/usr/bin:/bin", "SLURM_JOB_ID": "1", "HOME": str(tmp)})
    return subprocess.CompletedProcess(result.args, result.returncode,
                                       result.stdout.decode(errors="surrogateescape"),
                                       result.stderr.decode(errors="surrogateescape"))


@settings(max_examples=60, deadline=None)
@given(argument=TEXT, value=TEXT)
def test_arguments_and_environment_values_arrive_literally(tmp_path_factory, argument, value):
    tmp = tmp_path_factory.mktemp("job")
    try:
        write_env_file(tmp / "job.env", {"PAYLOAD": value})
    except UnsafeScriptError as error:
        assert any(0xD800 <= ord(c) <= 0xDFFF for c in value)  # lone surrogates cannot be stored
        assert value not in str(error)
        return
    try:
        script = render(job(tmp, commands=[["printf", "%s\\0", argument], ["printenv", "PAYLOAD"]]))
    except UnsafeScriptError:
        assert any(0xD800 <= ord(c) <= 0xDFFF for c in argument)
        return
    result = run_script(script, tmp)
    assert result.returncode == 0, result.stderr
    body = result.stdout.split("\n", 1)[1]  # after the "job 1 on <host>" banner line
    printed_argument, _, rest = body.partition("\0")
    assert printed_argument == argument
    assert rest.rsplit("job 1 finished", 1)[0] == value + "\n"
    assert sorted(p.name for p in tmp.iterdir()) == [], "only the env file existed, and the job removed it"


@settings(max_examples=60, deadline=None)
@given(text=TEXT)
def test_directive_values_either_stay_one_line_or_are_refused(tmp_path_factory, text):
    tmp = tmp_path_factory.mktemp("job")
    try:
        script = render(job(tmp, name=text, comment=text, partition=text or None, env_file=None))
    except UnsafeScriptError:
        assert any(c in text for c in "\n\r\0") or text.encode(errors="replace").decode() != text
        return
    directive_lines = [line for line in script.splitlines() if line.startswith("#SBATCH ")]
    assert len(directive_lines) == script.count("#SBATCH ")  # none split across lines
    result = run_script(script, tmp)
    assert result.returncode == 0, result.stderr  # the directives stayed comments


def test_a_newline_in_a_job_name_is_refused(tmp_path):
    with pytest.raises(UnsafeScriptError, match="line break"):
        render(job(tmp_path, name="x\ntouch pwned"))


def test_environment_names_must_be_identifiers(tmp_path):
    with pytest.raises(UnsafeScriptError, match="not a valid identifier"):
        write_env_file(tmp_path / "job.env", {"A;touch pwned": "1"})


def test_a_requeueable_job_can_read_its_credentials_again_when_it_restarts(tmp_path):
    """Slurm runs the same script again after a requeue; a deleted env file would fail that second start."""
    write_env_file(tmp_path / "job.env", {"TOKEN": "secret"})
    script = render(job(tmp_path, commands=[["printenv", "TOKEN"]], requeue=True))
    for start in ("first", "after the requeue"):
        result = run_script(script, tmp_path)
        assert result.returncode == 0 and "secret" in result.stdout, f"{start}: {result.stderr}"
    assert (tmp_path / "job.env").exists(), "the operator removes it once the job has ended"
