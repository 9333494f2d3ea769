"""The dashboard in a real browser (headless Chromium) against a real server process:
it shows the service live while orders flow, and its mode switch changes the mode."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.serving import server_in, uvicorn_command

pytestmark = pytest.mark.slow

TOKEN = "dashboard-admin-token"
WAIT_S = 30


def _binary(*candidates: str) -> Path | None:
    for candidate in candidates:
        found = shutil.which(candidate)
        if found:
            return Path(found)
    return None


CHROMIUM = _binary("/usr/bin/chromium", "chromium")
CHROMEDRIVER = _binary("/usr/bin/chromedriver", "chromedriver")


@pytest.fixture
def browser() -> Iterator[object]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip(
            "the browser test needs Chromium and its driver: "
            "apt-get install chromium chromium-driver"
        )
    from examples.screenshot_dashboard import browser as headless_chromium

    driver = headless_chromium(1440, 1000, CHROMIUM, CHROMEDRIVER)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_dashboard_shows_orders_flowing_and_switches_the_mode(
    browser: object, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.ui import WebDriverWait

    assert isinstance(browser, WebDriver)
    driver = browser

    def text(element_id: str) -> str:
        return str(driver.find_element(By.ID, element_id).text)

    def number(element_id: str) -> int:
        value = text(element_id)
        return int(value) if value.isdigit() else -1

    def until(check: Callable[[], bool], what: str) -> None:
        WebDriverWait(driver, WAIT_S, poll_frequency=0.05).until(lambda _: check(), what)

    def rows() -> list[tuple[str, str]]:
        """(status, text) of each row of the order table, read at one moment."""
        found: list[list[str]] = driver.execute_script(
            "return [...document.querySelectorAll('#orders tbody tr')]"
            ".map((row) => [row.dataset.status, row.innerText]);"
        )
        return [(status, row) for status, row in found]

    def burst(size: int) -> None:
        field = driver.find_element(By.ID, "burst-size")
        field.clear()
        field.send_keys(str(size))
        driver.find_element(By.ID, "burst-button").click()

    def choose_mode(mode: str, token: str | None) -> None:
        field = driver.find_element(By.ID, "admin-token")
        field.clear()
        if token is not None:
            field.send_keys(token)
        driver.find_element(By.CSS_SELECTOR, f".modes button[data-mode='{mode}']").click()

    settings = {"capacity": 2, "fulfilment_delay": 0.3, "admin_token": TOKEN}
    with server_in(tmp_path, uvicorn_command, **settings, snapshot_interval_s=0.2) as server:
        driver.get(server.url + "/")
        until(
            lambda: driver.find_element(By.ID, "connection").get_attribute("data-state") == "live",
            "the page never connected to /ws",
        )
        until(lambda: text("mode") == "queue" and text("capacity") == "2", "no snapshot shown")
        assert driver.find_element(By.CSS_SELECTOR, "header a[href='/docs']").text == "API docs"
        assert text("orders-empty").startswith("No orders yet")

        # A burst in queue mode: every order is accepted, queues, and is fulfilled; the
        # page sees it all live.
        burst(8)
        until(lambda: text("burst-result") == "8 placed: 8 accepted.", "burst not placed")
        until(lambda: number("accepted-total") == 8, "accepted count not updated")
        until(lambda: number("fulfilled-total") == 8, "fulfilments not seen live")
        until(
            lambda: [status for status, _ in rows()] == ["fulfilled"] * 8,
            "order table not updated to fulfilled",
        )
        assert all("dashboard" in row for _, row in rows())
        # Orders placed together still read apart: the id column shows the random end
        # of the UUIDv7, not its timestamp.
        shown_ids = driver.execute_script(
            "return [...document.querySelectorAll('#orders td.id a')].map((a) => a.textContent);"
        )
        assert len(set(shown_ids)) == 8, shown_ids
        # The waits: time to start and time to fulfil, as percentiles.
        until(lambda: "·" in text("fulfil-wait"), "no time to fulfil shown")
        assert "·" in text("start-wait")
        assert "last 8 orders" in text("fulfil-wait-detail")

        # The mode switch needs the admin token.
        choose_mode("reject", None)
        until(lambda: "admin token" in text("mode-message"), "no prompt for the token")
        choose_mode("reject", "wrong-token")
        until(lambda: text("mode-message").startswith("401"), "wrong token not refused")
        assert httpx.get(server.url + "/capacity").json()["mode"] == "queue"

        choose_mode("reject", TOKEN)
        until(lambda: text("mode") == "reject", "the page does not show the new mode")
        assert text("mode-message") == "Mode is now reject."
        assert httpx.get(server.url + "/capacity").json()["mode"] == "reject"

        # Over capacity in reject mode: the burst is partly refused, and the page says so.
        burst(8)
        until(lambda: "refused (503)" in text("burst-result"), "no refusals in reject mode")
        # The burst is over: the page catches up with the server's count at its next snapshot.
        capacity = httpx.get(server.url + "/capacity").json()
        assert capacity["counters"]["rejected"] > 0
        until(
            lambda: number("rejected-total") == capacity["counters"]["rejected"],
            "rejections not counted",
        )
        # Counted per priority too: the burst's orders are standard ones.
        standard = capacity["by_priority"]["standard"]["counters"]
        until(
            lambda: text("priority-standard").split()[-1] == str(standard["rejected"]),
            "rejections not counted per priority",
        )

        # Auto mode shows the level it is at, with what it means.
        choose_mode("auto", TOKEN)
        until(lambda: text("mode") == "auto: queue", "the page does not show auto's level")
        assert text("mode-hint").startswith("auto, now queueing")
        assert httpx.get(server.url + "/capacity").json()["level"] == "queue"

        # A page opened now starts from the server's history: counts since the server
        # started, and charts that are not empty.
        driver.get(server.url + "/")
        until(lambda: text("fulfilled-since") == "since the server started", "no history")
        assert number("fulfilled-total") >= 8
        assert driver.execute_script("return state.samples.length;") > 1
