"""Validation reports that render offline: GX Data Docs with their CDN assets served from our own origin.

GX 1.x writes pages that load Bootstrap, jQuery, Popper, bootstrap-table, Font Awesome, a date picker,
Vega and a logo from five CDNs. HPC sites and their users are often without Internet access, where those
pages render nearly empty. The same files, pinned to the versions GX asks for, are installed from npm
(``plugins/report_assets/package-lock.json``) and served at ``/factory/assets/``; the reports route
rewrites each page and style sheet as it serves them, so reports already in S3 are fixed too.
Imports no Airflow.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

ASSETS_ROUTE = "assets"  # under the plugin's /factory
# What GX 1.x asks a CDN for → the same file in its npm package (installed under node_modules).
CDN_FILES = {
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": "bootstrap/dist/css/bootstrap.min.css",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": "bootstrap/dist/js/bootstrap.min.js",
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery/dist/jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": "popper.js/dist/umd/popper.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css":
        "@fortawesome/fontawesome-free/css/all.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css":
        "bootstrap-datepicker/dist/css/bootstrap-datepicker.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js":
        "bootstrap-datepicker/dist/js/bootstrap-datepicker.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css":
        "bootstrap-table/dist/bootstrap-table.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js":
        "bootstrap-table/dist/bootstrap-table.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js":
        "bootstrap-table/dist/extensions/filter-control/bootstrap-table-filter-control.min.js",
    # GX names 1.19.0 for this one file; 1.19.1's is the same extension
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css":
        "bootstrap-table/dist/extensions/filter-control/bootstrap-table-filter-control.min.css",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css":
        "bootstrap-table/dist/extensions/filter-control/bootstrap-table-filter-control.css",
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css":
        "@forevolve/bootstrap-dark/dist/css/bootstrap-prefers-dark.css",
    "https://cdn.jsdelivr.net/npm/vega@5": "vega/build/vega.min.js",  # jsDelivr serves the package's "jsdelivr" file
    "https://cdn.jsdelivr.net/npm/vega-lite@5": "vega-lite/build/vega-lite.min.js",
    "https://cdn.jsdelivr.net/npm/vega-embed@6": "vega-embed/build/vega-embed.min.js",
}
# GX's logos from its S3 bucket: the navigation bar's carries the time and the data context's id (a usage
# beacon), the style sheet's is a dark variant. Both become the logo GX ships in its package.
GX_WEB_ASSETS = re.compile(r"https://great-expectations-web-assets\.s3\.us-east-2\.amazonaws\.com/"
                           r"([A-Za-z0-9_.-]+)(?:\?[^\"')\s]*)?")
GX_IMAGES = "great_expectations/images/"  # served from great_expectations/render/view/static/images
GX_LOGO = "logo-long.png"


def npm_package(path: str) -> str:
    """``@scope/name`` or ``name``: the package a path under node_modules belongs to."""
    parts = path.split("/")
    return "/".join(parts[:2]) if path.startswith("@") else parts[0]


PACKAGES = frozenset(npm_package(path) for path in CDN_FILES.values())
SERVED_SUFFIXES = frozenset({".css", ".js", ".woff", ".woff2", ".ttf", ".eot", ".svg", ".png", ".gif"})
# Subresource integrity and CORS mode only make sense for the CDN copies: the files are now same-origin.
_CDN_ATTRIBUTES = re.compile(r'\s+(?:integrity="[^"]*"|crossorigin="[^"]*")')
_CDN_URL = re.compile("|".join(re.escape(url) for url in sorted(CDN_FILES, key=len, reverse=True)))


def gx_static_folder() -> Path:
    """GX's own static files (logos), found without importing GX (seconds in the API server)."""
    import importlib.util

    spec = importlib.util.find_spec("great_expectations")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("great_expectations is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "render" / "view" / "static"


def assets_prefix(report_key: str) -> str:
    """The relative way from a report page at ``/factory/reports/<report_key>`` to ``/factory/assets/``,
    so pages work under any base URL of the API server."""
    return "../" * (report_key.count("/") + 1) + ASSETS_ROUTE + "/"


def offline_page(text: str, report_key: str) -> str:
    """A Data Docs page or style sheet with every CDN URL pointing at our own copy of the same file."""
    prefix = assets_prefix(report_key)
    text = _CDN_URL.sub(lambda match: prefix + CDN_FILES[match.group(0)], text)
    text = GX_WEB_ASSETS.sub(prefix + GX_IMAGES + GX_LOGO, text)
    return _CDN_ATTRIBUTES.sub("", text)


def asset_file(npm_root: Path, gx_static: Path, path: str) -> Path | None:
    """The installed file for ``/factory/assets/<path>``: only inside a package that serves the reports
    (or GX's own images), only of a web kind, never through a link or ``..``; None otherwise."""
    parts = PurePosixPath(path).parts
    if not parts or ".." in parts or path.startswith("/") or PurePosixPath(path).suffix not in SERVED_SUFFIXES:
        return None
    if path.startswith(GX_IMAGES):
        return _inside(gx_static / "images", path.removeprefix(GX_IMAGES))
    if npm_package(path) not in PACKAGES:
        return None
    return _inside(npm_root, path)


def _inside(root: Path, path: str) -> Path | None:
    parts = PurePosixPath(path).parts
    candidate = root.joinpath(*parts)
    try:
        resolved = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not resolved.is_file() or not resolved.is_relative_to(root.resolve()) or candidate.is_symlink():
        return None
    return resolved
