"""A job's resource request against its site: problems in words, and the site's sbatch directives.

Checked when a spec is loaded, so "8 GPUs per node on JUPITER" fails at review time, not after a
day in the queue; and rendered per site, because the same request is spelt differently on each.
"""

from __future__ import annotations

from operators.sites.catalogue import SAFE_VALUE, Site, SiteError, format_walltime
from operators.typed_yaml import Problem, full_match
from operators.units import slurm_time_seconds as walltime_seconds
from operators.user_regex import full_match as pattern_matches

MEMORY = r"[0-9]{1,10}[KMGT]?"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _whole(value: object, name: str, minimum: int) -> str | None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        return f"{name}: {value!r} must be a whole number >= {minimum}"
    return None


def _qos_named(site: Site, qos: str) -> str | None:
    """The catalogue entry for a QoS name; ``acc_<group>`` stands for any ``acc_...``."""
    if qos in site.qos:
        return qos
    for name in site.qos:
        if "<" in name:
            prefix, _, rest = name.partition("<")
            suffix = rest.partition(">")[2]
            if qos.startswith(prefix) and qos.endswith(suffix) and len(qos) > len(prefix) + len(suffix):
                return name
    return None


def check_request(site: Site, nodes: int = 1, gpus_per_node: int = 0, cpus_per_task: int = 1,
                  memory: str | None = None, time_limit: str | None = None, partition: str | None = None,
                  qos: str | None = None) -> list[str]:
    """Every way the request does not fit the site, as sentences that name the site's real limits.

    An empty list means nothing in the catalogue contradicts the request; limits the catalogue marks
    unknown are not checked, and limits it marks unverified say so in the message.
    """
    problems = [problem for problem in (_whole(nodes, "nodes", 1), _whole(gpus_per_node, "GPUs per node", 0),
                                        _whole(cpus_per_task, "CPUs per task", 1)) if problem]
    if problems:
        return problems
    title, node = site.title, site.node
    if gpus_per_node > node.gpus:
        problems.append(f"{title} nodes have {_plural(node.gpus, 'GPU')} ({node.gpu_model}){site.caveat('node.gpus')}; "
                        f"{_plural(gpus_per_node, 'GPU')} per node requested")
    if node.cores is not None and cpus_per_task > node.cores:
        problems.append(f"{title} nodes have {node.cores} cores{site.caveat('node.cores')}; "
                        f"{cpus_per_task} CPUs per task requested")
    if gpus_per_node and site.gpu_request.style is None:
        problems.append(f"{title}: how to ask for GPUs is not known (gpu_request.style is null in {site.file}), "
                        "so a GPU job cannot be rendered for it")
    if memory is not None and not (isinstance(memory, str) and full_match(MEMORY, memory)):
        problems.append(f"memory: {memory!r} must look like 512M or 4G")

    chosen = partition if partition is not None else site.default_partition()
    chosen_label = f"partition {chosen!r}" + ("" if partition is not None else " (the default)")
    if chosen is not None and site.partitions and chosen not in site.partitions:
        problems.append(f"{title} has no partition {chosen!r} (known: {', '.join(sorted(site.partitions))})")
        chosen = None
    elif chosen is not None and chosen not in site.partitions:
        chosen = None  # the catalogue knows no partitions of this site: nothing to check against
    if chosen is not None:
        facts, where = site.partitions[chosen], f"partitions.{chosen}"
        if gpus_per_node and facts.gpus_per_node == 0:
            with_gpus = sorted(name for name, other in site.partitions.items() if other.gpus_per_node)
            hint = f" (partitions with GPUs: {', '.join(with_gpus)})" if with_gpus else ""
            problems.append(f"{title} {chosen_label} has no GPUs; {_plural(gpus_per_node, 'GPU')} per node "
                            f"requested{hint}")
        elif facts.gpus_per_node is not None and 0 < facts.gpus_per_node < min(gpus_per_node, node.gpus):
            problems.append(f"{title} {chosen_label} has {_plural(facts.gpus_per_node, 'GPU')} per node"
                            f"{site.caveat(where + '.gpus_per_node')}; {gpus_per_node} requested")
        if facts.max_nodes is not None and nodes > facts.max_nodes:
            problems.append(f"{title} {chosen_label} allows at most {_plural(facts.max_nodes, 'node')}"
                            f"{site.caveat(where + '.max_nodes')}; {nodes} requested")

    chosen_qos = None
    if qos is not None:
        chosen_qos = _qos_named(site, qos)
        if chosen_qos is None:
            known = ", ".join(sorted(site.qos)) or "none in the catalogue"
            problems.append(f"{title} has no QoS {qos!r} (known: {known})")
        elif chosen and site.qos[chosen_qos].partitions and chosen not in site.qos[chosen_qos].partitions:
            problems.append(f"{title} QoS {qos!r} applies to partition(s) "
                            f"{', '.join(site.qos[chosen_qos].partitions)}, not {chosen!r}")

    if time_limit is not None:
        try:
            requested = walltime_seconds(str(time_limit))
        except ValueError as error:
            problems.append(f"time limit: {error}")
        else:
            limit = _time_limit(site, chosen, chosen_label, chosen_qos)
            if limit is not None and requested > limit[0]:
                scope = f"{title} {limit[1]}".rstrip()
                problems.append(f"{scope} allows at most {format_walltime(limit[0])}{limit[2]}; "
                                f"{format_walltime(requested)} ({time_limit}) requested")
    return problems


def _time_limit(site: Site, partition: str | None, partition_label: str,
                qos: str | None) -> tuple[int, str, str] | None:
    """The tightest limit the catalogue knows: the QoS's, else the partition's, else the site's.

    A QoS whose limit is unknown does not lift the partition's or the site's: the catalogue cannot
    tell, and a job refused at review is cheaper than one refused by sbatch.
    """
    candidates = []
    if qos is not None:
        candidates.append((site.qos[qos].max_walltime, f"QoS {qos!r}", f"qos.{qos}.max_walltime"))
    if partition is not None:
        candidates.append((site.partitions[partition].max_walltime, partition_label,
                           f"partitions.{partition}.max_walltime"))
    candidates.append((site.max_walltime, "", "max_walltime"))
    for value, what, where in candidates:
        if value is not None:
            return walltime_seconds(value), what, site.caveat(where)
    return None


def gpu_directives(site: Site, gpus_per_node: int) -> list[str]:
    """The sbatch options (without ``#SBATCH``) that ask this site for GPUs, e.g. ``--gres=gpu:4``.

    Alps gives GPUs per task: N GPUs per node become N tasks per node with one GPU each.
    """
    if not isinstance(gpus_per_node, int) or isinstance(gpus_per_node, bool) or gpus_per_node < 0:
        raise SiteError(f"GPUs per node: {gpus_per_node!r} must be a whole number >= 0")
    if gpus_per_node == 0:
        return []
    request = site.gpu_request
    if request.style is None:
        raise SiteError(Problem(str(site.file), site.lines.get("gpu_request.style", 1), "gpu_request.style",
                                f"how to ask {site.title} for GPUs is not known (null), so a GPU job cannot be "
                                "rendered"))
    directives = {
        "gres": [f"--gres=gpu:{gpus_per_node}"],
        "gpus-per-node": [f"--gpus-per-node={gpus_per_node}"],
        "gpus-per-task": [f"--ntasks-per-node={gpus_per_node}", "--gpus-per-task=1"],
    }[request.style]
    if request.constraint:
        directives.append(f"--constraint={request.constraint}")
    return directives + list(request.extra_directives)


def account_directive(site: Site, project: str | None = None) -> str:
    """``--account=...`` in the site's syntax (Jean Zay: ``<proj>@h100``); the site's default if none given."""
    return f"--account={account_value(site, project)}"


def account_value(site: Site, project: str | None = None) -> str:
    """The account as the site spells it for ``project`` (checked against the site's pattern)."""
    account = site.account
    project = project if project is not None else account.default
    if project is None:
        example = f" (e.g. {account.example})" if account.example else ""
        raise SiteError(f"{site.title} needs an account{example}: name the project to charge")
    if not isinstance(project, str) or not full_match(SAFE_VALUE, project):
        raise SiteError(f"account: {project!r} is not allowed (letters, digits and _.:/@+=,- only, not starting "
                        "with -)")
    if account.pattern is not None and not pattern_matches(account.pattern, project):
        example = f", e.g. {account.example}" if account.example else ""
        raise SiteError(f"account: {project!r} is not shaped like {site.title} accounts "
                        f"(must match {account.pattern}{example})")
    return account.template.replace("{project}", project)
