"""The catalogue of AI-factory sites (``sites/*.yaml``) and checks of job requests against a site.

Imports without Airflow, mlflow, great_expectations or dvc: specs are checked at DAG parse time.
"""

from operators.sites.catalogue import (
    API_VERSION,
    SITES_DIR,
    Site,
    SiteError,
    format_walltime,
    load_catalogue,
    load_site,
)
from operators.sites.request import account_directive, check_request, gpu_directives
from operators.units import slurm_time_seconds as walltime_seconds

__all__ = [
    "API_VERSION",
    "SITES_DIR",
    "Site",
    "SiteError",
    "account_directive",
    "check_request",
    "format_walltime",
    "gpu_directives",
    "load_catalogue",
    "load_site",
    "walltime_seconds",
]
