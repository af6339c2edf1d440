"""The dashboard in a real headless Chromium, on a real supervisor over the simulator:
every account shown with its state, live updates without a reload, a confirmed click
that stops one account and only it, and a screenshot that is not blank."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from multirun.sim import SimConfig, SimServer
from tests.conftest import wait_until
from tests.web.cdp import CHROMIUM, Browser

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "DASH_KEY": "dash-key-123456"}
NAMES = ("alpha", "beta", "gamma")
CONFIG = """\
version: 1
server: {server}
state_dir: {state}
stop_timeout: 20
web:
  listen: 127.0.0.1:0
defaults:
  user: alice
  api_key: ${{DASH_KEY}}
  runmode: livetest
  strategy: random
  instrument: BTCUSD
  interval: 1s
accounts:
  - {{name: alpha, accountid: ACC-a, params: {{seed: 3}}, volume: 0.5, on_stop: close}}
  - {{name: beta, accountid: ACC-b, params: {{seed: 5}}, volume: 0.2, on_stop: keep}}
  - {{name: gamma, accountid: ACC-c, params: {{seed: 7}}, volume: 0.1, on_stop: close}}
"""

pytestmark = [
    pytest.mark.process,
    pytest.mark.skipif(
        CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install -y chromium)"
    ),
]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from multirun.cli.app import main; main()", *args],
        capture_output=True, text=True, timeout=90, cwd=ROOT, env=ENV,
    )  # fmt: skip


class Fleet:
    def __init__(self, tmp: Path, sim: SimServer) -> None:
        self.tmp = tmp
        self.config = tmp / "runner.yaml"
        self.config.write_text(CONFIG.format(server=sim.base_url, state=tmp / "state"))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.url = ""  # `multirun dashboard`'s
        self.child_url = ""  # the supervisor's dashboard child's (web: in runner.yaml)

    def spawn(self, log: str, *args: str) -> None:
        with (self.tmp / log).open("ab") as out:
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", "from multirun.cli.app import main; main()", *args],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=self.tmp,
                    env=ENV,
                )
            )

    def status(self) -> dict[str, Any]:
        reply = requests.get(self.url + "api/status", timeout=5)
        reply.raise_for_status()
        return {a["name"]: a for a in reply.json()["accounts"]}

    def states(self) -> dict[str, str]:
        return {name: a["state"] for name, a in self.status().items()}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    sim = SimServer(SimConfig(host="127.0.0.1", port=0)).start()
    run = Fleet(tmp_path_factory.mktemp("web"), sim)
    try:
        run.spawn("supervisor.log", "start", str(run.config))
        run.spawn("dashboard.log", "dashboard", str(run.config), "--listen", "127.0.0.1:0")
        found = wait_until(
            lambda: re.search(r"on (http://\S+/)", (run.tmp / "dashboard.log").read_text()), 30
        )
        run.url = found.group(1)
        child = wait_until(
            lambda: re.search(r"serving the dashboard on (http://\S+/)",
                              (run.tmp / "supervisor.log").read_text()), 30,
        )  # fmt: skip
        run.child_url = child.group(1)
        wait_until(lambda: all(a.get("ticks") for a in run.status().values()), 60, 0.2)
        yield run
    finally:
        cli("stop", str(run.config))
        for proc in run.procs:
            proc.terminate()
            proc.wait(timeout=30)
        sim.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    page = Browser()
    yield page
    page.close()


def shown_states(browser: Browser) -> dict[str, str]:
    rows = browser.eval(
        "[...document.querySelectorAll('tr.account')].map(r =>"
        " [r.dataset.account, r.querySelector('.state').textContent])"
    )
    return dict(rows or [])


def test_page_shows_every_account_then_follows_a_cli_stop_live(
    fleet: Fleet, browser: Browser
) -> None:
    browser.open(fleet.url)
    wait_until(lambda: shown_states(browser) == dict.fromkeys(NAMES, "RUNNING"), 20, 0.1)
    browser.eval("window.sameDocument = 'yes'")  # gone if the page were reloaded

    done = cli("stop", str(fleet.config), "gamma")
    assert done.returncode == 0, done.stdout + done.stderr

    wait_until(lambda: shown_states(browser).get("gamma") == "STOPPED", 10, 0.1)
    assert browser.eval("window.sameDocument") == "yes"
    assert shown_states(browser)["alpha"] == "RUNNING"


def test_a_confirmed_click_stops_that_account_and_only_it(fleet: Fleet, browser: Browser) -> None:
    browser.open(fleet.url)
    wait_until(lambda: shown_states(browser).get("beta") == "RUNNING", 20, 0.1)
    before = fleet.status()
    held = before["beta"].get("positions") or []

    browser.click('button[data-action="stop"][data-account="beta"]')
    wait_until(lambda: browser.eval("document.getElementById('modal').className") == "open", 5)
    effect = browser.eval("document.getElementById('confirm-effect').textContent")
    # beta's on_stop is keep: the confirmation says what stays open
    assert effect.startswith("leaves ") or effect.startswith("no position"), effect
    if held:
        assert f"BUY {held[0]['volume']:g} BTCUSD" in effect or "SELL" in effect
    assert fleet.states()["beta"] == "RUNNING"  # nothing happens before the confirmation

    browser.click("#confirm-yes")
    wait_until(lambda: fleet.states()["beta"] == "STOPPED", 30, 0.1)
    after = fleet.status()
    assert after["alpha"]["state"] == "RUNNING" and after["alpha"]["pid"] == before["alpha"]["pid"]
    wait_until(lambda: shown_states(browser).get("beta") == "STOPPED", 10, 0.1)


def test_screenshot_shows_the_accounts(fleet: Fleet, browser: Browser) -> None:
    from PIL import Image

    browser.open(fleet.url)
    wait_until(lambda: len(shown_states(browser)) == len(NAMES), 20, 0.1)
    text = browser.eval("document.body.innerText")
    assert all(name in text for name in NAMES), text
    shot = Image.open(io.BytesIO(browser.screenshot())).convert("RGB")
    colours = shot.getcolors(maxcolors=1_000_000) or []
    assert len(colours) > 50  # a blank page has one; text and the state colours many
    # the state pills are drawn: RUNNING's green is on the page
    assert any(abs(r - 0x3F) < 8 and abs(g - 0xB9) < 8 and abs(b - 0x50) < 8
               for _, (r, g, b) in colours)  # fmt: skip


def test_the_supervisors_child_serves_the_same_status(fleet: Fleet) -> None:
    reply = requests.get(fleet.child_url + "api/status", timeout=5)
    assert reply.status_code == 200
    assert [a["name"] for a in reply.json()["accounts"]] == list(fleet.status())
