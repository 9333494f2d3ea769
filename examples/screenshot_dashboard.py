"""Take a screenshot of the dashboard during an overload burst (docs/dashboard.png).

    uv run python examples/screenshot_dashboard.py                # starts its own server
    uv run python examples/screenshot_dashboard.py --url http://127.0.0.1:8000 --token s3cret

Without `--url` it starts `uvicorn retail.main:app` on a free port with a fresh SQLite
database, 4 fulfilment slots and 1-2 s orders. It opens the dashboard in headless
Chromium (Debian's `chromium` and `chromium-driver` packages), fires bursts of orders
with the page's own button in `queue` mode, switches to `reject` with the page's mode
control, fires more, and saves the screenshot while the service is over capacity.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from retail.loadgen.process import ServerFailed, free_port, serving

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
DEMO_TOKEN = "demo-token"


@contextlib.contextmanager
def demo_server(workdir: Path) -> Iterator[str]:
    """A server for the picture: 4 slots, 1-2 s orders, room for 40 in the queue."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETAIL_")}
    env |= {
        "RETAIL_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'retail.db'}",
        "RETAIL_ADMIN_TOKEN": DEMO_TOKEN,
        "RETAIL_CAPACITY": "4",
        "RETAIL_QUEUE_LIMIT": "40",
        "RETAIL_FULFILMENT_DELAY": "uniform:1,2",
        "RETAIL_FULFILMENT_SEED": "7",
    }
    command = [sys.executable, "-m", "uvicorn", "retail.main:app", "--port", str(port)]
    log = workdir / "server.log"
    try:
        with serving(command, port=port, env=env, cwd=workdir, log=log) as server:
            yield server.url
    except ServerFailed as failure:
        raise SystemExit(f"the server did not start ({failure}): see {log}") from None


def browser(
    width: int = 1440,
    height: int = 1250,
    chromium: Path = CHROMIUM,
    chromedriver: Path = CHROMEDRIVER,
) -> webdriver.Chrome:
    """Headless Chromium showing `width` x `height` pixels of the page."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(str(chromedriver)), options=options)


def burst(driver: webdriver.Chrome, size: int) -> None:
    field = driver.find_element(By.ID, "burst-size")
    field.clear()
    field.send_keys(str(size))
    driver.find_element(By.ID, "burst-button").click()


def switch_mode(driver: webdriver.Chrome, mode: str, token: str) -> None:
    field = driver.find_element(By.ID, "admin-token")
    field.clear()
    field.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, f".modes button[data-mode='{mode}']").click()
    WebDriverWait(driver, 10).until(
        lambda d: d.find_element(By.ID, "mode").text == mode, f"the page never showed {mode}"
    )


def take(url: str, token: str, out: Path, seconds: float) -> None:
    driver = browser()
    try:
        driver.get(url + "/")
        WebDriverWait(driver, 15).until(
            lambda d: d.find_element(By.ID, "connection").get_attribute("data-state") == "live"
        )
        switch_mode(driver, "queue", token)
        started = time.monotonic()
        # Queue mode: bursts the service cannot fulfil at once; the queue grows and drains.
        while time.monotonic() - started < seconds * 0.55:
            burst(driver, 16)
            time.sleep(4)
        # Reject mode: the same bursts now get 503 for whatever does not fit.
        switch_mode(driver, "reject", token)
        while time.monotonic() - started < seconds:
            burst(driver, 16)
            time.sleep(3)
        burst(driver, 24)
        time.sleep(1.2)
        out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(out))
        print(f"saved {out}")
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="A running server (default: start one).")
    parser.add_argument("--token", default=DEMO_TOKEN, help="Its RETAIL_ADMIN_TOKEN.")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    parser.add_argument("--seconds", type=float, default=60, help="How long to run the bursts.")
    args = parser.parse_args()
    for needed in (CHROMIUM, CHROMEDRIVER):
        if not needed.exists():
            raise SystemExit(f"{needed} is missing: apt-get install chromium chromium-driver")
    if args.url:
        take(args.url.rstrip("/"), args.token, args.out, args.seconds)
        return
    with tempfile.TemporaryDirectory() as workdir, demo_server(Path(workdir)) as url:
        take(url, DEMO_TOKEN, args.out, args.seconds)


if __name__ == "__main__":
    main()
