"""The dashboard in a real browser (headless Chromium driven by Selenium): send a message
from the page and see it in the recipient's mailbox; kill the recipient domain's MX and
see the sender's queue grow; start it and see the queue drain. Screenshots of every step
are kept (under $MXLAB_ARTIFACTS/ui when set, else the test's tmp dir)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import mxlab

from .conftest import TOPOLOGIES, wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
)
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the test extra)")
from selenium.common.exceptions import StaleElementReferenceException as StaleElement  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


@pytest.fixture
def lab(mxlab_home: Path) -> Iterator[mxlab.Lab]:
    with mxlab.Lab.up(TOPOLOGIES / "two-domains.yaml", runtime="local") as the_lab:
        yield the_lab


@pytest.fixture
def dashboard(lab: mxlab.Lab) -> Iterator[str]:
    """`mxlab ui LAB` as a user runs it; its URL from the first line it prints."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "from mxlab.cli import main; main()", "ui", lab.name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line, line + (proc.stderr.read() if proc.stderr else "")
        url = line.split(": ", 1)[1].strip()
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1800"):
        options.add_argument(arg)
    service = webdriver.ChromeService(executable_path=str(DRIVER))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def _artifacts(tmp_path: Path) -> Path:
    root = os.environ.get("MXLAB_ARTIFACTS")
    folder = Path(root) / "ui" if root else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_token_required(dashboard: str) -> None:
    base = dashboard.split("/?token=")[0]
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(f"{base}/api/state?token=wrong", timeout=10)
    assert denied.value.code == 403
    token = dashboard.split("token=")[1]
    with urllib.request.urlopen(f"{base}/api/state?token={token}", timeout=10) as ok:
        assert b'"lab": "two-domains"' in ok.read().replace(b'":"', b'": "')


def test_send_kill_queue_start_drain(
    lab: mxlab.Lab, dashboard: str, browser, tmp_path: Path
) -> None:  # noqa: ANN001
    shots = _artifacts(tmp_path)
    d = browser
    # the page redraws its tables on every state event: an element found may go stale
    wait = WebDriverWait(d, 60, poll_frequency=0.2, ignored_exceptions=[StaleElement])

    def click(css: str) -> None:
        def attempt(_: object) -> bool:
            d.find_element(By.CSS_SELECTOR, css).click()
            return True

        wait.until(attempt)

    def shot(name: str) -> None:
        d.save_screenshot(str(shots / f"{name}.png"))

    def queued(node: str) -> int:
        box = d.find_elements(By.ID, f"queue-{node}")
        return int(box[0].get_attribute("data-count") or -1) if box else -1

    def state(node: str) -> str:
        cells = d.find_elements(By.CSS_SELECTOR, f"#node-{node} .state")
        return cells[0].text if cells else ""

    def send(subject: str) -> None:
        Select(d.find_element(By.ID, "send-from")).select_by_value("alice@alpha.test")
        to = d.find_element(By.ID, "send-to")
        to.clear()
        to.send_keys("bob@beta.test")
        subj = d.find_element(By.ID, "send-subject")
        subj.clear()
        subj.send_keys(subject)
        d.find_element(By.ID, "send-button").click()
        wait.until(lambda _: "sent <" in d.find_element(By.ID, "send-result").text)

    d.get(dashboard)
    wait.until(lambda _: state("mx-beta") == "running")
    wait.until(lambda _: d.find_elements(By.CSS_SELECTOR, "#graph svg"))
    wait.until(lambda _: "mx-beta" in d.find_element(By.ID, "zones").text)
    shot("1-opened")

    # send from the page; it appears in bob's mailbox on the page
    send("first from the browser")
    Select(d.find_element(By.ID, "mailbox-user")).select_by_value("bob@beta.test")
    wait.until(lambda _: "first from the browser" in d.find_element(By.ID, "mailbox-list").text)
    assert lab.mailbox("bob@beta.test").wait_for(subject="first from the browser", timeout=5)
    shot("2-delivered")

    # the trace of what was just sent, as a timeline of hops
    d.find_element(By.ID, "trace-button").click()
    wait.until(lambda _: "mx-beta" in d.find_element(By.ID, "trace-timeline").text)

    # kill beta's MX from the page: the next message waits in mx-alpha's queue
    click('#node-mx-beta button[data-action="kill"]')
    wait.until(lambda _: state("mx-beta") not in ("", "running"))
    assert {s.node: s.state for s in lab.status()}["mx-beta"] != "running"
    send("second, while beta is down")
    wait.until(lambda _: queued("mx-alpha") >= 1)
    shot("3-queued")
    assert any(e["node"] == "mx-alpha" for e in lab.queue())

    # start it again: the queue drains (the relay's retry) and bob gets the message
    click('#node-mx-beta button[data-action="start"]')
    wait.until(lambda _: state("mx-beta") == "running")
    wait.until(lambda _: queued("mx-alpha") == 0)
    wait.until(lambda _: "second, while beta is down" in d.find_element(By.ID, "mailbox-list").text)
    assert d.find_element(By.ID, "events").text  # live events arrived over SSE
    shot("4-drained")

    # DNS fail and restore from the page; a link cut on the local runtime says why not
    d.find_element(By.ID, "dns-fail").click()
    wait.until(lambda _: lab.dns("beta.test", "MX")[0] == "SERVFAIL")
    d.find_element(By.ID, "dns-restore").click()
    wait.until(lambda _: lab.dns("beta.test", "MX") == ("NOERROR", ["10 mx-beta.beta.test."]))
    lab.dns_add("www.beta.test", "A", "127.0.0.9")  # a record change shows in the zones
    wait.until(lambda _: "127.0.0.9" in d.find_element(By.ID, "zones").text)
    click('#node-mx-beta button[data-action="cut"]')
    wait.until(lambda _: "docker" in d.find_element(By.ID, "send-result").text)
    shot("5-dns-and-cut")
    assert sorted(p.name for p in shots.iterdir()) == [
        "1-opened.png", "2-delivered.png", "3-queued.png", "4-drained.png",
        "5-dns-and-cut.png",
    ]  # fmt: skip
    wait_for(lambda: not lab.queue(), 5, "the API agrees the queue is empty")
