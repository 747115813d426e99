"""AI Factory pages inside the Airflow API server, behind Airflow's own login:

- ``/factory/reports/<key>``: validation reports (GX Data Docs) from the reports bucket in S3;
- ``/factory/slurm/<conn_id>/jobs/<job_id>``: a Slurm job's state and accounting.
"""

from __future__ import annotations

import html
import mimetypes

from airflow.api_fastapi.core_api.security import requires_authenticated
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Response

REPORTS_BUCKET = "reports"
S3_CONN = "factory_s3"

app = FastAPI(title="AI Factory", dependencies=[Depends(requires_authenticated())])


@app.get("/reports/{key:path}")
def report(key: str) -> Response:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from botocore.exceptions import ClientError

    if ".." in key.split("/"):
        raise HTTPException(status_code=400, detail="no '..' in report paths")
    try:
        obj = S3Hook(aws_conn_id=S3_CONN).get_conn().get_object(Bucket=REPORTS_BUCKET, Key=key)
    except ClientError as error:
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 502)
        raise HTTPException(status_code=404 if status == 404 else 502,
                            detail=f"s3://{REPORTS_BUCKET}/{key}: {error.response['Error'].get('Code')}") from None
    media_type = obj.get("ContentType") or mimetypes.guess_type(key)[0] or "application/octet-stream"
    return Response(content=obj["Body"].read(), media_type=media_type)


@app.get("/slurm/{conn_id}/jobs/{job_id}")
def slurm_job(conn_id: str, job_id: int) -> Response:
    from operators.slurm.hooks import SlurmHook
    from operators.slurm.model import SlurmError

    transport = SlurmHook(conn_id).get_transport()
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


class AIFactoryPlugin(AirflowPlugin):
    name = "ai_factory"
    fastapi_apps = [  # noqa: RUF012 (Airflow reads this class attribute)
        {"app": app, "url_prefix": "/factory", "name": "AI Factory reports and jobs"}]
