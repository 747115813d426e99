"""``factory lint|render|plan``: check reviewed config, show the batch script and the plan of a pipeline.

Exit codes (every command): 0 success; 1 the config has errors (each names file, line, field and the
allowed values); 2 bad command-line arguments or an unknown pipeline or site. ``--json`` prints one JSON
document on stdout for scripts; errors then go into it rather than to stderr.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from operators.errors import FactoryError
from operators.pipeline.steps import STEPS
from operators.sites.catalogue import SITES_DIR, SiteError, load_catalogue, load_site
from operators.spec import (
    CONTRACTS_DIR,
    PIPELINES_DIR,
    Pipeline,
    SpecError,
    discover,
    ignored_files,
    load_all,
    load_spec,
)
from operators.typed_yaml import Problem


class UsageError(FactoryError):
    """Exit 2: the command line names something that does not exist."""


def lint(pipelines_dir: Path, contracts_dir: Path, sites_dir: Path) -> dict[str, Any]:
    """Every spec, contract and site file; a bad file never hides the errors of the others. Warnings name
    files that look like config but are never read (``*.yml``)."""
    from operators.contracts.contract import ContractError, load_contract

    problems: list[Problem] = []
    warnings = [*ignored_files(pipelines_dir, "*/pipeline.yml", "pipeline.yaml"),
                *ignored_files(contracts_dir, "*.yml", "*.yaml"), *ignored_files(sites_dir, "*.yml", "*.yaml")]
    try:
        sites = load_catalogue(sites_dir)
    except SiteError as error:
        sites = {}
        problems.extend(error.problems)
    contracts = sorted(contracts_dir.glob("*.yaml"))
    read: dict[Path, Any] = {}  # each spec's contract and site are read once, with the others
    for path in contracts:
        try:
            read[path] = load_contract(path)
        except ContractError as error:
            read[path] = error
            problems.extend(error.problems)
    specs = discover(pipelines_dir)
    _, failed = load_all(pipelines_dir, sites_dir, sites=dict(sites), contracts=read)
    for path in specs:
        if path in failed:
            problems.extend(failed[path].problems)
    return {"ok": not problems, "checked": {"pipelines": len(specs), "contracts": len(contracts), "sites": len(sites)},
            "errors": [problem.as_dict() for problem in problems],
            "warnings": [warning.as_dict() for warning in warnings]}


def _spec_file(pipeline: str, pipelines_dir: Path) -> Path:
    path = Path(pipeline)
    if path.is_dir():
        path = path / "pipeline.yaml"
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    candidate = pipelines_dir / pipeline / "pipeline.yaml"
    if re.fullmatch(r"[a-z][a-z0-9_]*", pipeline) and candidate.exists():
        return candidate
    known = ", ".join(spec.parent.name for spec in discover(pipelines_dir)) or "none"
    raise UsageError(f"no pipeline {pipeline!r} in {pipelines_dir} (known: {known})")


def load(pipeline: str, pipelines_dir: Path, sites_dir: Path, site: str | None) -> Pipeline:
    if site is not None:
        try:
            load_site(site, sites_dir)
        except SiteError as error:
            raise UsageError(str(error)) from None
    return load_spec(_spec_file(pipeline, pipelines_dir), sites_dir, site=site)


def render_step(spec: Pipeline, step: str) -> str:
    from operators.pipeline.steps import preview
    from operators.slurm.script import render

    return render(preview(spec, step, spec.site_facts))


def plan(spec: Pipeline) -> list[dict[str, str]]:
    """The DAG's tasks in order, each with what it will do: read from the built DAG (each task's ``doc_md``),
    so the plan is the DAG."""
    from operators.pipeline.build import build_dag

    return [{"task": task.task_id, "does": task.doc_md} for task in build_dag(spec).task_dict.values()]


def schedule_words(spec: Pipeline) -> str:
    if spec.schedule is None:
        return "manual runs only"
    if spec.schedule.dataset_version:
        return f"on each new version of dataset {spec.dataset.name}"
    return f"cron {spec.schedule.cron}"


def main(argv: list[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--pipelines", type=Path, default=PIPELINES_DIR, help=f"spec folder (default {PIPELINES_DIR})")
    common.add_argument("--sites", type=Path, default=SITES_DIR, help=f"site catalogue (default {SITES_DIR})")
    common.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser = argparse.ArgumentParser(prog="factory", description="Check and preview pipelines.",
                                     epilog="exit codes: 0 ok, 1 errors in the config, 2 bad arguments or names")
    commands = parser.add_subparsers(dest="command", required=True)
    lint_cmd = commands.add_parser("lint", parents=[common], help="check pipeline specs, data contracts and sites")
    lint_cmd.add_argument("--contracts", type=Path, default=CONTRACTS_DIR, help=f"default {CONTRACTS_DIR}")
    render_cmd = commands.add_parser("render", parents=[common], help="the sbatch script a pipeline's step submits")
    render_cmd.add_argument("pipeline", help="a pipeline name, folder or pipeline.yaml")
    render_cmd.add_argument("--site", help="render for another site of the catalogue (retarget preview)")
    render_cmd.add_argument("--step", choices=STEPS, default="train")
    plan_cmd = commands.add_parser("plan", parents=[common], help="the pipeline's tasks and what each will do")
    plan_cmd.add_argument("pipeline", help="a pipeline name, folder or pipeline.yaml")
    plan_cmd.add_argument("--site", help="plan for another site of the catalogue")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except UsageError as error:
        _fail(args, [Problem(None, None, None, str(error))], "usage")
        return 2


def _fail(args: argparse.Namespace, problems: list[Problem], kind: str = "config") -> None:
    """The one place errors are formatted: JSON records, or ``file:line: field: message`` lines."""
    if args.json:
        print(json.dumps({"ok": False, "kind": kind, "errors": [problem.as_dict() for problem in problems]},
                         indent=2))
    else:
        for problem in problems:
            print(f"factory {args.command}: {problem}", file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    if not args.pipelines.is_dir():
        raise UsageError(f"--pipelines {args.pipelines}: no such folder")
    if args.command == "lint":
        result = lint(args.pipelines, args.contracts, args.sites)
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            for error in result["errors"]:
                print(Problem(**error), file=sys.stderr)
            for warning in result["warnings"]:
                print(f"warning: {Problem(**warning)}", file=sys.stderr)
            checked = result["checked"]
            print(f"factory lint: {checked['pipelines']} pipeline(s), {checked['contracts']} contract(s), "
                  f"{checked['sites']} site(s): {len(result['errors']) or 'no'} error(s)")
        return 0 if result["ok"] else 1
    try:
        spec = load(args.pipeline, args.pipelines, args.sites, args.site)
    except SpecError as error:
        _fail(args, error.problems)
        return 1
    if args.command == "render":
        script = render_step(spec, args.step)
        if args.json:
            print(json.dumps({"ok": True, "pipeline": spec.name, "site": spec.site, "step": args.step,
                              "connection": spec.connection, "script": script}, indent=2))
        else:
            print(script, end="")
        return 0
    steps = plan(spec)
    if args.json:
        print(json.dumps({"ok": True, "pipeline": spec.name, "dag_id": spec.dag_id, "site": spec.site,
                          "connection": spec.connection, "schedule": schedule_words(spec),
                          "owners": spec.owners, "tasks": steps}, indent=2))
    else:
        print(f"{spec.dag_id}: {spec.description}\nsite {spec.site} ({spec.site_facts.title}) via connection "
              f"{spec.connection}; schedule: {schedule_words(spec)}; owners: {', '.join(spec.owners)}\n")
        for number, step in enumerate(steps, 1):
            print(f"{number}. {step['task']}: {step['does']}")
    return 0
