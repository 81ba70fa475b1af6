"""Fixtures for driving the console in headless Chromium with Selenium.

``console_server`` runs ``eeghub serve`` as a process against the real
services (PostgreSQL, RabbitMQ, SeaweedFS S3); ``browser`` is a Chromium
session whose pages are screenshotted into ``.ci/logs/screenshots/`` when a
test fails (or always, with ``EEGHUB_TEST_SCREENSHOTS=always``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import local_env, services_env  # noqa: F401 - fixtures used here
from tests.fixtures.services import unavailable

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / ".ci" / "logs" / "screenshots"
ADMIN = "lab-admin"


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, base: str, env: dict[str, str], log: Path) -> None:
        self.base, self.env, self.log = base, env, log


@contextmanager
def serve(env_vars: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    """``eeghub serve`` on a free port with ``env_vars``, until healthy."""
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("EEGHUB_")}, **env_vars}
    log = tmp_path / f"server-{port}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "eeghub.cli", "serve", "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the server never became healthy:\n" + log.read_text()[-3000:]
            time.sleep(0.2)
        yield Server(base, env, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def console_server(services_env: dict[str, str], tmp_path: Path) -> Iterator[Server]:  # noqa: F811
    """On the real PostgreSQL, RabbitMQ and S3, with an administrator and a
    fast analyzer (results every second, coherence over 8 s)."""
    env = {
        **services_env,
        "EEGHUB_AUTH__ADMIN_USERS": ADMIN,
        "EEGHUB_ANALYZER__INTERVAL_SECONDS": "1",
        "EEGHUB_ANALYZER__COHERENCE_WINDOW_SECONDS": "8",
    }
    with serve(env, tmp_path) as server:
        yield server


def chromium_paths() -> tuple[str, str]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not binary or not driver:
        unavailable("chromium", "chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    return binary, driver  # type: ignore[return-value]


class Browser:
    """A Chromium session with a few waits the tests share."""

    def __init__(self, driver: Any, base: str, downloads: Path, name: str) -> None:
        self.driver, self.base, self.downloads, self.name = driver, base, downloads, name
        self.shots: list[Path] = []

    def open(self, path: str) -> None:
        """Load a page and wait until its script has attached its handlers."""
        self.driver.get(self.base + path)
        self.wait_ready()

    def wait_ready(self) -> None:
        self.wait(lambda d: d.execute_script("return document.body && document.body.dataset.ready === '1'"),
                  message="the page's script never became ready")

    def wait(self, condition: Any, timeout: float = 30, message: str = "") -> Any:
        from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        # Live pages redraw their plots: an element found a moment ago may be
        # replaced before it is read; the condition is then tried again.
        ignored = (NoSuchElementException, StaleElementReferenceException)
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.2, ignored_exceptions=ignored).until(condition, message)
        except TimeoutException as exc:
            raise AssertionError(f"{message or 'timed out'} after {timeout} s; the page shows:\n{self.page_text()}") from exc

    def css(self, selector: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def all(self, selector: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.CSS_SELECTOR, selector))

    def visible(self, selector: str, timeout: float = 30) -> Any:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec

        return self.wait(ec.visibility_of_element_located((By.CSS_SELECTOR, selector)), timeout, f"{selector} never became visible")

    def text_in(self, selector: str, text: str, timeout: float = 30) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec

        self.wait(ec.text_to_be_present_in_element((By.CSS_SELECTOR, selector), text), timeout, f"{text!r} never appeared in {selector}")

    def page_text(self) -> str:
        return str(self.driver.execute_script("return document.body.innerText"))[:1500]

    def sign_in(self, user: str) -> None:
        self.open("/console/sign-in")
        self.driver.execute_script("sessionStorage.clear()")
        self.driver.refresh()
        self.wait_ready()
        field = self.visible("#user-id")
        field.clear()
        field.send_keys(user)
        self.css("#sign-in-form button[type=submit]").click()
        self.text_in("#who", user)
        self.wait_ready()

    def shot(self, label: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{self.name}-{len(self.shots):02d}-{label}.png"
        # The whole page, not only the viewport: grow the window to the page.
        self.driver.execute_script("window.scrollTo(0, 0)")
        size = self.driver.get_window_size()
        height = int(self.driver.execute_script("return document.documentElement.scrollHeight"))
        self.driver.set_window_size(size["width"], min(max(height, size["height"]), 5000))
        try:
            self.driver.save_screenshot(str(path))
        finally:
            self.driver.set_window_size(size["width"], size["height"])
        self.shots.append(path)
        return path

    def foreign_references(self) -> list[str]:
        """Everything the page loaded or links to that is not this server
        (resource timing entries and every src/href in the DOM)."""
        return list(self.driver.execute_script(
            """const urls = performance.getEntriesByType('resource').map(e => e.name)
                 .concat([...document.querySelectorAll('[src],[href]')].map(e => e.src || e.href));
               return urls.filter(u => u && !u.startsWith(location.origin + '/') && !u.startsWith('blob:' + location.origin));"""
        ))

    def console_errors(self) -> list[str]:
        try:
            entries = self.driver.get_log("browser")
        except Exception:  # noqa: BLE001 - not every driver keeps the log
            return []
        return [e["message"] for e in entries if e.get("level") == "SEVERE"]


@pytest.fixture
def browser_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """``browser_factory(base, width=1280, height=900)``: a new Chromium session."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = chromium_paths()
    made: list[Browser] = []

    def make(base: str, width: int = 1280, height: int = 900) -> Browser:
        downloads = tmp_path / f"downloads-{len(made)}"
        downloads.mkdir()
        options = webdriver.ChromeOptions()
        options.binary_location = binary
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    f"--window-size={width},{height}", "--no-first-run", "--disable-extensions"):
            options.add_argument(arg)
        options.add_experimental_option("prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False})
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(options=options, service=Service(driver_path))
        driver.set_page_load_timeout(30)
        name = f"{request.node.name}-{len(made)}"
        browser = Browser(driver, base, downloads, name)
        made.append(browser)
        return browser

    yield make
    failed = any(getattr(request.node, f"report_{w}", None) is not None and getattr(request.node, f"report_{w}").failed for w in ("setup", "call"))
    for browser in made:
        try:
            if failed or os.environ.get("EEGHUB_TEST_SCREENSHOTS") == "always":
                browser.shot("final")
        finally:
            browser.driver.quit()
    if not failed and os.environ.get("EEGHUB_TEST_SCREENSHOTS") != "always":
        for browser in made:  # kept only when a test fails (CI keeps .ci/logs as artefacts)
            for path in browser.shots:
                path.unlink(missing_ok=True)
