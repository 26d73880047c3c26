"""The draw-a-digit page in a real headless Chromium (Debian's), driven by Selenium.

A person's actions are replayed as pointer events (mouse and touch) on the
canvas against a real server process; every wait is on a DOM condition.
Skipped when Chromium or chromedriver is not installed.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.actions import interaction
from selenium.webdriver.common.actions.pointer_input import PointerInput
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from evaluation.live_server import LiveServer, live_server
from evaluation.samples import load_sample
from tests.conftest import SERVED_VERSION, png_bytes

CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM = next(
    (p for p in ("/usr/lib/chromium/chromium", "/usr/bin/chromium") if Path(p).exists()),
    shutil.which("chromium") or "",
)
WAIT_S = 20.0
SCREENSHOT = Path("/tmp/page.png")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        not (CHROMIUM and Path(CHROMEDRIVER).exists()),
        reason="needs Debian packages chromium and chromium-driver",
    ),
]

# A stroke is a list of (x, y) offsets from the canvas centre, as fractions of its half-size.
Stroke = list[tuple[float, float]]
ONE: list[Stroke] = [[(0.05, -0.7), (0.03, -0.3), (0.0, 0.1), (-0.02, 0.7)]]
SEVEN: list[Stroke] = [
    [(-0.5, -0.6), (0.0, -0.62), (0.5, -0.6), (0.3, -0.15), (0.1, 0.3), (-0.05, 0.7)],
]


def mnist_png(index: int) -> tuple[bytes, int]:
    """Test digit `index` of the committed MNIST sample as a PNG, with its label."""
    images, labels = load_sample()
    return png_bytes(images[index]), int(labels[index])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("web")) as live:
        yield live


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1100,860",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager must not try to download anything.
    service = Service(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(WAIT_S)
    driver.set_script_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def console_log(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    """The browser console since the last call (chromedriver's log API is untyped)."""
    entries: list[dict[str, Any]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return entries


def wait(driver: webdriver.Chrome) -> WebDriverWait[webdriver.Chrome]:
    return WebDriverWait(driver, WAIT_S)


def open_page(driver: webdriver.Chrome, url: str) -> None:
    driver.get(url + "/")
    wait(driver).until(
        lambda d: d.execute_script("return document.documentElement.dataset.ready") == "true"
    )
    console_log(driver)  # start each test with an empty console


def result_seq(driver: webdriver.Chrome) -> int:
    return int(driver.find_element(By.ID, "result").get_attribute("data-seq") or 0)


def wait_for_answer(driver: webdriver.Chrome, after: int) -> str:
    """Wait until a request newer than `after` finished; return the result's state."""
    try:
        wait(driver).until(lambda d: result_seq(d) > after)
    except TimeoutException:
        pytest.fail(f"no answer shown within {WAIT_S}s; console: {console_log(driver)}")
    return driver.find_element(By.ID, "result").get_attribute("data-state") or ""


def draw(driver: webdriver.Chrome, strokes: list[Stroke], *, touch: bool = False) -> None:
    """Replay strokes on the canvas with a mouse or a finger (pointer events)."""
    canvas = driver.find_element(By.ID, "pad")
    half_w = canvas.size["width"] / 2 - 4
    half_h = canvas.size["height"] / 2 - 4
    kind = interaction.POINTER_TOUCH if touch else interaction.POINTER_MOUSE
    device = PointerInput(kind, "finger" if touch else "mouse")  # type: ignore[no-untyped-call]
    actions = ActionChains(driver, duration=10, devices=[device])
    for stroke in strokes:
        (x0, y0), *rest = stroke
        actions.move_to_element_with_offset(canvas, round(x0 * half_w), round(y0 * half_h))
        actions.click_and_hold()
        for (xa, ya), (xb, yb) in zip(stroke, rest, strict=False):
            for step in range(1, 7):  # several moves per segment: a smooth stroke
                t = step / 6
                x, y = xa + (xb - xa) * t, ya + (yb - ya) * t
                actions.move_to_element_with_offset(canvas, round(x * half_w), round(y * half_h))
        actions.release()
    actions.perform()


def shown_digit(driver: webdriver.Chrome) -> str:
    return driver.find_element(By.ID, "digit").text


def bars(driver: webdriver.Chrome) -> list[WebElement]:
    return driver.find_elements(By.CSS_SELECTOR, "#chart li")


def bar_heights(driver: webdriver.Chrome) -> list[float]:
    heights: list[float] = driver.execute_script(
        "return [...document.querySelectorAll('#chart .bar')]"
        ".map(b => b.getBoundingClientRect().height)"
    )
    return heights


def severe_console_messages(driver: webdriver.Chrome) -> list[str]:
    """Console errors (a CSP violation or a script error would show up here)."""
    return [
        entry["message"]
        for entry in console_log(driver)
        if entry["level"] == "SEVERE"
        and "v1/predict" not in entry["message"]
        and "v1/preprocess" not in entry["message"]
    ]


def clear(driver: webdriver.Chrome) -> None:
    driver.find_element(By.ID, "clear").click()
    wait(driver).until(
        lambda d: d.find_element(By.ID, "result").get_attribute("data-state") == "idle"
    )


def a(digit: int) -> str:
    return f"an {digit}" if digit == 8 else f"a {digit}"


def assert_prediction(driver: webdriver.Chrome, digit: int) -> None:
    assert shown_digit(driver) == str(digit)
    headline = driver.find_element(By.ID, "headline").text
    assert headline == f"It's {a(digit)}"
    assert "% confident" in driver.find_element(By.ID, "detail").text
    assert not driver.find_element(By.ID, "error").is_displayed()
    items = bars(driver)
    assert len(items) == 10
    targets: list[str] = driver.execute_script(
        "return [...document.querySelectorAll('#chart .bar')].map(b => b.style.height)"
    )
    assert max(targets, key=lambda height: float(height.rstrip("%"))) == targets[digit]
    # The bars grow with a short CSS transition: wait for the drawn chart to agree.
    wait(driver).until(lambda d: max(heights := bar_heights(d)) == heights[digit] > 20)
    top = driver.find_elements(By.CSS_SELECTOR, "#chart li.top .lbl")
    assert [element.text for element in top] == [str(digit)]


def test_page_is_served_with_a_strict_policy(server: LiveServer) -> None:
    response = httpx.get(server.url + "/", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert not re.search(r"(src|href|url)\W+(https?:)?//", response.text)  # nothing external
    again = httpx.get(
        server.url + "/", headers={"If-None-Match": response.headers["etag"]}, timeout=10
    )
    assert again.status_code == 304


@pytest.mark.parametrize(("digit", "strokes", "touch"), [(1, ONE, False), (7, SEVEN, True)])
def test_drawing_a_digit_shows_its_prediction(
    server: LiveServer,
    browser: webdriver.Chrome,
    digit: int,
    strokes: list[Stroke],
    touch: bool,
) -> None:
    open_page(browser, server.url)
    assert len(bars(browser)) == 10
    before = result_seq(browser)
    draw(browser, strokes, touch=touch)  # no click: the page predicts when the stroke ends
    assert wait_for_answer(browser, before) == "done", browser.find_element(By.ID, "error").text
    assert_prediction(browser, digit)
    browser.save_screenshot(str(SCREENSHOT))
    assert severe_console_messages(browser) == []


def test_choosing_an_image_file_shows_its_prediction(
    server: LiveServer, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    png, label = mnist_png(0)
    path = tmp_path / "mnist-0.png"
    path.write_bytes(png)
    open_page(browser, server.url)
    draw(browser, ONE)
    wait_for_answer(browser, 0)
    before = result_seq(browser)
    browser.find_element(By.ID, "file").send_keys(str(path))
    assert wait_for_answer(browser, before) == "done", browser.find_element(By.ID, "error").text
    assert_prediction(browser, label)
    assert browser.find_element(By.ID, "preview").is_displayed()
    assert browser.find_element(By.ID, "file-name").text == "mnist-0.png"
    ink = browser.find_element(By.ID, "pad-wrap").get_attribute("class") or ""
    assert "has-ink" not in ink  # the old drawing went: the answer is about the file
    assert severe_console_messages(browser) == []


def test_dropping_an_image_file_shows_its_prediction(
    server: LiveServer, browser: webdriver.Chrome
) -> None:
    png, label = mnist_png(1)
    open_page(browser, server.url)
    before = result_seq(browser)
    # WebDriver cannot drag from the desktop; dispatch the same DOM events a drop makes.
    browser.execute_script(
        """
        const bytes = Uint8Array.from(atob(arguments[0]), c => c.charCodeAt(0));
        const data = new DataTransfer();
        data.items.add(new File([bytes], "dropped.png", {type: "image/png"}));
        const zone = document.getElementById("drop");
        zone.dispatchEvent(new DragEvent("dragover", {dataTransfer: data, bubbles: true}));
        zone.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true}));
        """,
        base64.b64encode(png).decode("ascii"),
    )
    assert wait_for_answer(browser, before) == "done", browser.find_element(By.ID, "error").text
    assert_prediction(browser, label)
    assert browser.find_element(By.ID, "file-name").text == "dropped.png"


def test_blank_canvas_shows_the_service_error(
    server: LiveServer, browser: webdriver.Chrome
) -> None:
    open_page(browser, server.url)
    draw(browser, ONE)
    wait_for_answer(browser, 0)
    clear(browser)
    assert shown_digit(browser) == "?"
    before = result_seq(browser)
    browser.find_element(By.ID, "predict").click()
    assert wait_for_answer(browser, before) == "error"
    error = browser.find_element(By.ID, "error")
    assert error.is_displayed()
    assert error.get_attribute("role") == "alert"
    assert "blank" in error.text
    assert "422" in browser.find_element(By.ID, "detail").text
    assert max(bar_heights(browser)) <= 2  # no stale chart next to an error
    browser.save_screenshot(str(SCREENSHOT.with_name("page-error.png")))


def test_api_key_is_sent_and_remembered(browser: webdriver.Chrome, tmp_path: Path) -> None:
    with live_server(tmp_path, env={"MNIST_API_KEYS": "page-secret"}) as locked:
        open_page(browser, locked.url)
        browser.execute_script("localStorage.clear()")
        browser.refresh()
        wait(browser).until(
            lambda d: d.execute_script("return document.documentElement.dataset.ready") == "true"
        )
        before = result_seq(browser)
        draw(browser, ONE)
        assert wait_for_answer(browser, before) == "error"
        assert "API key" in browser.find_element(By.ID, "error").text
        key_field = browser.find_element(By.ID, "api-key")
        assert key_field.is_displayed()  # the settings opened themselves on a 401
        key_field.send_keys("page-secret")

        browser.refresh()  # the key survives a reload (localStorage)
        wait(browser).until(
            lambda d: d.find_element(By.ID, "api-key").get_attribute("value") == "page-secret"
        )
        before = result_seq(browser)
        draw(browser, ONE)
        assert wait_for_answer(browser, before) == "done"
        assert_prediction(browser, 1)
        stored = browser.execute_script("return JSON.stringify(localStorage)")
        assert json.loads(stored) == {"mnist-serve.api-key": "page-secret"}


def assert_model_view(driver: webdriver.Chrome) -> None:
    """The 28x28 image the model received, shown enlarged with crisp pixels."""
    wait(driver).until(lambda d: d.find_element(By.ID, "seen-box").is_displayed())
    seen = driver.find_element(By.ID, "seen")
    wait(driver).until(lambda d: d.execute_script("return arguments[0].complete", seen))
    natural = driver.execute_script(
        "return [arguments[0].naturalWidth, arguments[0].naturalHeight]", seen
    )
    assert natural == [28, 28]
    assert seen.size["width"] >= 4 * 28 - 1  # enlarged at least 4x
    assert seen.value_of_css_property("image-rendering") == "pixelated"
    caption = driver.find_element(By.ID, "seen-box").text
    assert "What the model saw" in caption
    assert f"Answered by model mnist-mlp v{SERVED_VERSION}." in caption


def test_the_page_shows_what_the_model_saw(server: LiveServer, browser: webdriver.Chrome) -> None:
    open_page(browser, server.url)
    before = result_seq(browser)
    draw(browser, SEVEN, touch=True)
    assert wait_for_answer(browser, before) == "done", browser.find_element(By.ID, "error").text
    assert_prediction(browser, 7)
    assert_model_view(browser)
    assert not browser.find_element(By.ID, "unsure").is_displayed()
    browser.save_screenshot(str(SCREENSHOT.with_name("page-model-view.png")))
    clear(browser)
    assert not browser.find_element(By.ID, "seen-box").is_displayed()
    assert severe_console_messages(browser) == []


def an_uncertain_upload(server: LiveServer) -> tuple[bytes, dict[str, Any]]:
    """A blend of two different MNIST digits that the service marks uncertain."""
    images, labels = load_sample()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for index in range(0, 200, 2):
            if labels[index] == labels[index + 1]:
                continue
            body = png_bytes(np.maximum(images[index], images[index + 1]))
            answer = client.post("/v1/predict", files={"file": ("b.png", body, "image/png")})
            if answer.json()["uncertain"]:
                return body, answer.json()
    pytest.fail("no blend of two digits was marked uncertain")


def test_an_uncertain_answer_says_so_and_suggests_a_retake(
    server: LiveServer, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    body, answer = an_uncertain_upload(server)
    top = answer["digit"]
    second = sorted(range(10), key=lambda d: answer["probabilities"][d])[-2]
    path = tmp_path / "blend.png"
    path.write_bytes(body)
    open_page(browser, server.url)
    before = result_seq(browser)
    browser.find_element(By.ID, "file").send_keys(str(path))
    assert wait_for_answer(browser, before) == "done"
    assert browser.find_element(By.ID, "result").get_attribute("data-uncertain") == "true"
    assert browser.find_element(By.ID, "headline").text == f"Maybe {a(top)}, or {a(second)}"
    unsure = browser.find_element(By.ID, "unsure")
    assert unsure.is_displayed()
    assert f"It could be {a(top)} (" in unsure.text and f"or {a(second)} (" in unsure.text
    assert "Retake the photo: dark pen on plain paper, the digit filling the frame" in unsure.text
    assert_model_view(browser)
    browser.save_screenshot(str(SCREENSHOT.with_name("page-uncertain.png")))


def test_a_file_that_is_not_an_image_shows_its_name_and_the_error(
    server: LiveServer, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("shopping list: milk, eggs")
    open_page(browser, server.url)
    before = result_seq(browser)
    browser.find_element(By.ID, "file").send_keys(str(path))
    assert wait_for_answer(browser, before) == "error"
    assert browser.find_element(By.ID, "file-name").text == "notes.txt"
    error = browser.find_element(By.ID, "error")
    assert error.is_displayed() and "not a readable image" in error.text
    # No broken-image icon: the thumbnail stays hidden, the upload icon stays.
    wait(browser).until(
        lambda d: d.execute_script("return arguments[0].complete", d.find_element(By.ID, "preview"))
    )
    assert not browser.find_element(By.ID, "preview").is_displayed()
    assert browser.find_element(By.CSS_SELECTOR, "#drop .icon").is_displayed()
    assert not browser.find_element(By.ID, "seen-box").is_displayed()
    browser.save_screenshot(str(SCREENSHOT.with_name("page-not-an-image.png")))
