"""/docs and /redoc work without internet: a real headless Chromium whose network is
cut off (every host but 127.0.0.1 unresolvable, everything else sent to a dead
proxy) renders every operation from files this service serves itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from evaluation.live_server import LiveServer, free_port, live_server
from service.api.docs import ASSETS_PACKAGE
from tests.service.test_web_page import CHROMEDRIVER, CHROMIUM

WAIT_S = 30.0
DEAD_PROXY = f"http://127.0.0.1:{free_port()}"  # nothing listens: no request gets out


def swagger_ui_version(bundle: str) -> tuple[int, ...]:
    found = re.search(r'PACKAGE_VERSION:"(\d+)\.(\d+)\.(\d+)"', bundle)
    assert found, "no version string in the Swagger UI bundle"
    return tuple(int(part) for part in found.groups())


def test_the_bundled_swagger_ui_renders_openapi_3_1(client: TestClient) -> None:
    """Swagger UI 4 shows "Unable to render this definition" for OpenAPI 3.1."""
    assert client.get("/openapi.json").json()["openapi"].startswith("3.1")
    bundle = client.get("/docs-assets/swagger-ui-bundle.js")
    assert bundle.status_code == 200
    assert bundle.headers["content-type"].startswith(("application/javascript", "text/javascript"))
    assert swagger_ui_version(bundle.text) >= (5, 0, 0)
    redoc = client.get("/docs-assets/redoc.standalone.js").text
    assert re.search(r'"2\.\d+\.\d+"', redoc), "ReDoc 2 (OpenAPI 3.1) expected"
    assert ASSETS_PACKAGE[0] == "fastapi_offline"  # an installed, maintained package


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_the_pages_reference_only_this_origin(client: TestClient, path: str) -> None:
    html = client.get(path).text
    assert not re.search(r"(src|href|url)\W+(https?:)?//", html), html
    for asset in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert client.get(asset).status_code == 200, asset


def browser_test(test: Callable[..., None]) -> Callable[..., None]:
    marks = [
        pytest.mark.slow,
        pytest.mark.timeout(180),
        pytest.mark.skipif(
            not (CHROMIUM and Path(CHROMEDRIVER).exists()),
            reason="needs Debian packages chromium and chromium-driver",
        ),
    ]
    for mark in marks:
        test = mark(test)
    return test


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("docs")) as live:
        yield live


@pytest.fixture(scope="module")
def offline_browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        "--window-size=1200,900",
        # The network is unreachable: no name resolves except the loopback address,
        # and anything that would still go out is sent to a proxy that does not exist.
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        f"--proxy-server={DEAD_PROXY}",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-offline')}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_S)
    driver.set_script_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def outside_requests(driver: webdriver.Chrome, origin: str) -> list[str]:
    """URLs the page asked for outside `origin` since the last call (Chrome's network
    events), except those its Content-Security-Policy stopped before they were sent."""
    entries: list[dict[str, Any]] = driver.get_log("performance")  # type: ignore[no-untyped-call]
    asked: dict[str, str] = {}
    stopped: set[str] = set()
    for entry in entries:
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message["method"] == "Network.requestWillBeSent":
            asked[params["requestId"]] = params["request"]["url"]
        elif message["method"] == "Network.loadingFailed" and params.get("blockedReason") == "csp":
            stopped.add(params["requestId"])
    return [
        url
        for request, url in asked.items()
        if request not in stopped and not url.startswith((origin, "data:", "blob:"))
    ]


def documented_operations(server: LiveServer) -> set[str]:
    paths = httpx.get(server.url + "/openapi.json", timeout=10).json()["paths"]
    return {f"{method.upper()} {path}" for path, item in paths.items() for method in item}


@browser_test
def test_the_browser_really_is_offline(
    server: LiveServer, offline_browser: webdriver.Chrome
) -> None:
    offline_browser.get(server.url + "/healthz")
    outcome = offline_browser.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        fetch("https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css", {mode: "no-cors"})
          .then(() => done("reached"), () => done("unreachable"));
        """
    )
    assert outcome == "unreachable"


@browser_test
def test_docs_lists_every_operation(server: LiveServer, offline_browser: webdriver.Chrome) -> None:
    outside_requests(offline_browser, server.url)  # start with an empty network log
    offline_browser.get(server.url + "/docs")
    wait = WebDriverWait(offline_browser, WAIT_S)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"))
    shown = set()
    for block in offline_browser.find_elements(By.CSS_SELECTOR, ".opblock"):
        method = block.find_element(By.CSS_SELECTOR, ".opblock-summary-method").text
        path = block.find_element(By.CSS_SELECTOR, ".opblock-summary-path")
        shown.add(f"{method} {path.get_attribute('data-path')}")
    assert shown == documented_operations(server)
    assert "POST /v1/preprocess" in shown
    errors = offline_browser.find_elements(By.CSS_SELECTOR, ".errors-wrapper")
    assert not errors, errors[0].text
    offline_browser.save_screenshot("/tmp/docs-offline.png")
    assert outside_requests(offline_browser, server.url) == []


@browser_test
def test_redoc_renders_the_operations(
    server: LiveServer, offline_browser: webdriver.Chrome
) -> None:
    outside_requests(offline_browser, server.url)
    offline_browser.get(server.url + "/redoc")
    wait = WebDriverWait(offline_browser, WAIT_S)
    wait.until(lambda d: "See the 28x28 image the model receives" in d.page_source)
    text = offline_browser.find_element(By.TAG_NAME, "body").text
    assert "Recognise the digit in one image" in text
    assert "Something went wrong" not in text
    assert outside_requests(offline_browser, server.url) == []
