"""Data Docs pages without the Internet: every CDN file GX asks for is one we serve, at the version it names."""

from __future__ import annotations

import json
import re
from pathlib import Path

import great_expectations
import pytest

from operators.contracts.report_assets import (
    CDN_FILES,
    GX_WEB_ASSETS,
    asset_file,
    assets_prefix,
    gx_static_folder,
    npm_package,
    offline_page,
)

GX_VIEWS = Path(great_expectations.__file__).parent / "render" / "view"
LOCK = Path(__file__).parents[2] / "plugins" / "report_assets" / "package-lock.json"
LOADED = re.compile(r"""(?:src=|href=|url\()['"]?(https?://[^'")\s]+)""")
LINKS_NOT_LOADED = ("https://greatexpectations.io",)  # plain links a reader may click, not loaded by the page


def gx_loads() -> set[str]:
    """Every absolute URL GX's templates and style sheets load (scripts, style sheets, images)."""
    found = set()
    for path in [*GX_VIEWS.joinpath("templates").rglob("*.j2"), *GX_VIEWS.joinpath("static").rglob("*.css")]:
        found |= {url for url in LOADED.findall(path.read_text()) if not url.startswith(LINKS_NOT_LOADED)}
    return found


def test_every_url_gx_loads_has_an_own_copy_so_a_gx_upgrade_that_adds_one_fails_here():
    assert gx_loads(), "no CDN URL found: GX's templates moved"
    unknown = {url for url in gx_loads() if url not in CDN_FILES and not GX_WEB_ASSETS.fullmatch(url)}
    assert not unknown, sorted(unknown)
    # the navigation bar's logo is built from a folder URL in a template variable (a usage beacon)
    navbar = (GX_VIEWS / "templates" / "top_navbar.j2").read_text()
    assert '"https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/"' in navbar


def test_the_lock_pins_each_package_at_the_version_the_cdn_url_names():
    packages = json.loads(LOCK.read_text())["packages"]
    for url, path in CDN_FILES.items():
        version = packages[f"node_modules/{npm_package(path)}"]["version"]
        named = re.search(r"@(\d+(?:\.\d+)*)|/(\d+\.\d+\.\d+)/|-(\d+\.\d+\.\d+)\.min", url)
        assert named, url
        wanted = next(group for group in named.groups() if group)
        if npm_package(path) == "bootstrap-table" and wanted == "1.19.0":
            wanted = "1.19.1"  # GX names 1.19.0 for one extension file only; 1.19.1 ships the same file
        assert version == wanted or version.startswith(wanted + "."), (url, version)


def test_a_page_loads_nothing_from_outside_and_keeps_its_own_links():
    page = "\n".join(f'<script src="{url}" integrity="sha384-x" crossorigin="anonymous"></script>' for url in CDN_FILES)
    beacon = "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/logo-long.png?d=2026&dataContextId=f3"
    dark = "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/full_logo_dark.png"
    page += (f'<a href="https://greatexpectations.io">GX</a><img src="{beacon}">'
             f"<style>a {{background: url('{dark}')}}</style>")
    rewritten = offline_page(page, "validation/ds/rev/run/validations/x.html")
    assert not any(url in rewritten for url in CDN_FILES)
    assert "amazonaws" not in rewritten and "dataContextId" not in rewritten
    assert "integrity=" not in rewritten and "crossorigin=" not in rewritten
    assert 'src="../../../../../../assets/jquery/dist/jquery.min.js"' in rewritten
    assert "https://greatexpectations.io" in rewritten
    assert rewritten.count('../../../../../../assets/great_expectations/images/logo-long.png') == 2


def test_the_way_to_the_assets_is_relative_so_any_base_url_works():
    assert assets_prefix("index.html") == "../assets/"
    assert assets_prefix("validation/ds/index.html") == "../../../assets/"


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    root = tmp_path / "node_modules"
    for path in ("jquery/dist/jquery.min.js", "@fortawesome/fontawesome-free/webfonts/fa-solid-900.woff2",
                 "d3-array/build/d3-array.js", "jquery/package.json"):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text("x")
    (tmp_path / "secret.js").write_text("x")
    (root / "jquery" / "dist" / "link.js").symlink_to(tmp_path / "secret.js")
    return root


def test_only_web_files_of_the_report_packages_are_served(installed: Path):
    gx = gx_static_folder()

    def served(path: str) -> Path | None:
        return asset_file(installed, gx, path)

    assert served("jquery/dist/jquery.min.js") == (installed / "jquery/dist/jquery.min.js").resolve()
    assert served("@fortawesome/fontawesome-free/webfonts/fa-solid-900.woff2")
    assert served("great_expectations/images/logo-long.png") == (gx / "images" / "logo-long.png").resolve()
    for refused in ("d3-array/build/d3-array.js", "jquery/package.json", "jquery/dist/../../../secret.js",
                    "jquery/dist/link.js", "/etc/passwd.js", "", "jquery/dist/missing.js",
                    "great_expectations/styles/data_docs_default_styles.css", "great_expectations/images/../x.png"):
        assert served(refused) is None, refused
