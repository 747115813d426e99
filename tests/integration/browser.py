"""A real headless Chromium logged in to the Airflow UI, for end-to-end tests of UI and plugin pages.

The login goes through the real SimpleAuthManager form at ``/auth/login`` (what a user does): its
page POSTs the credentials to ``/auth/token`` and stores the JWT in the ``_token`` cookie (path
``/``, not HttpOnly), which the Airflow UI, ``/api/v2`` and plugin FastAPI apps behind
``requires_authenticated()`` all accept. Debian's chromium and chromedriver are used as installed
(``stack/install.sh``): Selenium Manager is never asked, so nothing is downloaded.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
TOKEN_COOKIE = "_token"  # airflow.api_fastapi.auth.managers.base_auth_manager.COOKIE_NAME_JWT_TOKEN

# Root without a display: no setuid sandbox, no X, and /dev/shm may be tiny (containers).
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1024",
                  "--no-first-run", "--disable-background-networking", "--disable-component-update")

# The login form's failure alert reads "<HTTP status> <reason>" then the detail, e.g. "401 Unauthorized".
_LOGIN_ERROR = re.compile(r"^\d{3} ")


def missing_binaries() -> list[str]:
    """The browser binaries that are not installed, so a caller can skip with a precise reason."""
    return [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.is_file()]


class _Chromium(webdriver.Chrome):
    """Chrome driver that owns a throw-away profile: ``quit()`` also deletes it, so no state leaks."""

    def __init__(self, profile_dir: str, **kwargs: Any) -> None:
        self._profile_dir = profile_dir
        super().__init__(**kwargs)

    def quit(self) -> None:
        try:
            super().quit()
        finally:
            shutil.rmtree(self._profile_dir, ignore_errors=True)


# Offline as at an HPC site: every request that is not to the loopback range goes to a proxy that is not
# there (port 9, discard), so it fails; loopback addresses bypass proxies in Chromium.
# Names are resolved by the proxy, so no lookup leaves the machine either.
OFFLINE_FLAGS = ("--proxy-server=http://127.0.0.1:9",)


def start_chromium(timeout_s: float = 30.0, offline: bool = False) -> WebDriver:
    """A fresh headless Chromium with its own temporary profile (removed by ``quit()``). ``offline``: only
    the loopback range is reachable, and every request the pages make is recorded (``requests_made``)."""
    profile_dir = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, *(OFFLINE_FLAGS if offline else ()), f"--user-data-dir={profile_dir}"):
        options.add_argument(flag)
    if offline:
        options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    try:
        # An explicit driver path makes Selenium skip Selenium Manager (which would try the network).
        driver = _Chromium(profile_dir, service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    except BaseException:
        shutil.rmtree(profile_dir, ignore_errors=True)
        raise
    driver.set_page_load_timeout(timeout_s)
    driver.set_script_timeout(timeout_s)
    return driver


def fetch(driver: WebDriver, path: str, method: str = "GET") -> tuple[int, str]:
    """HTTP status and body of ``path`` requested by the page itself, so with the browser's own login.

    Navigation through WebDriver hides the HTTP status; a same-origin ``fetch`` sends the ``_token``
    cookie exactly as the UI does and reports the status.
    """
    result = driver.execute_async_script(
        "const [path, method, done] = arguments;"
        "fetch(path, {method, credentials: 'same-origin'})"
        "  .then(async r => done([r.status, await r.text()]))"
        "  .catch(e => done([0, String(e)]));", path, method)
    return int(result[0]), str(result[1])


def login(driver: WebDriver, airflow_url: str, username: str, password: str, timeout_s: float = 30.0) -> None:
    """Sign in through the UI's login form and wait until the UI is back with the ``_token`` cookie."""
    base = airflow_url.rstrip("/")
    driver.get(f"{base}/")  # the UI sends an anonymous visitor to /auth/login?next=/
    wait = WebDriverWait(driver, timeout_s)
    try:
        wait.until(lambda d: d.find_elements(By.NAME, "username"))
    except TimeoutException:
        raise RuntimeError(f"no login form at {driver.current_url} after {timeout_s} s") from None
    driver.find_element(By.NAME, "username").send_keys(username)
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()

    def signed_in_or_refused(d: WebDriver) -> str | bool:
        if d.get_cookie(TOKEN_COOKIE) and not urlsplit(d.current_url).path.startswith("/auth/"):
            return True
        refusals = [alert.text for alert in d.find_elements(By.CSS_SELECTOR, ".chakra-alert__description")
                    if _LOGIN_ERROR.match(alert.text)]
        return refusals[0] if refusals else False

    try:
        outcome = wait.until(signed_in_or_refused)
    except TimeoutException:
        page = driver.find_element(By.TAG_NAME, "body").text[:300]
        raise RuntimeError(f"not logged in after {timeout_s} s at {driver.current_url}: {page!r}") from None
    if outcome is not True:
        raise RuntimeError(f"Airflow refused the login of {username!r}: {' '.join(str(outcome).split())}")


def requests_made(driver: WebDriver) -> list[tuple[str, str | None]]:
    """Every request since the last call, as (URL, error or None), from Chromium's network log."""
    sent, failed = {}, {}
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message["method"] == "Network.requestWillBeSent":
            sent[params["requestId"]] = params["request"]["url"]
        elif message["method"] == "Network.loadingFailed" and not params.get("canceled"):
            failed[params["requestId"]] = params.get("errorText") or "failed"
    return [(url, failed.get(request)) for request, url in sent.items()]


def open_browser(airflow_url: str, username: str, password: str, timeout_s: float = 30.0,
                 offline: bool = False) -> WebDriver:
    """A headless Chromium logged in to Airflow as ``username``; the caller must ``quit()`` it."""
    driver = start_chromium(timeout_s, offline)
    try:
        login(driver, airflow_url, username, password, timeout_s)
    except BaseException:
        driver.quit()
        raise
    return driver

