"""The ``browser`` fixture is a real, logged-in Airflow UI session (the base of the plugin page e2e tests)."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.integration.browser import TOKEN_COOKIE, fetch


def test_browser_is_logged_in_to_the_airflow_ui(browser: WebDriver, stack_info: dict) -> None:
    """Home renders the UI's navigation (not the login form) and the page's own API calls are authorised."""
    base = stack_info["airflow"]["url"].rstrip("/")
    browser.get(f"{base}/")
    # The navigation only exists in the logged-in UI; an anonymous visitor is sent to /auth/login.
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "a[href$='/dags']"))
    assert not urlsplit(browser.current_url).path.startswith("/auth/"), browser.current_url
    assert not browser.find_elements(By.NAME, "password"), "the login form is showing"
    assert browser.get_cookie(TOKEN_COOKIE), f"no {TOKEN_COOKIE} cookie after the login"

    status, body = fetch(browser, "/api/v2/version")
    assert status == 200, body
    assert json.loads(body)["version"].startswith("3.")


def test_plugin_page_accepts_the_browser_login(browser: WebDriver) -> None:
    """``requires_authenticated()`` in the /factory plugin app takes the UI's ``_token`` cookie.

    So the request reaches the app: its own 404 for a missing report (502 if S3 is unreachable),
    never Airflow's 401 "Not authenticated" / 403 "Invalid JWT token".
    """
    status, body = fetch(browser, "/factory/reports/does-not-exist")
    assert status in (404, 502), f"HTTP {status}: {body}"
    assert json.loads(body)["detail"].startswith("s3://reports/does-not-exist"), body
