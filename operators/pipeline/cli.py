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

from operators.pipeline.jobs import STEPS
from operators.sites.catalogue import SITES_DIR, SiteError, load_catalogue, load_site
from operators.spec import (
    CONTRACTS_DIR,
    PIPELINES_DIR,
    PipelineSpec,
    SpecError,
    discover,
    ignored_files,
    load_all,
    load_spec,
)
from operators.typed_yaml import Problem


class UsageError(Exception):
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


def load(pipeline: str, pipelines_dir: Path, sites_dir: Path, site: str | None) -> PipelineSpec:
    if site is not None:
        try:
            load_site(site, sites_dir)
        except SiteError as error:
            raise UsageError(str(error)) from None
    return load_spec(_spec_file(pipeline, pipelines_dir), sites_dir, site=site)


def render_step(spec: PipelineSpec, step: str) -> str:
    from operators.pipeline.jobs import preview
    from operators.slurm.script import render

    return render(preview(spec, step, spec.site_facts))


def plan(spec: PipelineSpec) -> list[dict[str, str]]:
    """The DAG's tasks in order, each with what it will do, in words a reviewer checks against the spec."""
    from operators.pipeline.jobs import job_options, step_spec

    dataset, evaluation, registry, serving = spec.dataset, spec.evaluation, spec.registry, spec.serving
    contract = spec.data_contract
    site = spec.site_facts

    def slurm(step: str) -> str:
        job = step_spec(spec, step)
        options = job_options(spec, step, site)
        resources = job.resources
        where = f"a container ({job.container.image}, {options['container'].runtime})" if job.container else \
            f"environment {job.environment or 'job-runtime'}"
        launcher = job.launcher
        request = (f"{resources.nodes} node(s) x {resources.tasks_per_node} task(s), {resources.cpus_per_task} CPU(s) "
                   f"per task, {resources.gpus_per_node} GPU(s) per node, {resources.memory} per node, "
                   f"time limit {resources.time}, partition {options['partition'] or 'the cluster default'}")
        program = "the contract validation (python -m operators.contracts.job)" if step == "validate" else job.script
        return (f"Slurm job on {site.title} through connection {spec.connection}: {program} with launcher "
                f"{launcher} in {where}; {request}. Stages the pinned data from S3 into the job folder.")

    thresholds = ", ".join(f"{name} >= {bound}" for name, bound in evaluation.thresholds.items()) or "none"
    champion = (f"the challenger must beat {registry.aliases.champion} by at least {evaluation.min_improvement} on "
                f"{evaluation.primary_metric}, both scored on the same test split in the same job"
                if evaluation.compare_with_champion else "no champion comparison")
    smoke = serving.smoke
    tracking = "offline: each job logs to SQLite in its own folder, which a replay task copies into the run" \
        if spec.offline_tracking else "online: the jobs log straight into the MLflow server"
    replays = [
        {"task": "replay_train", "does": "copy the training job's offline MLflow store into the run (params, "
                                         "metrics with steps, tags, artifacts, model; idempotent), then stage the "
                                         "challenger and champion in S3 for the evaluation job"},
        {"task": "replay_evaluate", "does": "copy the evaluation job's offline MLflow store into the run"},
    ] if spec.offline_tracking else []
    return [
        {"task": "pin_dataset", "does": f"resolve revision {dataset.revision} of {dataset.path} and "
                                        f"{dataset.test_path} in {dataset.repository} to a commit and md5"},
        {"task": "validate_data", "does": f"validate the pinned data against data_contracts/{spec.contract}.yaml "
                                          f"({len(contract.columns)} columns) on the Airflow worker, or, above "
                                          f"{contract.validation.cluster_above}, leave it to the Slurm job; publish "
                                          "Data Docs and summary.json to S3"},
        {"task": "validate_data_on_cluster", "does": slurm("validate") + " Same validation, in chunks."},
        {"task": "apply_contract", "does": "a broken error rule (or unreadable data) fails the run before "
                                           "anything trains; broken warn rules ask a data steward"},
        {"task": "steward_review", "does": f"only when warn rules broke: a data steward approves or rejects "
                                           f"(Airflow human-in-the-loop); after {contract.review.timeout} the "
                                           f"answer is {contract.review.on_timeout}"},
        {"task": "start_run", "does": "create the MLflow run the jobs log into (params, dataset inputs, code "
                                      f"version); tracking {tracking}"},
        {"task": "train", "does": slurm("train")},
        *replays[:1],
        {"task": "evaluate", "does": slurm("evaluate") + f" Scores {', '.join(evaluation.metrics)}."},
        *replays[1:],
        {"task": "gate", "does": f"thresholds {thresholds}; {champion}"},
        {"task": "register", "does": f"register {registry.model_name} with alias {registry.aliases.challenger}"
                                     + (f"; tags {json.dumps(registry.tags)}" if registry.tags else "")},
        {"task": "push_to_inference", "does": f"{serving.target} target via connection {serving.connection}: load "
                                              f"{serving.model_name} next to the serving version, wait until ready, "
                                              f"smoke-test with "
                                              f"{'the spec inputs' if smoke.inputs else 'the model input example'}"
                                              + (f", outputs in {smoke.allowed_outputs}" if smoke.allowed_outputs
                                                 else "")
                                              + (f", outputs within {smoke.output_range}" if smoke.output_range
                                                 else "")
                                              + f"; p99 latency over {serving.latency.requests} requests <= "
                                                f"{serving.latency.p99_ms} ms; then make it the default and move "
                                                f"alias {registry.aliases.champion}. A failed step unloads it and "
                                                "tags why; skipped if not promoted"},
        {"task": "retire_previous_version", "does": f"after a grace period of {serving.grace_period_s} s, unload "
                                                    "the version the rollout replaced (kept if rolled back to)"},
    ]


def schedule_words(spec: PipelineSpec) -> str:
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
