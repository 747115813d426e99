"""The pipeline spec (``pipelines/<name>/pipeline.yaml``, ``apiVersion: aifactory/v1``): load and check.

Strict: unknown keys, wrong types, unsafe values and requests the site cannot meet are errors that
name the file, the line, the field and what is allowed; nothing is built from a bad spec. The field
reference is pipelines/README.md. Imports no Airflow and no heavy library: DAG parsing stays cheap.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from operators.contracts.contract import CONTRACTS_DIR, Contract, ContractError, load_contract
from operators.sites.catalogue import SITES_DIR, Site, SiteError, load_site
from operators.sites.catalogue import Submission as SiteSubmission
from operators.sites.request import account_value, check_request
from operators.staged_files import staging_problem
from operators.typed_yaml import ConfigError, Problem, TypedReader, Walltime, compose
from operators.units import size_bytes
from operators.user_regex import pattern_problem

API_VERSION = "aifactory/v1"
REPO = Path(__file__).resolve().parents[1]
PIPELINES_DIR = REPO / "pipelines"

Launcher = Literal["plain", "srun", "torchrun"]
ServingTarget = Literal["v2", "openai"]
NotifyOn = Literal["failure", "success", "retry"]
TrackingMode = Literal["auto", "online", "offline"]

# Values that end up in #SBATCH lines, command lines and URLs: nothing a shell or Slurm would read twice.
SAFE = {"pattern": r"[A-Za-z0-9_.:/@+=,][A-Za-z0-9_.:/@+=,-]{0,511}",
        "pattern_help": "letters, digits and _.:/@+=,- only, not starting with -; no spaces, quotes, shell "
                        "metacharacters or newlines"}
NAME = {"pattern": r"[a-z][a-z0-9_]{0,62}", "pattern_help": "lower-case letters, digits and _, starting with a letter"}
MODEL_NAME = {"pattern": r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", "pattern_help": "letters, digits and _.- only"}
RELATIVE = {"pattern": r"[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*",
            "pattern_help": "a relative path inside the pipeline folder or dataset: no leading /, no '..', "
                            "letters, digits and _.- only"}
PARAM_KEY = r"[A-Za-z_][A-Za-z0-9_]{0,99}"
SLURM_NAME = {"pattern": r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}", "pattern_help": "letters, digits, _ and - only"}
ENVIRONMENT = {"pattern": r"[a-z][a-z0-9_-]{0,62}|(/[A-Za-z0-9_.-]+)+",
               "pattern_help": "the name of a Python environment the site's connection provides "
                               "(e.g. job-runtime) or an absolute path on the cluster"}
MEMORY = {"pattern": r"[1-9][0-9]{0,9}[KMGT]?", "pattern_help": "memory per node such as 512M or 4G"}
MAX_MEMORY_BYTES = 64 << 40  # no node anywhere has more
EMAIL = {"pattern": r"[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9][A-Za-z0-9.-]{0,252}",
         "pattern_help": "an e-mail address"}
CRON = {"pattern": r"@(hourly|daily|weekly|monthly|yearly)|[0-9A-Za-z*/,-]+( [0-9A-Za-z*/,-]+){4}",
        "pattern_help": "five cron fields (e.g. '0 3 * * 1') or @hourly, @daily, @weekly, @monthly, @yearly"}
# A dataset registry: a git URL (https, http, ssh, git, file), scp-like user@host:path or an absolute path;
# ${NAME} only for the variables REPOSITORY_VARIABLES lists
REPOSITORY = {"pattern": r"[A-Za-z0-9_.:/@+=,${}-]+",
              "pattern_help": "a git URL: letters, digits and _.:/@+=,- only, and ${FACTORY_STATE}"}
REPOSITORY_VARIABLES = ("FACTORY_STATE",)  # paths, never secrets: documented in SECURITY.md
REPOSITORY_SHAPE = re.compile(r"(https?|ssh|git|file)://[A-Za-z0-9_.@:\[\]-]*/[A-Za-z0-9_.:/@+=,~-]+"
                              r"|[A-Za-z0-9_.-]+@[A-Za-z0-9_.-]+:[A-Za-z0-9_./~+=,-]+|/[A-Za-z0-9_./+=,~@:-]+")
# MLflow refuses aliases outside [A-Za-z0-9_-] and reserves latest and v<number> (case-insensitive)
ALIAS = {"pattern": r"[A-Za-z0-9_-]{1,255}", "pattern_help": "letters, digits, _ and - only (MLflow's alias rule)"}
TAG_KEY = r"[A-Za-z][A-Za-z0-9_.-]{0,249}"
MAX_TAG_VALUE = 5000
LIMITS = {"nodes": 10_000, "tasks_per_node": 1024, "gpus_per_node": 64, "cpus_per_task": 4096}


DEFAULT_TIME = Walltime("00:30:00")


class SpecError(ConfigError):
    """A mistake in a pipeline spec."""


@dataclass(frozen=True)
class Dataset:
    """Where the versioned data lives: a DVC repository, the file in it, the revision to train on."""

    name: str = field(metadata=NAME)
    repository: str = field(metadata=REPOSITORY)  # ${FACTORY_STATE} is expanded: see repository_location
    path: str = field(metadata=RELATIVE)
    revision: str = field(metadata=SAFE)
    test_path: str = field(metadata=RELATIVE)  # the held-out split, same repository and revision


@dataclass(frozen=True)
class Resources:
    """One job's request: nodes x tasks per node, each task with its CPUs; GPUs and memory per node."""

    nodes: int = field(default=1, metadata={"min": 1, "max": LIMITS["nodes"]})
    tasks_per_node: int = field(default=1, metadata={"min": 1, "max": LIMITS["tasks_per_node"]})
    gpus_per_node: int = field(default=0, metadata={"min": 0, "max": LIMITS["gpus_per_node"]})
    cpus_per_task: int = field(default=1, metadata={"min": 1, "max": LIMITS["cpus_per_task"]})
    memory: str = field(default="1G", metadata=MEMORY)
    time: Walltime = DEFAULT_TIME
    partition: str | None = field(default=None, metadata=SLURM_NAME)
    qos: str | None = field(default=None, metadata=SLURM_NAME)
    account: str | None = field(default=None, metadata=SAFE)  # the project to charge; else the connection's

    def slurm_tasks(self, launcher: str) -> tuple[int, int, int]:
        """Slurm tasks per node, processes each task starts, CPUs per Slurm task: torchrun is one Slurm
        task per node that starts ``tasks_per_node`` workers, so that task holds all their CPUs."""
        if launcher == "torchrun":
            return 1, self.tasks_per_node, self.cpus_per_task * self.tasks_per_node
        return self.tasks_per_node, 1, self.cpus_per_task


@dataclass(frozen=True)
class Container:
    """An image run with the site's container runtime (Apptainer/Singularity, Pyxis/enroot, CSCS CE)."""

    image: str = field(metadata=SAFE)  # e.g. /p/project/x/pytorch.sif, docker://..., or a CSCS EDF name


@dataclass(frozen=True)
class Training:
    script: str = field(metadata=RELATIVE)
    params: dict[str, Any] = field(default_factory=dict, metadata={"keys": PARAM_KEY})
    environment: str | None = field(default=None, metadata=ENVIRONMENT)
    container: Container | None = None
    launcher: Launcher = "plain"
    resources: Resources = field(default_factory=Resources)


@dataclass(frozen=True)
class Evaluation:
    script: str = field(metadata=RELATIVE)
    metrics: list[str] = field(metadata={"pattern": r"[a-z][a-z0-9_]*", "pattern_help": "a metric name"})
    primary_metric: str
    thresholds: dict[str, float] = field(default_factory=dict, metadata={"keys": r"[a-z][a-z0-9_]*"})
    compare_with_champion: bool = True  # the champion scored on the same test set in the same job
    min_improvement: float = field(default=0.0, metadata={"min": 0})
    environment: str | None = field(default=None, metadata=ENVIRONMENT)
    container: Container | None = None
    resources: Resources = field(default_factory=Resources)

    @property
    def launcher(self) -> Launcher:
        """Evaluation runs one process; not a field of the spec."""
        return "plain"


def _validation_resources() -> Resources:
    return Resources(cpus_per_task=2, memory="4G", time=Walltime("01:00:00"))


@dataclass(frozen=True)
class DataValidation:
    """The Slurm CPU job that validates data above the contract's ``validation.cluster_above``."""

    resources: Resources = field(default_factory=_validation_resources)

    @property
    def launcher(self) -> Launcher:
        return "plain"

    @property
    def environment(self) -> str:
        return "job-runtime"  # has Great Expectations; the same code as on the worker

    @property
    def container(self) -> None:
        return None


@dataclass(frozen=True)
class Aliases:
    challenger: str = field(default="challenger", metadata=ALIAS)  # every registered version
    champion: str = field(default="champion", metadata=ALIAS)  # the version that passed the gate


@dataclass(frozen=True)
class Registry:
    model_name: str = field(metadata=MODEL_NAME)
    aliases: Aliases = field(default_factory=Aliases)
    tags: dict[str, str] = field(default_factory=dict, metadata={"keys": TAG_KEY})
    intended_use: str = ""  # for the model card; the pipeline's description when empty


@dataclass(frozen=True)
class Smoke:
    """What a new version must answer before it takes traffic."""

    inputs: list[list[float]] | None = None  # rows of features; default: the model's logged input example
    allowed_outputs: list[Any] | None = None  # every prediction must be one of these
    output_range: list[float] | None = None  # [min, max] every prediction must lie in
    prompt: str | None = None  # openai: the message to send
    expect_pattern: str | None = None  # openai: a regular expression the reply must match


@dataclass(frozen=True)
class Latency:
    requests: int = field(default=100, metadata={"min": 10, "max": 100_000})  # one after another, to the new version
    p99_ms: float = field(default=250.0, metadata={"min": 0, "max": 600_000})  # the 99th percentile must not exceed it


@dataclass(frozen=True)
class Serving:
    model_name: str = field(metadata=MODEL_NAME)
    target: ServingTarget = "v2"  # Open Inference Protocol V2 (MLServer, Triton, KServe) or OpenAI-compatible
    connection: str = field(default="factory_inference", metadata=SAFE)
    smoke: Smoke = field(default_factory=Smoke)
    latency: Latency = field(default_factory=Latency)
    # the previous version stays loaded this long (at most 30 days)
    grace_period_s: int = field(default=600, metadata={"min": 0, "max": 30 * 86400})


@dataclass(frozen=True)
class Schedule:
    cron: str | None = field(default=None, metadata=CRON)
    dataset_version: bool = False  # run when the dataset registry gets a new version


@dataclass(frozen=True)
class Submission:
    connection: str | None = field(default=None, metadata=SAFE)  # default: the site's, else factory_slurm_<site>


@dataclass(frozen=True)
class Tracking:
    """How jobs reach MLflow: ``online`` logs into the central server from the compute node, ``offline``
    into a per-job SQLite store that a pipeline task replays afterwards; ``auto``: offline unless the
    site says its compute nodes reach the internet."""

    mode: TrackingMode = "auto"


@dataclass(frozen=True)
class Notifications:
    email: list[str] = field(default_factory=list, metadata=EMAIL)
    events: list[NotifyOn] = field(default_factory=lambda: ["failure"])


@dataclass(frozen=True)
class EdgeRoute:
    """The Edge worker queue that runs a pipeline's Slurm steps on its site's login node, and the connection
    (transport ``local``) those steps use there."""

    connection: str
    queue: str


@dataclass(frozen=True)
class PipelineSpec:
    apiVersion: Literal["aifactory/v1"]  # the YAML key, as in Kubernetes-style files
    kind: Literal["Pipeline"]
    name: str = field(metadata=NAME)
    description: str
    owners: list[str] = field(metadata=EMAIL)
    dataset: Dataset
    contract: str = field(metadata=NAME)
    site: str = field(metadata=NAME)
    training: Training
    evaluation: Evaluation
    registry: Registry
    serving: Serving
    validation: DataValidation = field(default_factory=DataValidation)
    submission: Submission = field(default_factory=Submission)
    schedule: Schedule | None = None
    tracking: Tracking = field(default_factory=Tracking)
    notifications: Notifications = field(default_factory=Notifications)

    @property
    def dag_id(self) -> str:
        return f"pipeline_{self.name}"

    @property
    def contract_file(self) -> Path:
        return CONTRACTS_DIR / f"{self.contract}.yaml"


@dataclass(frozen=True)
class Pipeline:
    """A spec as loaded and checked: the file's record, the file and the line of each field, the site it was
    checked against and its data contract. The spec's own fields read through (``pipeline.training``)."""

    spec: PipelineSpec
    file: Path
    lines: dict[str, int] = field(repr=False)
    site_facts: Site
    data_contract: Contract

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "spec":  # copy and pickle probe dunders before the fields exist
            raise AttributeError(name)
        return getattr(self.spec, name)

    @property
    def folder(self) -> Path:
        return self.file.parent

    @property
    def offline_tracking(self) -> bool:
        """Whether the jobs log to an offline store (see :class:`Tracking`)."""
        if self.tracking.mode != "auto":
            return self.tracking.mode == "offline"
        return self.site_facts.network.compute_nodes_internet is not True

    @property
    def connection(self) -> str:
        """The Airflow connection that reaches this pipeline's site from the central workers (Celery): it
        submits the jobs unless an Edge worker on the login node does (``edge_route``)."""
        if self.submission.connection and self._method_of(self.submission.connection) is None:
            return self.submission.connection
        methods = (self.site_facts.submission or {}).values()
        named = [method.connection for method in methods if method.connection and not method.edge_queue]
        return named[0] if named else f"factory_slurm_{self.site}"

    @property
    def edge_route(self) -> EdgeRoute | None:
        """Where an Edge worker on the site's login node runs the Slurm steps: the site's first-listed method
        (or the spec's named connection) when that method has an ``edge_queue``. Used only where the
        EdgeExecutor is configured; elsewhere the steps go through ``connection``."""
        if self.submission.connection:
            method = self._method_of(self.submission.connection)
        else:
            method = next(iter((self.site_facts.submission or {}).values()), None)
        if method is None or not method.edge_queue or not method.connection:
            return None
        return EdgeRoute(connection=method.connection, queue=method.edge_queue)

    def _method_of(self, connection: str) -> SiteSubmission | None:
        """The site's Edge method that submits through ``connection``, if there is one."""
        return next((method for method in (self.site_facts.submission or {}).values()
                     if method.connection == connection and method.edge_queue), None)


def repository_location(written: str) -> str:
    """Where git and DVC find a dataset registry: ``written`` with ``${NAME}`` replaced for the variables
    of ``REPOSITORY_VARIABLES`` only. Messages show ``written``, never the expanded text: only git and DVC
    see that. Raises ``SpecError`` for any other ``$``, an unset variable or a URL that is not a plain git
    location (``ext::`` transports run commands; a leading ``-`` would be read as an option)."""
    allowed = ", ".join(f"${{{name}}}" for name in REPOSITORY_VARIABLES)
    pieces = re.split(r"(\$\{[^}]*\})", written)
    expanded = []
    for piece in pieces:
        if piece.startswith("${") and piece.endswith("}"):
            name = piece[2:-1]
            if name not in REPOSITORY_VARIABLES:
                raise SpecError(f"{written!r}: {piece} is not allowed: only {allowed} is expanded "
                                "(other variables of the reading process may hold secrets)")
            value = os.environ.get(name)
            if not value:
                raise SpecError(f"{written!r}: the variable {name} is not set on this machine")
            expanded.append(value)
        elif "$" in piece or "{" in piece or "}" in piece:
            raise SpecError(f"{written!r}: '$', '{{' and '}}' are only allowed as {allowed}")
        else:
            expanded.append(piece)
    location = "".join(expanded)
    if not REPOSITORY_SHAPE.fullmatch(location) or ".." in location.split("/"):
        raise SpecError(f"{written!r} is not a git location this platform reads (allowed: https://, http://, "
                        "ssh://, git://, file:// URLs, user@host:path or an absolute path; no '..')")
    return location


def load_spec(path: Path, sites_dir: Path = SITES_DIR, site: str | None = None,
              sites: dict[str, Site | SiteError] | None = None,
              contracts: dict[Path, Contract | ContractError] | None = None) -> Pipeline:
    """Load and check one ``pipeline.yaml``; ``SpecError.errors`` lists every mistake found after reading.

    ``site`` retargets the spec to another site of the catalogue (``factory render --site``), checked alike.
    ``sites`` and ``contracts`` cache site and contract files (and their errors) across the specs of one
    parse, so each is read once.
    """
    reader = TypedReader(path, SpecError, "spec")
    if path.parent.is_symlink():
        raise SpecError(Problem(str(path), 1, "spec", f"the pipeline folder {path.parent} is a symbolic link: a "
                                                       "pipeline's files must live in its own folder"))
    root = compose(path, SpecError, "spec", f"apiVersion: {API_VERSION}, kind: Pipeline, name: ...")
    spec = reader.read_record(PipelineSpec, root, "")
    if site is not None:
        spec = replace(spec, site=site)
    problems: list[tuple[str, str]] = []
    facts = _site(spec.site, sites_dir, {} if sites is None else sites)
    if isinstance(facts, SiteError):
        problems.append(("site", str(facts)))
        facts = None
    contract = _check(spec, path.parent, reader.lines, facts, problems, {} if contracts is None else contracts)
    reader.fail_all(problems)
    return Pipeline(spec, path, reader.lines, facts, contract)


def _site(name: str, sites_dir: Path, sites: dict[str, Site | SiteError]) -> Site | SiteError:
    if name not in sites:
        try:
            sites[name] = load_site(name, sites_dir)
        except SiteError as error:
            sites[name] = error
    return sites[name]


def _contract(path: Path, contracts: dict[Path, Contract | ContractError]) -> Contract | ContractError:
    if path not in contracts:
        try:
            contracts[path] = load_contract(path)
        except ContractError as error:
            contracts[path] = error
    return contracts[path]


def _check(spec: PipelineSpec, folder: Path, lines: dict[str, int], site: Site | None,
           problems: list[tuple[str, str]], contracts: dict[Path, Contract | ContractError]) -> Contract | None:
    """What types cannot say: names match files, files exist, the site can run the jobs asked of it. The
    spec's contract, read once, when it can be."""
    def problem(where: str, message: str) -> None:
        problems.append((where, message))

    if spec.name != folder.name:
        problem("name", f"{spec.name!r} must match the pipeline's folder name {folder.name!r}")
    try:
        repository_location(spec.dataset.repository)
    except SpecError as error:
        problem("dataset.repository", str(error))
    if spec.dataset.test_path == spec.dataset.path:
        problem("dataset.test_path", f"{spec.dataset.test_path!r} is the training file: the held-out split must "
                                     "be another file")
    contract: Contract | ContractError | None = None
    if not spec.contract_file.exists():
        known = ", ".join(sorted(file.stem for file in CONTRACTS_DIR.glob("*.yaml"))) or "none"
        problem("contract", f"no data contract {spec.contract!r} in {CONTRACTS_DIR} (known: {known})")
    else:
        contract = _contract(spec.contract_file, contracts)
        if isinstance(contract, ContractError):
            problem("contract", "the contract has errors (fix them first):\n  " + "\n  ".join(contract.errors))
        elif contract.dataset != spec.dataset.name:
            problem("contract", f"contract {spec.contract!r} is for dataset {contract.dataset!r}, "
                                f"not {spec.dataset.name!r}")
    _check_launch(spec, site, "validation", problem)
    for step in ("training", "evaluation"):
        job = getattr(spec, step)
        script = folder / job.script
        try:
            found, unusable = script.is_file(), None
        except OSError as error:  # a name this file system cannot hold (too long): hostile or broken config
            found, unusable = False, error.strerror
        if unusable:
            problem(f"{step}.script", f"{job.script[:80]!r}... is not a usable file name ({unusable})")
        elif not found:
            problem(f"{step}.script", f"{job.script!r} does not exist in {folder}")
        else:
            for relative in script_files(folder, job.script).values():
                reason = staging_problem(folder, relative)
                if reason:
                    problem(f"{step}.script", f"cannot be staged: {reason}")
        if job.environment is not None and job.container is not None:
            problem(f"{step}.container", "give either environment (a Python environment on the cluster) or "
                                         "container (an image), not both")
        _check_launch(spec, site, step, problem)
    evaluation = spec.evaluation
    if evaluation.primary_metric not in evaluation.metrics:
        problem("evaluation.primary_metric", f"{evaluation.primary_metric!r} is not one of evaluation.metrics "
                                             f"(allowed: {', '.join(evaluation.metrics)})")
    for metric in evaluation.thresholds:
        if metric not in evaluation.metrics:
            problem(f"evaluation.thresholds.{metric}", f"{metric!r} is not one of evaluation.metrics "
                                                        f"(allowed: {', '.join(evaluation.metrics)})")
    _check_serving(spec.serving, problem)
    aliases = spec.registry.aliases
    if aliases.challenger == aliases.champion:
        problem("registry.aliases.champion", "must differ from the challenger alias")
    for role in ("challenger", "champion"):
        alias = getattr(aliases, role)
        if alias.lower() == "latest" or re.fullmatch(r"[vV][0-9]+", alias):
            problem(f"registry.aliases.{role}", f"{alias!r} is reserved by MLflow ('latest' and v<number> name "
                                                "versions): choose another alias")
    for key, value in spec.registry.tags.items():
        if len(value) > MAX_TAG_VALUE:
            problem(f"registry.tags.{key}", f"{len(value)} characters: at most {MAX_TAG_VALUE}")
    if spec.schedule is not None and spec.schedule.cron and spec.schedule.dataset_version:
        problem("schedule", "give either cron or dataset_version: true, not both")
    if spec.schedule is not None and spec.schedule.cron:
        for message in cron_problems(spec.schedule.cron):
            problem("schedule.cron", message)
    if spec.notifications.events and not spec.notifications.email and "notifications" in lines:
        problem("notifications.email", "list at least one address to notify")
    if not spec.owners:
        problem("owners", "list at least one owner (an e-mail address)")
    return contract if isinstance(contract, Contract) else None


CRON_FIELDS = (("minute", 0, 59, ()), ("hour", 0, 23, ()), ("day of month", 1, 31, ()),
               ("month", 1, 12, ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")),
               ("day of week", 0, 7, ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")))


def cron_problems(cron: str) -> list[str]:
    """What Airflow's cron parser would refuse at parse time, said at review time: each field in its range."""
    if cron.startswith("@"):
        return []
    problems = []
    for text, (name, low, high, names) in zip(cron.split(" "), CRON_FIELDS, strict=True):
        def number(value: str, name: str = name, low: int = low, names: tuple[str, ...] = names) -> int | None:
            if value.upper() in names:
                return names.index(value.upper()) + (low if name == "month" else 0)
            return int(value) if value.isdigit() and len(value) <= 2 else None

        for item in text.split(","):
            span, _, step = item.partition("/")
            ends = span.split("-")
            values = [low, high] if span == "*" else [number(end) for end in ends]
            if len(ends) > 2 or None in values or (step and not (step.isdigit() and 0 < int(step) <= high)):
                problems.append(f"{name} field {text!r}: {item!r} is not a value, range or step of {low}-{high}"
                                + (f" or {names[0]}-{names[-1]}" if names else ""))
            elif any(not low <= value <= high for value in values) or values[0] > values[-1]:
                problems.append(f"{name} field {text!r}: {item!r} is outside {low}-{high}")
    return problems


def _check_serving(serving: Serving, problem: Any) -> None:
    smoke = serving.smoke
    bounds = smoke.output_range
    if bounds is not None and (len(bounds) != 2 or bounds[0] > bounds[1]):
        problem("serving.smoke.output_range", f"{smoke.output_range} must be [min, max] with min <= max")
    if smoke.inputs is not None and sum(len(row) for row in smoke.inputs) > 100_000:
        problem("serving.smoke.inputs", "more than 100,000 values: a smoke test needs a few rows")
    if smoke.expect_pattern is not None:
        reason = pattern_problem(smoke.expect_pattern)
        if reason:
            problem("serving.smoke.expect_pattern", f"{smoke.expect_pattern!r}: {reason}")
    if serving.target == "openai" and not smoke.prompt:
        problem("serving.smoke.prompt", "an openai target is smoke-tested with a chat message: give the prompt")
    if serving.target == "v2":
        for key in ("prompt", "expect_pattern"):
            if getattr(smoke, key) is not None:
                problem(f"serving.smoke.{key}", "only for target openai (a v2 target is asked with inputs)")
    if serving.target == "openai":
        for key in ("inputs", "allowed_outputs", "output_range"):
            if getattr(smoke, key) is not None:
                problem(f"serving.smoke.{key}", "only for target v2 (an openai target is asked with a prompt)")


def _check_launch(spec: PipelineSpec, site: Site | None, step: str, problem: Any) -> None:
    job = getattr(spec, step)
    resources: Resources = job.resources
    launcher = job.launcher
    where = f"{step}.resources"
    if launcher == "plain" and (resources.nodes > 1 or resources.tasks_per_node > 1):
        problem(f"{step}.launcher" if step == "training" else where,
                f"launcher plain runs one process, but {resources.nodes} node(s) x {resources.tasks_per_node} "
                "task(s) per node are requested (allowed: srun or torchrun for more than one process)")
    if site is None:
        return
    if job.container is not None and not site.containers.runtimes:
        runtimes = "unknown" if site.containers.runtimes is None else "none"
        problem(f"{step}.container", f"{site.title} has no known container runtime (runtimes: {runtimes} in "
                                     f"{site.file}); use environment instead")
    if launcher == "torchrun" and site.gpu_request.style == "gpus-per-task" and resources.gpus_per_node:
        problem(f"{step}.launcher", f"{site.title} gives one GPU per task (--gpus-per-task): use launcher srun, "
                                    "one rank per task, instead of torchrun")
    if size_bytes(resources.memory + ("M" if resources.memory.isdigit() else "")) > MAX_MEMORY_BYTES:
        problem(f"{where}.memory", f"{resources.memory!r} is more memory than any node has (at most 64T)")
    cpus = resources.slurm_tasks(launcher)[2]
    for message in check_request(site, nodes=resources.nodes, gpus_per_node=resources.gpus_per_node,
                                 cpus_per_task=cpus, memory=resources.memory, time_limit=resources.time,
                                 partition=resources.partition, qos=resources.qos):
        problem(where, message)
    if resources.account is not None:
        try:
            account_value(site, resources.account)
        except SiteError as error:
            problem(f"{where}.account", str(error))


def script_files(folder: Path, script: str) -> dict[str, str]:
    """What a step stages from its pipeline folder: {name in the job folder: path inside ``folder``}, the
    script under its own name and every ``*.py`` beside it (its modules)."""
    path = PurePosixPath(script)
    beside = sorted(file.name for file in (folder / path.parent).glob("*.py") if file.name != "__init__.py")
    return {**{name: str(path.parent / name) for name in beside}, path.name: str(path)}


def discover(pipelines_dir: Path = PIPELINES_DIR) -> list[Path]:
    return sorted(pipelines_dir.glob("*/pipeline.yaml"))


def unknown_pipeline(name: str, pipelines_dir: Path = PIPELINES_DIR) -> str | None:
    """Why ``name`` is not a pipeline of the folder, naming the known ones; None when it is one."""
    known = [path.parent.name for path in discover(pipelines_dir)]
    return None if name in known else f"no pipeline {name!r} in {pipelines_dir} (known: {', '.join(known)})"


def ignored_files(folder: Path, pattern: str, meant: str) -> list[Problem]:
    """Files that look like config but are never read (``*.yml``): a warning each, so nobody waits for them."""
    return [Problem(str(path), None, None, f"ignored: only {meant} files are read (rename it to "
                                            f"{path.with_suffix('.yaml').name})")
            for path in sorted(folder.glob(pattern))]


def load_all(pipelines_dir: Path = PIPELINES_DIR, sites_dir: Path = SITES_DIR,
             sites: dict[str, Site | SiteError] | None = None,
             contracts: dict[Path, Contract | ContractError] | None = None,
             ) -> tuple[list[Pipeline], dict[Path, SpecError]]:
    """Every good spec in the folder, and each bad one's errors by file: a bad spec never hides the others'
    errors nor stops the others from loading. Two specs that register or serve the same model name both
    fail, naming each other: they would overwrite each other's versions and served model."""
    specs: list[Pipeline] = []
    failed: dict[Path, SpecError] = {}
    sites, contracts = ({} if sites is None else sites), ({} if contracts is None else contracts)
    for path in discover(pipelines_dir):
        try:
            specs.append(load_spec(path, sites_dir, sites=sites, contracts=contracts))
        except SpecError as error:
            failed[path] = error
    for file, problems in _name_clashes(specs).items():
        failed[file] = SpecError(problems)
    return [spec for spec in specs if spec.file not in failed], failed


def _name_clashes(specs: list[Pipeline]) -> dict[Path, list[Problem]]:
    clashes: dict[Path, list[Problem]] = {}
    for where, what in (("registry.model_name", "registered model"), ("serving.model_name", "served model")):
        owners: dict[str, list[Pipeline]] = {}
        for spec in specs:
            owners.setdefault(getattr(spec, where.split(".")[0]).model_name, []).append(spec)
        for name, sharing in owners.items():
            for spec in sharing if len(sharing) > 1 else []:
                others = ", ".join(str(other.file) for other in sharing if other is not spec)
                clashes.setdefault(spec.file, []).append(Problem(
                    str(spec.file), spec.lines.get(where, 1), where,
                    f"{name!r} is also the {what} of {others}: two pipelines would overwrite each other's "
                    "versions; give each its own name"))
    return clashes
