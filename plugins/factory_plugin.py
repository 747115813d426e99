"""AI Factory pages inside the Airflow API server, behind Airflow's own login:

- ``/factory/stewards``: the data stewards' page: validation runs across pipelines and datasets, with
  Approve / Reject for runs that broke only warn rules and wait for a decision;
- ``/factory/reports/<key>``: validation reports (GX Data Docs) from the reports bucket in S3, rewritten to
  load their styles and scripts from ``/factory/assets/`` (our copies of GX's CDN files) so they render offline;
- ``/factory/slurm/<conn_id>/jobs/<job_id>``: a Slurm job's state and accounting.
"""

from __future__ import annotations

import html
import mimetypes
from pathlib import Path

from airflow.api_fastapi.core_api.security import requires_authenticated
from airflow.configuration import conf
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, Form, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from operators.clients import s3_client
from operators.connections import REPORTS_BUCKET
from operators.contracts.report_assets import asset_file, gx_static_folder, offline_page
from operators.contracts.validate import history, observed, outcome

app = FastAPI(title="AI Factory", dependencies=[Depends(requires_authenticated())])


@app.get("/reports/{key:path}")
def report(key: str) -> Response:
    from botocore.exceptions import ClientError

    if ".." in key.split("/"):
        raise HTTPException(status_code=400, detail="no '..' in report paths")
    try:
        obj = s3_client().get_object(Bucket=REPORTS_BUCKET, Key=key)
    except ClientError as error:
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 502)
        raise HTTPException(status_code=404 if status == 404 else 502,
                            detail=f"s3://{REPORTS_BUCKET}/{key}: {error.response['Error'].get('Code')}") from None
    media_type = obj.get("ContentType") or mimetypes.guess_type(key)[0] or "application/octet-stream"
    content = obj["Body"].read()
    if media_type in ("text/html", "text/css"):
        content = offline_page(content.decode("utf-8", errors="replace"), key).encode()
    return Response(content=content, media_type=media_type)


@app.get("/assets/{path:path}")
def report_asset(path: str) -> Response:
    """GX's CDN files, installed from npm (``plugins/report_assets``) where ``[factory] report_assets`` says."""
    root = Path(conf.get("factory", "report_assets", fallback="/opt/aifactory/report-assets/node_modules"))
    found = asset_file(root, gx_static_folder(), path)
    if found is None:
        raise HTTPException(status_code=404, detail=f"no report asset {path!r}")
    media_type = mimetypes.guess_type(found.name)[0] or "application/octet-stream"
    return Response(content=found.read_bytes(), media_type=media_type,
                    headers={"Cache-Control": "public, max-age=86400"})


@app.get("/slurm/{conn_id}/jobs/{job_id}")
def slurm_job(conn_id: str, job_id: int) -> Response:
    from airflow.exceptions import AirflowNotFoundException

    from operators.slurm.hooks import SlurmHook
    from operators.slurm.model import SlurmError

    try:
        transport = SlurmHook(conn_id).get_transport()
    except AirflowNotFoundException:
        raise HTTPException(status_code=404, detail=f"no Airflow connection {conn_id!r}") from None
    try:
        status = transport.jobs().get(job_id)
        record = transport.accounting([job_id]).get(job_id)
    except SlurmError as error:
        raise HTTPException(status_code=502, detail=str(error)) from None
    if record is None and status is None:
        raise HTTPException(status_code=404, detail=f"Slurm job {job_id} is unknown to {conn_id}")
    rows = {"job": job_id, "connection": conn_id, "transport": transport.kind}
    if status is not None:
        rows.update({"state (controller)": status.state, "reason": status.reason, "start": status.start_time,
                     "restarts": status.restarts, "working directory": status.workdir, "comment": status.comment})
    if record is not None:
        rows.update({f"{key} (accounting)" if key in ("state", "reason", "restarts") else key: value
                     for key, value in record.as_dict().items() if key != "job_id"})
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows.items())
    return Response(content=f"<html><head><title>Slurm job {job_id}</title></head><body>"
                            f"<h1>Slurm job {job_id}</h1><table>{body}</table></body></html>",
                    media_type="text/html")


STATUS_COLOURS = {"passed": "#2e7d32", "approved": "#2e7d32", "warned": "#ef6c00", "failed": "#c62828",
                  "rejected": "#c62828", "unreadable": "#c62828"}
PAGE_STYLE = ("body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;width:100%}"
              "td,th{border:1px solid #ccc;padding:.35em;vertical-align:top;text-align:left}"
              "th{background:#f3f3f3}.status{font-weight:bold;color:#fff;padding:.1em .4em;border-radius:3px}"
              "form{display:inline}button{margin:.1em}.note{background:#fff8e1;padding:.5em;margin:.5em 0}")


def _rules_cell(summary: dict) -> str:
    if summary["status"] == "unreadable":
        return html.escape(str(summary.get("error", "")))
    items = []
    for rule in summary.get("failed", []):
        items.append(f"<li><b>{html.escape(rule['severity'])}</b> {html.escape(rule['rule'])}: "
                     f"{html.escape(rule['description'])} <i>(observed {html.escape(observed(rule))}; owner "
                     f"{html.escape(rule['owner'])})</i></li>")
    return f"<ul>{''.join(items)}</ul>" if items else "none"


def _decision_cell(summary: dict, outcome: str) -> str:
    decision = summary.get("decision")
    if decision:
        return html.escape(f"{decision.get('decision')} by {decision.get('by', '?')} at {decision.get('at', '?')}")
    if outcome != "warned":
        return "not needed" if outcome == "passed" else "-"
    hidden = (f'<input type="hidden" name="dag_id" value="{html.escape(summary["dag_id"])}">'
              f'<input type="hidden" name="run_id" value="{html.escape(summary["run_id"])}">')
    return "".join(f'<form method="post" action="decide">{hidden}<input type="hidden" name="decision" '
                   f'value="{choice}"><button type="submit" class="{choice.lower()}">{choice}</button></form>'
                   for choice in ("Approve", "Reject"))


@app.get("/stewards", response_class=HTMLResponse)
def stewards(dataset: str | None = None, message: str | None = None) -> HTMLResponse:

    runs = history(s3_client(), REPORTS_BUCKET, dataset, limit=100)
    rows = []
    for summary in runs:
        status = outcome(summary)
        rows.append(
            f'<tr class="run" data-status="{status}" data-run-id="{html.escape(summary["run_id"])}">'
            f'<td>{html.escape(summary["dataset"])}<br>{html.escape(summary["revision"])} '
            f'<small>({html.escape(summary["commit"][:10])})</small></td>'
            f'<td>{html.escape(summary["dag_id"])}<br><small>{html.escape(summary["run_id"])}</small></td>'
            f'<td><span class="status" style="background:{STATUS_COLOURS.get(status, "#555")}">{status}</span>'
            f'<br><small>{summary.get("rows", "?")} rows, {html.escape(summary.get("validated_on", ""))}, '
            f'{html.escape(summary.get("validated_at", ""))}</small></td>'
            f'<td>{_rules_cell(summary)}</td>'
            f'<td><a href="reports/{html.escape(summary["report"]["index"])}">report</a></td>'
            f'<td>{_decision_cell(summary, status)}</td></tr>')
    note = f'<p class="note">{html.escape(message)}</p>' if message else ""
    title = f"Data validation runs{f' of {html.escape(dataset)}' if dataset else ''}"
    return HTMLResponse(
        f"<html><head><title>{title}</title><style>{PAGE_STYLE}</style></head><body><h1>{title}</h1>{note}"
        "<p>Newest first. Runs that broke only <b>warn</b> rules wait for a data steward: Approve trains on the "
        "data, Reject stops the run. <b>error</b> rules stop the run on their own.</p><table><tr><th>dataset</th>"
        "<th>pipeline run</th><th>status</th><th>broken rules</th><th>report</th><th>decision</th></tr>"
        f"{''.join(rows) or '<tr><td colspan=6>no validation runs yet</td></tr>'}</table></body></html>")


def _same_origin(request: Request) -> bool:
    """Forms post with the login cookie: refuse posts from other sites (CSRF)."""
    origin = request.headers.get("origin") or request.headers.get("referer") or ""
    return origin.startswith(f"{request.url.scheme}://{request.url.netloc}")


@app.post("/decide")
def decide(request: Request, dag_id: str = Form(...), run_id: str = Form(...),
           decision: str = Form(...)) -> RedirectResponse:
    """Answer the run's steward_review task through Airflow's own API, as the logged-in user."""
    import json
    import urllib.error
    import urllib.parse
    import urllib.request

    from airflow.configuration import conf

    if decision not in ("Approve", "Reject"):
        raise HTTPException(status_code=400, detail="decision must be Approve or Reject")
    if not _same_origin(request):
        raise HTTPException(status_code=403, detail="cross-site form post refused")
    token = request.cookies.get("_token") or request.headers.get("authorization", "").removeprefix("Bearer ")
    base = conf.get("api", "base_url", fallback="http://127.0.0.1:8080").rstrip("/")
    path = (f"/api/v2/dags/{urllib.parse.quote(dag_id, safe='')}/dagRuns/{urllib.parse.quote(run_id, safe='')}"
            "/taskInstances/steward_review/-1/hitlDetails")
    call = urllib.request.Request(f"{base}{path}", method="PATCH", data=json.dumps(
        {"chosen_options": [decision], "params_input": {}}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(call, timeout=30):
            message = f"{decision} sent for {dag_id} / {run_id}: the pipeline resumes in a few seconds."
    except urllib.error.HTTPError as error:
        detail = error.read()[:300].decode(errors="replace")
        message = f"{decision} for {dag_id} / {run_id} was refused by Airflow (HTTP {error.code}): {detail}"
    return RedirectResponse(f"stewards?{urllib.parse.urlencode({'message': message})}", status_code=303)


class AIFactoryPlugin(AirflowPlugin):
    name = "ai_factory"
    fastapi_apps = [  # noqa: RUF012 (Airflow reads this class attribute)
        {"app": app, "url_prefix": "/factory", "name": "AI Factory reports and jobs"}]
    external_views = [  # noqa: RUF012 (Airflow reads this class attribute)
        {"name": "Data stewards", "href": "/factory/stewards", "destination": "nav", "category": "browse"}]
