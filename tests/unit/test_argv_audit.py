"""The argv audit (issue 16): every place the package starts a program is listed here with how it is safe, and
each one that carries a value from a spec, contract, site file, connection or run parameter is run with
option-like values. A new call site fails ``test_every_call_site_is_audited`` until it is added (and made safe).
SECURITY.md has the same list for readers."""

from __future__ import annotations

import ast
import asyncio
import subprocess
from pathlib import Path

import pytest

from operators.arguments import UnsafeArgument, operand
from operators.datasets import watch
from operators.datasets.git import git
from operators.datasets.pin import DatasetError, earlier_versions, pin_dataset
from operators.slurm.cli import LocalRunner, SshRunner
from operators.slurm.files import SshFiles
from operators.slurm.model import SlurmError
from operators.slurm.script import ContainerRun, UnsafeScriptError
from operators.slurm.transports import make_transport
from operators.spec import Dataset, SpecError, repository_location

PACKAGE = Path(__file__).resolve().parents[2] / "operators"

# module, function: how the values it passes are safe
AUDITED_CALLS = {
    ("datasets/git.py", "git"): "git ls-remote / clone / fetch / tag / log / ls-tree: repository and revision are "
                                "operand()s after --; commits are 40-hex; GIT_ALLOW_PROTOCOL=file:git:http:https:ssh",
    ("pipeline/tasks.py", "code_version"): "git -C <pipeline folder> rev-parse/status: a path as -C's value, no "
                                           "user text",
    ("slurm/cli.py", "LocalRunner.run"): "sbatch/squeue/sacct/scancel/sinfo, tail/rm/sh -c over SSH: job ids are "
                                         "ints, --user=/--jobs= are option=value, paths follow --, the script goes "
                                         "on stdin; runuser -u <account name> --",
    ("slurm/cli.py", "LocalRunner.arun"): "the same commands from the triggerer (asyncio)",
    ("slurm/pyslurm_call.py", "PyslurmCommand._call"): "<python> -m operators.slurm.pyslurm_call: a fixed argv the "
                                                       "caller builds (the stack's chroot command), never from a "
                                                       "connection; job and script go as JSON on stdin; no shell",
    ("slurm/cli.py", "SshRunner.ensure_master"): "ssh <options> user@host: user and host are validated account and "
                                                 "host names (never -o...), the command is one shlex-quoted word "
                                                 "after --",
}
SPAWNERS = {"subprocess": {"run", "Popen", "check_output", "check_call", "call", "getoutput", "getstatusoutput"},
            "asyncio": {"create_subprocess_exec", "create_subprocess_shell"},
            "os": {"system", "popen", "execv", "execve", "execvp", "execvpe", "execl", "execlp", "spawnv", "spawnvp",
                   "posix_spawn", "posix_spawnp"}}


def call_sites() -> set[tuple[str, str]]:
    """(module, function) of every process spawn in the package, found in the source (AST), not by grep."""
    sites = set()
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for owner in ast.walk(tree):
            if not isinstance(owner, ast.ClassDef | ast.Module):
                continue
            for function in (node for node in owner.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)):
                for node in ast.walk(function):
                    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                            isinstance(node.func.value, ast.Name) and \
                            node.func.attr in SPAWNERS.get(node.func.value.id, ()):
                        name = function.name if isinstance(owner, ast.Module) else f"{owner.name}.{function.name}"
                        sites.add((path.relative_to(PACKAGE).as_posix(), name))
    return sites


def test_every_call_site_is_audited() -> None:
    assert call_sites() == set(AUDITED_CALLS), "a new process spawn: audit it, make it safe, list it here and in " \
                                               "SECURITY.md"


OPTION_LIKE = ["--upload-pack=touch {marker}", "-oProxyCommand=touch {marker}", "--bind=/:/host", "-x", "--help",
               "-", "--", "-u root"]


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "PWNED"


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    """A real git registry with one tag: the calls below run real git against it."""
    bare, work = tmp_path / "registry.git", tmp_path / "work"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    subprocess.run(["git", "clone", "-q", str(bare), str(work)], check=True, capture_output=True)
    for command in (["git", "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "--allow-empty", "-m", "x"],
                    ["git", "tag", "v1"], ["git", "push", "-q", "origin", "HEAD:main", "--tags"]):
        subprocess.run(command, cwd=work, check=True, capture_output=True)
    return bare


@pytest.mark.parametrize("value", OPTION_LIKE)
def test_git_never_reads_a_repository_or_revision_as_an_option(value: str, marker: Path, registry: Path) -> None:
    hostile = value.format(marker=marker)
    dataset = Dataset(name="d", repository=hostile, path="d/train.csv", revision="v1", test_path="d/test.csv")
    with pytest.raises(SpecError):
        pin_dataset(dataset)
    with pytest.raises(SpecError):
        watch.list_tags(hostile)
    with pytest.raises(UnsafeArgument):
        earlier_versions(hostile, "0" * 40, "v1", "here")
    good_repository = f"file://{registry}"
    with pytest.raises((UnsafeArgument, DatasetError)):
        pin_dataset(Dataset(name="d", repository=good_repository, path="d/train.csv", revision=hostile,
                            test_path="d/test.csv"))
    assert not marker.exists()


def test_git_gets_the_double_dash_and_works_with_plain_values(registry: Path) -> None:
    location = repository_location(f"file://{registry}")
    assert "refs/tags/v1" in git(["ls-remote", "--", operand(location, "r"), "v1"], "registry", RuntimeError)
    assert list(watch.list_tags(f"file://{registry}")) == ["v1"]


@pytest.mark.parametrize("written", ["ext::sh -c touch", "fd::17", "file://x/../../etc", "-u", "https://a b/c",
                                     "${HOME}/x", "$HOME", "file://${FACTORY_STATE}/../etc"])
def test_only_plain_git_locations_are_accepted(written: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACTORY_STATE", "/var/lib/aifactory")
    with pytest.raises(SpecError):
        repository_location(written)


@pytest.mark.parametrize("value", OPTION_LIKE)
def test_ssh_and_runuser_never_read_an_account_or_host_as_an_option(value: str, marker: Path, tmp_path: Path) -> None:
    hostile = value.format(marker=marker)
    with pytest.raises(SlurmError):
        SshRunner(host=hostile, user="hpcuser", control_dir=str(tmp_path))
    with pytest.raises(SlurmError):
        SshRunner(host="login.example.org", user=hostile, control_dir=str(tmp_path))
    with pytest.raises(SlurmError):
        LocalRunner(user=hostile)
    with pytest.raises(SlurmError):
        make_transport("local", user=hostile)
    with pytest.raises(SlurmError):
        make_transport("ssh", host="login.example.org", user=hostile, control_dir=str(tmp_path))
    assert not marker.exists()


def test_ssh_puts_the_remote_command_after_a_double_dash(tmp_path: Path) -> None:
    runner = SshRunner(host="login.example.org", user="hpcuser", control_dir=str(tmp_path))
    argv = runner.argv(["scancel", "12"])
    assert argv[argv.index("hpcuser@login.example.org") + 1] == "--"
    assert argv[-1] == "timeout -k 2 60 scancel 12"  # one word for the remote shell, each part quoted
    assert LocalRunner(user="hpcuser").argv(["squeue"])[-2:] in (["--", "squeue"], ["squeue"][-2:])


def test_remote_file_commands_take_paths_after_a_double_dash() -> None:
    script = SshFiles._read_logs_command({1: ("-rf", 0)})
    assert '-- "$2"' in script[2] and script[-2:] == ["-rf", "0"]


@pytest.mark.parametrize("image", ["--bind=/:/host", "-x", "--nv", "a\nb"])
def test_a_container_image_is_never_an_option(image: str) -> None:
    with pytest.raises(UnsafeScriptError):
        ContainerRun(runtime="apptainer", image=image)


def test_apptainer_gets_the_double_dash_before_the_image() -> None:
    prefix = ContainerRun(runtime="apptainer", image="/p/img.sif", gpu_flag="--nv").prefix("/work/job")
    assert prefix == ["apptainer", "exec", "--nv", "--bind", "/work/job", "--", "/p/img.sif"]
    pyxis = ContainerRun(runtime="pyxis-enroot", image="nvcr.io#nvidia/pytorch:24.05").srun_options("/w")
    assert pyxis[0] == "--container-image=nvcr.io#nvidia/pytorch:24.05"  # option=value: never a separate word


def test_the_async_runner_refuses_the_same_values(marker: Path) -> None:
    with pytest.raises(SlurmError):
        asyncio.run(LocalRunner(user=f"-oProxyCommand=touch {marker}").arun(["true"]))
    assert not marker.exists()
