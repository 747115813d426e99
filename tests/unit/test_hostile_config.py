"""Every config input is hostile (issue 16), property-based: hypothesis writes specs, contracts, site files and
run parameters with aliases, deep nesting, odd Unicode, control characters, special floats and option-like or
shell-like strings. Each load returns within 2 s with either a ``ConfigError`` whose every problem names file,
line and field, or a valid object whose rendered batch scripts, run by bash with stub programs, leave no marker
file behind. Never any other exception, never a hang, never a crash."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from operators.contracts.contract import ContractError, load_contract
from operators.pipeline.steps import PLACEHOLDERS, STEPS, job_options, step_commands, step_env
from operators.run_parameters import RunParameterError, pipeline_run
from operators.sites.catalogue import SITES_DIR, SiteError, load_site
from operators.slurm.script import UnsafeScriptError, batch_job, render, write_env_file
from operators.spec import SpecError, load_spec
from operators.typed_yaml import ConfigError

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
BASE_SPEC = FIXTURES / "specs" / "base"
BASE_CONTRACT = (FIXTURES / "contracts" / "base.yaml").read_text()
BASE_SITE = (SITES_DIR / "lumi.yaml").read_text()
WORK = Path(tempfile.mkdtemp(prefix="hostile-config-"))
MARKER = WORK / "PWNED"
STUBS = WORK / "bin"
LOAD_SECONDS = 2.0

SHELLISH = [f"$(touch {MARKER})", f"`touch {MARKER}`", f"x; touch {MARKER}", f"x && touch {MARKER}",
            f"x\ntouch {MARKER}", f"x\rtouch {MARKER}", f"x' ; touch {MARKER} ; '", f'x" ; touch {MARKER} ; "',
            f"--upload-pack=touch {MARKER}", f"-oProxyCommand=touch {MARKER}", "--bind=/:/host", "-x",
            f"x\n#SBATCH --wrap=touch {MARKER}", "${AIRFLOW__CORE__FERNET_KEY}", "$HOME", "${HOME}",
            "../../../etc/shadow", "/proc/self/environ", "ext::sh -c touch% /tmp/x", "a\u0000b", "a\u202eb",
            "\u0663\u0660:\u0660\u0660", "\u00a0", "\ufeffx", "\ud800", "x" * 600]
RAW = [".nan", ".NaN", ".inf", "-.inf", "1.0e+400", "99999999999999999999999", "-1", "0", "0x7fffffffffffffff",
       "2026-01-01", "2026-01-01 10:00:00", "!!binary aGVsbG8=", "!!python/object/apply:os.system [id]",
       "!!set {a: null}", "!foo bar", "*nowhere", "&a [*a]", "null", "~", "yes", "[]", "{}", "[[[[x]]]]",
       "{a: [1, {b: 2}]}", "<<: {a: 1}", "'", "\"\\0\"", "\"\\x85\"", "|\n  block", ">-\n  folded"]


def write_stubs() -> None:
    STUBS.mkdir(parents=True, exist_ok=True)
    for name in ("python", "srun", "apptainer", "singularity", "torchrun", "sbatch", "git", "ssh"):
        stub = STUBS / name
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
    (STUBS / "scontrol").write_text('#!/bin/sh\n[ "$2" = hostnames ] && echo node1 || echo "NodeAddr=127.0.0.1"\n')
    (STUBS / "scontrol").chmod(0o755)


write_stubs()


def scalar_fragments() -> st.SearchStrategy[str]:
    """A YAML value as text: quoted hostile strings, raw YAML oddities, random text with any character."""
    quoted = st.sampled_from(SHELLISH).map(json.dumps)
    random_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30).map(json.dumps)
    numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr),
                        st.integers(min_value=-(2**70), max_value=2**70).map(str))
    return st.one_of(quoted, st.sampled_from(RAW), random_text, numbers)


def deep(depth: int, flow: bool) -> str:
    """``depth`` nested lists: ``[[[x]]]``, or block style on one line, ``- - - x`` (a list in a list...)."""
    if flow:
        return "[" * depth + "x" + "]" * depth
    return "\n  " + "- " * depth + "x"


def bomb(levels: int, fan: int) -> str:
    lines = [f"l0: &l0 [{', '.join(['x'] * fan)}]"]
    lines += [f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * fan)}]" for level in range(1, levels)]
    return "\n".join(lines)


def mutate(base: str) -> st.SearchStrategy[str]:
    """The base file with one to three values replaced by hostile fragments, or whole hostile documents."""
    lines = base.splitlines()
    values = [index for index, line in enumerate(lines) if ": " in line and not line.lstrip().startswith("#")]

    @st.composite
    def edited(draw: Callable[..., Any]) -> str:
        text = list(lines)
        for _ in range(draw(st.integers(1, 3))):
            index = draw(st.sampled_from(values))
            key = text[index].split(": ", 1)[0]
            text[index] = f"{key}: {draw(scalar_fragments())}"
        return "\n".join(text) + "\n"

    documents = st.one_of(
        st.builds(lambda depth, flow: f"apiVersion: aifactory/v1\nx: {deep(depth, flow)}\n",
                  st.sampled_from([31, 33, 200, 10_000, 100_000]), st.booleans()),
        st.builds(lambda levels, fan: bomb(levels, fan) + "\n", st.integers(2, 9), st.integers(2, 12)),
        st.binary(max_size=200).map(lambda data: data.decode("latin-1")),
        st.sampled_from(["", "---\n---\n", "a: 1\na: 2\n", "- a\n- b\n", "x", "{", "[", "\t- tab\n"]),
    )
    @st.composite
    def free_text(draw: Callable[..., Any]) -> str:
        """Values that free-text fields accept (descriptions, params): they must stay inert all the way."""
        text = base
        for key in ("description: ", "  params: ", "  revision: "):
            if key in text and draw(st.booleans()):
                line = next(line for line in text.splitlines() if line.startswith(key))
                value = draw(st.sampled_from(SHELLISH)) if key != "  params: " else \
                    {"C": draw(st.sampled_from(SHELLISH)), "seed": draw(st.sampled_from(SHELLISH))}
                text = text.replace(line, f"{key}{json.dumps(value)}")
        return text

    return st.one_of(edited(), edited(), free_text(), documents)


def assert_problems_located(error: ConfigError, path: Path) -> None:
    assert error.problems
    for problem in error.problems:
        assert problem.file == str(path) and isinstance(problem.line, int) and problem.line >= 1, problem
        assert problem.field and "\n" not in problem.field, problem


def timed(load: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    try:
        return load(), time.monotonic() - started
    except ConfigError as error:
        return error, time.monotonic() - started


def assert_inert(spec: Any) -> None:
    """Each step's batch script, run by bash with stub programs (every line, failures ignored), writes nothing
    but its own output: no marker appears, whatever the spec said."""
    for step in STEPS:
        work = Path(tempfile.mkdtemp(dir=WORK))
        try:
            job = batch_job(name=f"{spec.dag_id}.{step}"[:64], workdir=str(work), comment="hostile", settings={
                "job_runtime": str(STUBS.parent / "envs" / "job-runtime")},
                commands=step_commands(spec, step, PLACEHOLDERS), **job_options(spec, step, spec.site_facts))
            script = render(job)
            write_env_file(work / "job.env", step_env(spec, step, PLACEHOLDERS))
        except UnsafeScriptError:
            continue  # refused at render time: nothing would be submitted
        assert all(line.startswith("#SBATCH --") for line in script.splitlines()[1:] if line.startswith("#"))
        (work / "job.sh").write_text(script.replace("set -euo pipefail", "set +e", 1))
        subprocess.run(["bash", str(work / "job.sh")], cwd=work, capture_output=True, timeout=30,
                       env={"PATH": f"{STUBS}:/usr/bin:/bin", "SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "node1",
                            "HOME": str(work)})
        assert not MARKER.exists(), f"{step}: the script ran a command from the spec:\n{script}"
        shutil.rmtree(work)


FAST = settings(max_examples=int(os.environ.get("FACTORY_HOSTILE_EXAMPLES", "250")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


@pytest.fixture(autouse=True)
def state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACTORY_STATE", "/var/lib/aifactory")
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", "fernet-secret-that-must-never-appear")


@FAST
@given(mutate((BASE_SPEC / "pipeline.yaml").read_text()))
def test_hostile_specs_load_fast_and_fail_cleanly_or_render_inert_scripts(text: str) -> None:
    folder = Path(tempfile.mkdtemp(dir=WORK)) / "base"
    shutil.copytree(BASE_SPEC, folder)
    path = folder / "pipeline.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    result, seconds = timed(lambda: load_spec(path))
    assert seconds < LOAD_SECONDS, f"{seconds:.2f} s to load"
    if isinstance(result, ConfigError):
        assert isinstance(result, SpecError)
        assert_problems_located(result, path)
        assert "fernet-secret-that-must-never-appear" not in str(result)
        event("refused")
    else:
        assert_inert(result)
        event("accepted: scripts rendered and run")


@FAST
@given(mutate(BASE_CONTRACT))
def test_hostile_contracts_load_fast_and_fail_cleanly(text: str) -> None:
    path = Path(tempfile.mkdtemp(dir=WORK)) / "base.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    result, seconds = timed(lambda: load_contract(path))
    assert seconds < LOAD_SECONDS, f"{seconds:.2f} s to load"
    if isinstance(result, ConfigError):
        assert isinstance(result, ContractError)
        assert_problems_located(result, path)
    else:
        assert result.dataset == "base"


@FAST
@given(mutate(BASE_SITE))
def test_hostile_site_files_load_fast_and_fail_cleanly_or_render_inert_scripts(text: str) -> None:
    sites = Path(tempfile.mkdtemp(dir=WORK))
    path = sites / "lumi.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    result, seconds = timed(lambda: load_site(path))
    assert seconds < LOAD_SECONDS, f"{seconds:.2f} s to load"
    if isinstance(result, ConfigError):
        assert isinstance(result, SiteError)
        assert_problems_located(result, path)
        return
    spec, seconds = timed(lambda: load_spec(BASE_SPEC / "pipeline.yaml", sites_dir=sites, site="lumi"))
    assert seconds < LOAD_SECONDS
    if not isinstance(spec, ConfigError):
        assert_inert(spec)


def json_values(depth: int = 3) -> st.SearchStrategy[Any]:
    leaves = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(),
                       st.sampled_from(SHELLISH), st.text(max_size=20))
    return st.recursive(leaves, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                        max_leaves=20)


@FAST
@given(st.fixed_dictionaries({}, optional={
    "revision": st.one_of(st.sampled_from(SHELLISH), st.text(max_size=30), json_values()),
    "train_params": st.one_of(json_values(), st.dictionaries(st.sampled_from(["C", "seed", "lr", "-x", "C\n"]),
                                                             json_values(), max_size=3)),
    "validate_on": st.one_of(st.sampled_from(["auto", "worker", "cluster", "Cluster", "cluster\n"]), json_values()),
    "surprise": json_values()}))
def test_hostile_run_parameters_are_refused_naming_the_parameter_or_are_safe(conf: dict[str, Any]) -> None:
    spec = load_spec(BASE_SPEC / "pipeline.yaml")
    params = {"revision": spec.dataset.revision, "train_params": {}, "validate_on": "auto", **conf}
    started = time.monotonic()
    try:
        run = pipeline_run(spec, params, conf)
    except RunParameterError as error:
        assert all(problem.field and problem.field.startswith("params.") for problem in error.problems)
        return
    finally:
        assert time.monotonic() - started < LOAD_SECONDS
    assert not run.revision.startswith("-") and "\n" not in run.revision
    assert set(run.train_params) <= set(spec.training.params)
    json.dumps(run.train_params, allow_nan=False)
    assert run.validate_on in ("auto", "worker", "cluster")


@pytest.mark.parametrize("depth", [33, 10_000, 100_000])
@pytest.mark.parametrize("flow", [True, False])
def test_deep_nesting_is_refused_at_its_line_without_recursion(tmp_path: Path, depth: int, flow: bool) -> None:
    path = tmp_path / "base" / "pipeline.yaml"
    path.parent.mkdir()
    path.write_text(f"apiVersion: aifactory/v1\nkind: Pipeline\nname: {deep(depth, flow)}\n")
    started = time.monotonic()
    with pytest.raises(SpecError) as raised:
        load_spec(path)
    assert time.monotonic() - started < 1.0
    assert "nested more than 32 levels deep" in str(raised.value) and raised.value.problems[0].line >= 3


def test_an_alias_bomb_is_refused_in_well_under_a_second(tmp_path: Path) -> None:
    path = tmp_path / "base" / "pipeline.yaml"
    path.parent.mkdir()
    path.write_text("apiVersion: aifactory/v1\nkind: Pipeline\n" + bomb(9, 10) + "\n")  # 10^9 values expanded
    started = time.monotonic()
    with pytest.raises(SpecError, match="expands to more than 200000 values"):
        load_spec(path)
    assert time.monotonic() - started < 0.5


def test_links_fifos_and_huge_files_are_not_read_as_config(tmp_path: Path) -> None:
    folder = tmp_path / "base"
    shutil.copytree(BASE_SPEC, folder)
    spec = folder / "pipeline.yaml"
    spec.unlink()
    spec.symlink_to("/etc/passwd")
    with pytest.raises(SpecError, match="is a symbolic link"):
        load_spec(spec)
    spec.unlink()
    os.mkfifo(spec)  # a reader that opened it blocking would wait forever
    with pytest.raises(SpecError, match="is not a regular file"):
        load_spec(spec)
    spec.unlink()
    spec.write_text("description: " + "x" * (1 << 20) + "\n")
    with pytest.raises(SpecError, match="larger than 1024 KiB"):
        load_spec(spec)


def test_a_contract_pattern_that_backtracks_in_python_runs_in_linear_time(tmp_path: Path) -> None:
    """``(a+)+b`` against 30 values of 20,000 ``a``: Python's re would not finish this century; RE2 is linear."""
    from operators.contracts.engine import validate_file

    path = tmp_path / "codes.yaml"
    path.write_text("apiVersion: aifactory/v1\nkind: DataContract\ndataset: codes\ndescription: Codes.\n"
                    "owner: steward@aifactory.local\ncolumns:\n  code:\n    type: str\n    rules:\n"
                    "      - pattern: \"(a+)+b\"\n        description: Codes end in b.\n")
    data = tmp_path / "codes.csv"
    data.write_text("code\n" + ("a" * 20_000 + "\n") * 30)
    started = time.monotonic()
    summary = validate_file(data, load_contract(path), "codes at v1", {})
    assert time.monotonic() - started < 30
    (rule,) = [rule for rule in summary["rules"] if rule["check"] == "pattern"]
    assert rule["success"] is False


def test_a_script_name_too_long_for_the_file_system_is_a_problem_not_an_oserror(tmp_path):
    """Found by the property suite: a 1,000-character script name made ``is_file`` raise ENAMETOOLONG."""
    folder = tmp_path / "base"
    shutil.copytree(BASE_SPEC, folder)
    text = (folder / "pipeline.yaml").read_text()
    (folder / "pipeline.yaml").write_text(text.replace("script: train.py", f"script: {'x' * 1000}.py", 1))
    with pytest.raises(SpecError, match=r"training\.script: 'x{80}'\.\.\. is not a usable file name"):
        load_spec(folder / "pipeline.yaml")
