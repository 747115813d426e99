"""``factory sites``: the catalogue as a table for people, or ``--json`` for scripts.

Exit codes: 0 the catalogue loads; 1 a site file is invalid (each error names file, line and field);
2 bad command-line arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from operators.sites.catalogue import MARK_LABELS, SITES_DIR, Site, SiteError, format_walltime, load_catalogue
from operators.units import slurm_time_seconds as seconds_of

COLUMNS = ("SITE", "GPUS/NODE", "ARCH", "GPU REQUEST", "CONTAINERS", "MAX WALLTIME", "SUBMISSION",
           "COMPUTE-NODE INTERNET")
GPU_FLAGS = {"gres": "--gres=gpu:N", "gpus-per-node": "--gpus-per-node=N",
             "gpus-per-task": "--gpus-per-task=1 x N tasks"}


def _shown(site: Site, path: str, value: object) -> str:
    """A value with the marker of ../shared/sites.md: ``(obs.)``, ``(?)``, or ``unknown`` for null."""
    if value is None:
        return MARK_LABELS["unknown"]
    return f"{value}{site.label(path)}"


def row(site: Site) -> list[str]:
    node = site.node
    runtimes = site.containers.runtimes
    internet = site.network.compute_nodes_internet
    submission = site.submission
    return [
        site.name,
        _shown(site, "node.gpus", f"{node.gpus} x {node.gpu_model}"),
        _shown(site, "node.cpu_arch", node.cpu_arch),
        _shown(site, "gpu_request.style", GPU_FLAGS.get(site.gpu_request.style or "")),
        _shown(site, "containers.runtimes", None if runtimes is None else ", ".join(runtimes) or "none"),
        _shown(site, "max_walltime", None if site.max_walltime is None else format_walltime(seconds_of(
            site.max_walltime))),
        _shown(site, "submission", None if submission is None else ", ".join(
            f"{method}{' (Edge worker)' if how and how.edge_queue else ''}{site.label(f'submission.{method}')}"
            for method, how in submission.items())),
        _shown(site, "network.compute_nodes_internet", None if internet is None else "yes" if internet else "no"),
    ]


def table(sites: dict[str, Site]) -> str:
    rows = [list(COLUMNS)] + [row(site) for site in sites.values()]
    widths = [max(len(cells[column]) for cells in rows) for column in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()
             for cells in rows]
    return "\n".join([*lines, "", "(obs.) seen only in public job scripts; (?) unverified; unknown: not published. "
                      "Details and sources: sites/<site>.yaml"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="factory sites", description="The catalogue of AI-factory sites.")
    parser.add_argument("--json", action="store_true", help="print the catalogue as JSON")
    parser.add_argument("--dir", type=Path, default=SITES_DIR, help=f"site folder (default {SITES_DIR})")
    args = parser.parse_args(argv)
    try:
        sites = load_catalogue(args.dir)
    except SiteError as error:
        for message in error.errors:
            print(f"factory sites: {message}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({name: site.to_dict() for name, site in sites.items()}, indent=2))
    else:
        print(table(sites))
    return 0
