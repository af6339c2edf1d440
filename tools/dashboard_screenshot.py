"""Regenerate docs/img/dashboard.png: the web dashboard on the simulator, in headless Chromium.

    python tools/dashboard_screenshot.py [--out docs/img/dashboard.png] [--seconds 25]

Starts an in-process simulator, ``multirun start`` with four accounts (one of them then
stopped from the CLI, so a STOPPED row shows), ``multirun dashboard`` on it, lets them
trade for ``--seconds``, opens the page in headless Chromium (driven over the DevTools
pipe, :mod:`tests.web.cdp`), selects the first account (its logs and trades) and saves
the screenshot. docs/operating.md shows the file: regenerate it, never edit it.
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from multirun.core import procutil  # noqa: E402
from multirun.core.statedir import StateDir  # noqa: E402
from multirun.sim import SimConfig, SimServer  # noqa: E402
from tests.web.cdp import CHROMIUM, Browser  # noqa: E402

ACCOUNTS = (
    ("btc-trend", "sma_cross", "BTCUSD", 0.5, "close", "{fast: 3, slow: 8}"),
    ("btc-coin", "random", "BTCUSD", 0.2, "keep", "{seed: 5}"),
    ("eth-coin", "random", "ETHUSD", 1.0, "close", "{seed: 7}"),
    ("xau-coin", "random", "XAUUSD", 0.1, "close", "{seed: 11}"),
)


def config(server: str, state: Path) -> str:
    text = (
        f"version: 1\nserver: {server}\nstate_dir: {state}\nstop_timeout: 20\n"
        "defaults:\n  user: alice\n  api_key: demo-key-123456\n  runmode: livetest\n"
        "  interval: 1s\naccounts:\n"
    )
    for i, (name, strategy, instrument, volume, on_stop, params) in enumerate(ACCOUNTS):
        text += (
            f"  - {{name: {name}, accountid: ACC-{i}, strategy: {strategy}, params: {params},"
            f" instrument: {instrument}, volume: {volume}, on_stop: {on_stop}}}\n"
        )
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "dashboard.png")
    parser.add_argument("--seconds", type=float, default=25.0)
    args = parser.parse_args()
    if CHROMIUM is None:
        raise SystemExit("dashboard_screenshot: no chromium on PATH")
    sim = SimServer(SimConfig(host="127.0.0.1", port=0)).start()
    command = [sys.executable, "-m", "multirun"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        runner = work / "runner.yaml"
        runner.write_text(config(sim.base_url, work / "state"))
        procs = [
            subprocess.Popen([*command, *words], stdout=out, stderr=subprocess.STDOUT, cwd=work)
            for words, out in (
                (["start", str(runner)], (work / "supervisor.log").open("wb")),
                (["dashboard", str(runner), "--listen", "127.0.0.1:0"],
                 (work / "dashboard.log").open("wb")),
            )
        ]  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while not (
                found := re.search(r"on (http://\S+/)", (work / "dashboard.log").read_text())
            ):
                if time.monotonic() > deadline:
                    raise SystemExit("dashboard_screenshot: the dashboard did not start")
                time.sleep(0.2)
            time.sleep(args.seconds)
            last = ACCOUNTS[-1][0]
            subprocess.run([*command, "stop", str(runner), last], cwd=work, check=True,
                           capture_output=True)  # fmt: skip
            _wait_stopped(StateDir(work / "state"), last)
            browser = Browser(width=1500, height=820)
            try:
                browser.open(found.group(1))
                time.sleep(2.0)
                browser.click(f'[data-select="{ACCOUNTS[0][0]}"]')
                time.sleep(2.5)  # two polls: the log tail and the trades drawn
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_bytes(browser.screenshot())
            finally:
                browser.close()
        finally:
            for proc in reversed(procs):
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
            sim.stop()
    print(f"wrote {args.out}")
    return 0


def _wait_stopped(layout: StateDir, name: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        entry = ((procutil.read_json(layout.supervisor_json) or {}).get("accounts") or {}).get(name)
        if entry and entry.get("state") == "STOPPED":
            return
        time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main())
