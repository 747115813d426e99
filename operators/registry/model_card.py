"""The model card of a registered version: what a project lead reads in the registry, as markdown.

A pure function of facts the pipeline already recorded (run tags and metrics, the gate's decision), so
it is tested without a server and says only what the records say: unknown costs read "not recorded".
"""

from __future__ import annotations

from typing import Any

ALLOCATION_TAG = "cost.allocation_remaining."  # written by the gate from the account's sshare
ALLOCATION_UNITS = {"cpu": "CPU-minutes", "gres_gpu": "GPU-minutes", "node": "node-minutes", "billing": "billing units"}
COST_UNITS = {"elapsed_s": ("wall time", "s"), "cpu_hours": ("CPU-hours", "h"),
              "gpu_hours": ("GPU-hours", "h"), "energy_j": ("energy", "J")}


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def comparison_rows(challenger: dict[str, float], champion: dict[str, float] | None,
                    thresholds: dict[str, float] | None = None,
                    metrics: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per metric (``metrics``, else the challenger's): both values on the same split and the
    difference; with ``thresholds`` (the gate's, not the evaluation job's) the threshold and whether it holds."""
    rows = []
    for metric in metrics if metrics is not None else list(challenger):
        mine, theirs = challenger.get(metric), (champion or {}).get(metric)
        row = {"metric": metric, "challenger": mine, "champion": theirs,
               "delta": None if mine is None or theirs is None else mine - theirs}
        if thresholds is not None:
            bound = thresholds.get(metric)
            row |= {"threshold": bound,
                    "meets_threshold": None if bound is None else (mine is not None and mine >= bound)}
        rows.append(row)
    return rows


def comparison_table(rows: list[dict[str, Any]], champion_label: str, challenger_label: str = "this version") -> str:
    """Markdown, 4 decimals, a signed delta, "n/a" where a value is missing; a threshold column when the
    rows carry thresholds."""
    with_thresholds = any("threshold" in row for row in rows)
    header = f"| metric | {challenger_label} | {champion_label} | delta |"
    lines = [header + " threshold |" if with_thresholds else header,
             "|---|---|---|---|---|" if with_thresholds else "|---|---|---|---|"]
    for row in rows:
        delta = "n/a" if row["delta"] is None else f"{row['delta']:+.4f}"
        line = f"| {row['metric']} | {_number(row['challenger'])} | {_number(row['champion'])} | {delta} |"
        if with_thresholds:
            held = "" if row["meets_threshold"] is None else (" ✓" if row["meets_threshold"] else " ✗")
            line += " n/a |" if row["threshold"] is None else f" >= {row['threshold']}{held} |"
        lines.append(line)
    return "\n".join(lines)


def allocation_unit(tag: str) -> str:
    tres = tag.removeprefix(ALLOCATION_TAG).removesuffix("_minutes")
    return ALLOCATION_UNITS.get(tres, f"{tres}-minutes")


def model_card(facts: dict[str, Any]) -> str:
    """``facts``: model, version, promoted, intended_use, description, tags (the version's), rows (from
    :func:`comparison_rows`), champion_version, reasons, cost (``COST_UNITS`` keys), links (name → url),
    plots (artifact paths)."""
    tags, cost = facts["tags"], facts.get("cost") or {}
    champion = f"champion v{facts['champion_version']}" if facts.get("champion_version") else "no champion yet"
    status = "**champion**" if facts["promoted"] else "challenger, **not promoted**"
    lines = [
        f"# {facts['model']} version {facts['version']}",
        "",
        f"Status: {status}. Pipeline `{tags.get('pipeline', '?')}` on site `{tags.get('pipeline.site', '?')}`, "
        f"Airflow DAG `{tags.get('airflow.dag_id', '?')}` run `{tags.get('airflow.run_id', '?')}`.",
        "",
        "## Intended use",
        "",
        facts.get("intended_use") or facts.get("description") or "not stated in the pipeline spec",
        "",
        "## Why it was or was not promoted",
        "",
        *(f"- {reason}" for reason in facts.get("reasons") or ["no gate decision recorded"]),
        "",
        f"## Metrics against the champion (held-out split, {champion}, scored in the same run)",
        "",
        comparison_table(facts.get("rows") or [], champion),
        "",
        "## Lineage",
        "",
        "| | |",
        "|---|---|",
        f"| dataset | `{tags.get('dataset.name', '?')}` at `{tags.get('dataset.revision', '?')}` |",
        f"| dataset repository | `{tags.get('dataset.repository', '?')}` |",
        f"| dataset commit | `{tags.get('dataset.commit', '?')}` |",
        f"| md5 (train / test) | `{tags.get('dataset.md5', '?')}` / `{tags.get('dataset.test_md5', '?')}` |",
        f"| code git sha | `{tags.get('code.git_sha', '?')}` |",
        f"| pipeline spec sha256 | `{tags.get('pipeline.spec_sha256', '?')}` |",
        f"| Slurm jobs | train {tags.get('slurm.train.job_id', '?')}, evaluate {tags.get('slurm.evaluate.job_id', '?')}"
        f" on cluster `{tags.get('slurm.cluster', '?')}` |",
        f"| MLflow logging | {tags.get('tracking.mode', 'online')} |",
        "",
        "## Data contract",
        "",
        f"Result **{tags.get('validation.status', '?')}**, steward decision: {tags.get('validation.decision', '?')}. "
        f"Report: {facts.get('links', {}).get('validation report') or tags.get('validation.report', '?')}",
        "",
        "## Cost",
        "",
        "| | train + evaluate |",
        "|---|---|",
        *(f"| {label} | {'not recorded by the site' if cost.get(key) is None else f'{cost[key]:.4g} {unit}'} |"
          for key, (label, unit) in COST_UNITS.items()),
        *(f"| allocation left after the run | {minutes} {allocation_unit(tag)} |"
          for tag, minutes in sorted(tags.items()) if tag.startswith(ALLOCATION_TAG)),
    ]
    if facts.get("plots"):
        lines += ["", "## Plots (run artifacts)", "", *(f"- `{path}`" for path in facts["plots"])]
    if facts.get("links"):
        lines += ["", "## Links", "", *(f"- {name}: {url}" for name, url in facts["links"].items())]
    return "\n".join(lines) + "\n"

