"""The site catalogue (``sites/<name>.yaml``): what each AI factory offers and how to ask for it.

Strict like the pipeline spec, and more precise: a mistake names the file, the line, the field and
what is allowed, so a reviewer fixes it without reading this code. Imports no Airflow and no heavy
library, because specs are checked against their site while the DAG processor parses them.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

from operators.typed_yaml import ConfigError, Problem, TypedReader, Walltime, compose, full_match
from operators.user_regex import pattern_problem

API_VERSION = "aifactory/v1"
SITES_DIR = Path(__file__).resolve().parents[2] / "sites"

Mark = Literal["observed", "unverified", "unknown"]
CpuArch = Literal["x86_64", "aarch64"]
GpuStyle = Literal["gres", "gpus-per-node", "gpus-per-task"]
Runtime = Literal["apptainer", "singularity", "pyxis-enroot", "cscs-container-engine"]
Method = Literal["ssh", "slurmrestd", "local", "unicore", "firecrest"]
BillingUnit = Literal["core-hours", "gpu-hours", "node-hours", "none"]

MARK_LABELS: dict[str, str] = {"observed": "(obs.)", "unverified": "(?)", "unknown": "unknown"}
SITE_NAME = r"[a-z][a-z0-9_]{0,62}"
NAME_KEY = r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}"  # partitions; also safe inside an #SBATCH line
QOS_KEY = r"[A-Za-z0-9_-]{0,64}(<[a-z_]{1,32}>)?[A-Za-z0-9_-]{0,64}"  # acc_<group>: one placeholder per name
PATH_KEY = r"[A-Za-z0-9_<>-]{1,128}(\.[A-Za-z0-9_<>-]{1,128}){0,16}"  # a dotted field path in `unverified`
# no shell metacharacters, spaces or newlines, and no leading - (it would be read as an option)
SAFE_VALUE = r"[A-Za-z0-9_.:/@+=,][A-Za-z0-9_.:/@+=,-]{0,511}"
DIRECTIVE = r"--([a-z][a-z-]{0,63})(=[A-Za-z0-9_.:/@+,][A-Za-z0-9_.:/@+,-]{0,255})?"
# sbatch options a site may add to GPU jobs: how GPUs, CPUs and memory are bound, never who runs the job,
# where it writes or what it runs (--uid, --output, --chdir, --export, --wrap, ... are not on the list)
EXTRA_DIRECTIVES = ("constraint", "cores-per-socket", "cpu-freq", "cpus-per-gpu", "distribution", "exclusive",
                    "gpu-bind", "gpu-freq", "gres-flags", "hint", "licenses", "mem-bind", "mem-per-gpu", "network",
                    "ntasks-per-core", "prefer", "reservation", "sockets-per-node", "switches", "threads-per-core",
                    "tmp")


class SiteError(ConfigError):
    """A mistake in a site file of the catalogue."""


@dataclass(frozen=True)
class Node:
    """One GPU node as Slurm schedules it."""

    gpus: int = field(metadata={"min": 0, "max": 64})  # Slurm GPUs: on LUMI a GCD, 8 per node
    gpu_model: str
    cpu_arch: CpuArch | None
    cores: int | None = field(metadata={"min": 1, "max": 100_000})
    gpu_memory_gb: int | None = field(default=None, metadata={"min": 1})
    cpu_model: str | None = None


@dataclass(frozen=True)
class GpuRequest:
    """How a job asks for GPUs: ``--gres=gpu:N``, ``--gpus-per-node=N`` or one GPU per task."""

    style: GpuStyle | None
    constraint: str | None = None  # Jean Zay: -C h100 picks the H100 nodes
    extra_directives: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Account:
    """``--account=`` value: ``template`` with ``{project}`` replaced by the project the user names."""

    template: str
    example: str | None = None
    pattern: str | None = None  # a regular expression the project must match in full
    default: str | None = None


@dataclass(frozen=True)
class Partition:
    gpus_per_node: int | None = field(metadata={"min": 0})
    max_walltime: Walltime | None = None  # absent or null: the site's max_walltime applies
    max_nodes: int | None = field(default=None, metadata={"min": 1})
    whole_nodes: bool = False
    default: bool = False
    notes: str = ""


@dataclass(frozen=True)
class Qos:
    max_walltime: Walltime | None = None
    partitions: list[str] = field(default_factory=list)  # empty: any partition
    notes: str = ""


@dataclass(frozen=True)
class Containers:
    runtimes: list[Runtime] | None
    launch: str | None = None
    notes: str = ""


@dataclass(frozen=True)
class Storage:
    scratch: str | None
    scratch_purge_days: int | None = field(default=None, metadata={"min": 1})
    areas: dict[str, str] = field(default_factory=dict, metadata={"keys": NAME_KEY})
    object_store: str | None = None
    notes: str = ""


@dataclass(frozen=True)
class Network:
    compute_nodes_internet: bool | None
    notes: str = ""


@dataclass(frozen=True)
class Submission:
    endpoint: str | None = None
    connection: str | None = None  # the Airflow connection that submits this way
    # an Airflow Edge worker on the site's login node takes this queue's tasks (method ``local`` only)
    edge_queue: str | None = field(default=None, metadata={
        "pattern": r"[a-z][a-z0-9_-]{0,62}", "pattern_help": "lower-case letters, digits, _ and -"})
    notes: str = ""


@dataclass(frozen=True)
class Billing:
    unit: BillingUnit | None
    per_gpu_hour: float | None = field(default=None, metadata={"min": 0})  # units charged per GPU-hour
    per_node_hour: float | None = field(default=None, metadata={"min": 0})  # units charged per node-hour
    energy_accounting: bool | None = None
    notes: str = ""


@dataclass(frozen=True)
class Site:
    apiVersion: Literal["aifactory/v1"]  # the YAML key, as in Kubernetes-style files
    kind: Literal["Site"]
    name: str
    title: str
    centre: str
    node: Node
    gpu_request: GpuRequest
    account: Account
    partitions: dict[str, Partition] = field(metadata={"keys": NAME_KEY})
    containers: Containers
    max_walltime: Walltime | None
    storage: Storage
    network: Network
    submission: dict[Method, Submission] | None
    billing: Billing
    slurm_version: str | None
    ai_factory: str | None = None
    qos: dict[str, Qos] = field(default_factory=dict, metadata={"keys": QOS_KEY})
    notes: str = ""
    unverified: dict[str, Mark] = field(default_factory=dict, metadata={"keys": PATH_KEY})
    file: Path = field(default=Path(), repr=False, compare=False, metadata={"loaded": True})
    lines: dict[str, int] = field(default_factory=dict, repr=False, compare=False, metadata={"loaded": True})

    def mark(self, path: str) -> Mark | None:
        """How sure the catalogue is of a field: its own marking or its nearest marked parent's."""
        parts = path.split(".")
        for end in range(len(parts), 0, -1):
            found = self.unverified.get(".".join(parts[:end]))
            if found:
                return found
        return None

    def label(self, path: str) -> str:
        """`` (obs.)``, `` (?)`` or nothing, the markers of ../shared/sites.md, for messages and tables."""
        found = self.mark(path)
        return f" {MARK_LABELS[found]}" if found in ("observed", "unverified") else ""

    def caveat(self, path: str) -> str:
        """`` (unverified)`` or `` (seen only in public job scripts)``: the marker in words, for messages."""
        words = {"observed": " (seen only in public job scripts)", "unverified": " (unverified)"}
        return words.get(self.mark(path) or "", "")

    def default_partition(self) -> str | None:
        return next((name for name, partition in self.partitions.items() if partition.default), None)

    def to_dict(self) -> dict[str, Any]:
        """The site as plain data for ``--json`` (the file it came from, not its line table)."""
        data = {key: value for key, value in asdict(self).items() if key not in ("file", "lines")}
        return {**data, "file": str(self.file)}


def format_walltime(seconds: int) -> str:
    """``3 d``, ``24 h``, ``30 min``: how people read limits, in messages and the table."""
    if seconds >= 2 * 86400 and seconds % 86400 == 0:
        return f"{seconds // 86400} d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


class _SiteReader(TypedReader):
    def missing_advice(self, hint: Any) -> str:
        return "; write null and mark it unknown if nobody knows it" if type(None) in get_args(hint) else ""


def load_site(name_or_path: str | Path, directory: Path = SITES_DIR) -> Site:
    """One site by name (``jupiter``, from ``directory``) or by file path."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml") and full_match(SITE_NAME, str(name_or_path)):
        path = directory / f"{name_or_path}.yaml"
        if not path.exists():
            known = ", ".join(sorted(file.stem for file in directory.glob("*.yaml")))
            raise SiteError(f"no site {str(name_or_path)!r} in {directory} (known: {known})")
    reader = _SiteReader(path, SiteError, "site")
    root = compose(path, SiteError, "site", f"apiVersion: {API_VERSION}, kind: Site, ...")
    site = reader.read_record(Site, root, "")
    _check_consistency(site, reader, path)
    return replace(site, file=path, lines=reader.lines)


def load_catalogue(directory: Path = SITES_DIR) -> dict[str, Site]:
    """Every ``*.yaml`` in ``directory`` by name, local first; one SiteError lists every bad file."""
    sites: dict[str, Site] = {}
    problems: list[Problem] = []
    for path in sorted(directory.glob("*.yaml"), key=lambda path: (path.stem != "local", path.stem)):
        try:
            sites[path.stem] = load_site(path)
        except SiteError as error:
            problems.extend(error.problems)
    if problems:
        raise SiteError(problems)
    if not sites:
        raise SiteError(f"{directory}: no site files (*.yaml)")
    return sites


def _check_consistency(site: Site, reader: TypedReader, path: Path) -> None:
    """What types cannot say: names match, markings point at real fields, nulls are marked unknown."""
    fail = reader.fail_at

    if site.name != path.stem:
        fail("name", f"{site.name!r} must match the file name {path.stem!r}")
    for where, marking in site.unverified.items():
        key = f"unverified.{where}"
        if where not in reader.lines or where.startswith("unverified"):
            fail(key, f"marks a field that the file does not have ({where!r})")
        if marking == "unknown" and where not in reader.nulls:
            fail(key, f"'unknown' is only for null values; {where} has a value (use 'unverified' or 'observed')")
    for where in reader.nulls:
        if site.unverified.get(where) != "unknown":
            fail(where, f"null means nobody knows the value: list it in 'unverified' as `{where}: unknown` "
                        "(or give the value)")
    defaults = [name for name, partition in site.partitions.items() if partition.default]
    if len(defaults) > 1:
        fail(f"partitions.{defaults[1]}.default", f"only one partition can be the default ({', '.join(defaults)})")
    for name, partition in site.partitions.items():
        if partition.gpus_per_node is not None and partition.gpus_per_node > site.node.gpus:
            fail(f"partitions.{name}.gpus_per_node",
                 f"{partition.gpus_per_node} is more than node.gpus ({site.node.gpus})")
    for name, qos in site.qos.items():
        for index, partition_name in enumerate(qos.partitions):
            if partition_name not in site.partitions:
                fail(f"qos.{name}.partitions.{index}", f"{partition_name!r} is not a partition of this site "
                                                       f"(allowed: {', '.join(sorted(site.partitions))})")
    for method, submission in (site.submission or {}).items():
        if submission.edge_queue is not None and method != "local":
            fail(f"submission.{method}.edge_queue", "only the method 'local' has an Edge worker queue (the worker "
                                                    "runs the Slurm commands on the login node itself)")
        if submission.edge_queue is not None and not submission.connection:
            fail(f"submission.{method}.connection", "an Edge worker method needs the connection its tasks use")
    template = site.account.template
    if "{project}" not in template or not full_match(SAFE_VALUE, template.replace("{project}", "x")):
        fail("account.template", f"{template!r} must contain {{project}} and otherwise only letters, digits "
                                 "and _.:/@+=,- (it becomes --account=...)")
    if site.account.pattern is not None:
        reason = pattern_problem(site.account.pattern)
        if reason:
            fail("account.pattern", f"{site.account.pattern!r}: {reason}")
    for where, value in (("account.default", site.account.default),
                         ("gpu_request.constraint", site.gpu_request.constraint)):
        if value is not None and not full_match(SAFE_VALUE, value):
            fail(where, f"{value!r} is not allowed (letters, digits and _.:/@+=,- only)")
    for index, directive in enumerate(site.gpu_request.extra_directives):
        match = re.fullmatch(DIRECTIVE, directive, re.ASCII)
        if not match:
            fail(f"gpu_request.extra_directives.{index}", f"{directive!r} must look like --option or "
                                                          "--option=value (no spaces or shell characters)")
        if match.group(1) not in EXTRA_DIRECTIVES:
            fail(f"gpu_request.extra_directives.{index}", f"--{match.group(1)} is not an option a site may add "
                                                          f"(allowed: {', '.join(EXTRA_DIRECTIVES)})")
    if not full_match(SITE_NAME, site.name):
        fail("name", f"{site.name!r} must match {SITE_NAME}")
