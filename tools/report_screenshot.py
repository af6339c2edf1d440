"""Regenerate docs/report.png: `multirun report --html` after a run, in headless Chromium.

    python tools/report_screenshot.py [--out docs/report.png] [--seconds 240]

Copies runner.yaml.example (three accounts on the embedded simulator) to a temporary
directory, runs ``multirun start`` on it for ``--seconds``, stops it (SIGTERM: on_stop
closes the trades), runs ``multirun report --html`` and saves Chromium's screenshot of
the page (the chart, the table and the first rows of the trades table). It prints the
report's table. The README shows the file: regenerate it, never edit it.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars",
)  # fmt: skip
WINDOW = (1280, 1200)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "report.png")
    parser.add_argument("--seconds", type=float, default=240.0)
    args = parser.parse_args()
    if CHROMIUM is None:
        raise SystemExit("report_screenshot: no chromium on PATH")
    command = [sys.executable, "-m", "multirun"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        runner = work / "runner.yaml"
        shutil.copy(ROOT / "runner.yaml.example", runner)
        with (work / "supervisor.log").open("wb") as log:
            proc = subprocess.Popen([*command, "start", runner.name], stdout=log,
                                    stderr=subprocess.STDOUT, cwd=work)  # fmt: skip
            try:
                time.sleep(args.seconds)
            finally:
                proc.send_signal(signal.SIGTERM)
                code = proc.wait(timeout=120)
        if code != 0:
            raise SystemExit(f"report_screenshot: multirun start exited {code}")
        page = work / "report.html"
        done = subprocess.run([*command, "report", runner.name, "--html", str(page)],
                              cwd=work, check=True, capture_output=True, text=True)  # fmt: skip
        print(done.stdout, end="")
        shot = work / "shot.png"
        subprocess.run(
            [CHROMIUM, *FLAGS, f"--user-data-dir={work / 'chromium'}", f"--screenshot={shot}",
             f"--window-size={WINDOW[0]},{WINDOW[1]}", page.as_uri()],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        args.out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
