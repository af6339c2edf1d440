"""multirun logs (issue 11, item 5): the merged view, -n, --json, and -f with rotation."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from multirun.core.errors import UsageError
from multirun.ops import logs_view as logview
from multirun.supervisor.output import LogRouter
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]


class Sink(io.StringIO):
    """A stream another thread writes to and the test reads (not a TTY: no colour)."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()

    def write(self, text: str) -> int:
        with self.lock:
            return super().write(text)

    def text(self) -> str:
        with self.lock:
            return self.getvalue()


def next_ms() -> None:
    """Wait for the clock's next millisecond: log lines are stamped to the millisecond."""
    start = int(time.time() * 1000)
    wait_until(lambda: int(time.time() * 1000) > start, timeout=1, interval=0)


def router(state: Path, max_bytes: int = 5 * 1024 * 1024) -> LogRouter:
    return LogRouter.for_accounts(["a", "b"], state, ["s3cr3t-key"], stream=io.StringIO(),
                                  max_bytes=max_bytes)  # fmt: skip


def test_merged_by_time_last_n_and_no_event_twice(tmp_path: Path) -> None:
    logs = router(tmp_path)
    logs.event("supervisor pid 1: starting 2 account(s)")
    for write in (
        lambda: logs.line("a", "a one"),
        lambda: logs.line("b", "b one"),
        lambda: logs.event("a: started, pid 2", account="a"),
        lambda: logs.line("a", "a two"),
        lambda: logs.line("sim", "sim says hi"),  # a service's line: in supervisor.log
    ):
        next_ms()
        write()
    logs.close()

    out = Sink()
    assert logview.run(None, state_dir=tmp_path, stream=out) == 0
    lines = out.text().splitlines()
    bodies = [line.split("| ", 1)[1] for line in lines]
    assert bodies == ["supervisor pid 1: starting 2 account(s)", "a one", "b one",
                      "a: started, pid 2", "a two", "sim says hi"]  # fmt: skip
    assert lines[1].split()[1] == "a" and lines[2].split()[1] == "b" and "\033[" not in lines[0]

    out = Sink()
    logview.run(None, state_dir=tmp_path, tail=2, stream=out)
    assert [line.split("| ", 1)[1] for line in out.text().splitlines()] == ["a two", "sim says hi"]

    out = Sink()  # one account: its file, its own supervisor events included
    logview.run(None, ["a"], state_dir=tmp_path, stream=out, log_format="json")
    records = [json.loads(line) for line in out.text().splitlines()]
    assert [(r["account"], r["line"]) for r in records] == [
        ("a", "a one"), ("supervisor", "a: started, pid 2"), ("a", "a two")
    ]  # fmt: skip
    assert all(r["ts"].endswith("Z") for r in records)
    with pytest.raises(UsageError, match="no account named zz"):
        logview.run(None, ["zz"], state_dir=tmp_path, stream=Sink())


@pytest.fixture
def follower(tmp_path: Path) -> Iterator[tuple[Sink, threading.Event]]:
    out, stop = Sink(), threading.Event()
    thread = threading.Thread(
        target=logview.run, args=(None,),
        kwargs={"state_dir": tmp_path, "follow": True, "tail": 1, "stream": out, "stop": stop},
    )  # fmt: skip
    thread.start()
    yield out, stop
    stop.set()
    thread.join(5)
    assert not thread.is_alive()


@pytest.mark.slow
def test_follow_picks_up_new_lines_rotation_and_new_accounts(
    tmp_path: Path, follower: tuple[Sink, threading.Event]
) -> None:
    out, _ = follower
    logs = router(tmp_path, max_bytes=300)
    logs.line("a", "first")
    wait_until(lambda: "first" in out.text(), timeout=5)
    for index in range(8):  # a's file rotates every few lines (300 bytes)
        logs.line("a", f"line {index} " + "x" * 40)
        wait_until(lambda index=index: f"line {index} " in out.text(), timeout=5)
    logs.line("b", "b arrives")  # an account whose log did not exist when -f began
    wait_until(lambda: "b arrives" in out.text(), timeout=5)
    assert os.path.exists(tmp_path / "a" / "worker.log.2")  # it did rotate, twice
    shown = out.text()
    assert shown.count("first") == 1 and shown.count("line 7 ") == 1
    assert "s3cr3t-key" not in shown
    logs.close()


@pytest.mark.process
def test_logs_cli_follows_a_running_supervisor(tmp_path: Path) -> None:
    from multirun.sim import SimConfig, SimServer
    from tests.ops.test_status_without_config import account, module_for, write

    with SimServer(SimConfig(port=0)) as sim:
        module = module_for(tmp_path)
        config = write(tmp_path, sim.base_url, account("lv", module))
        env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
        main = [sys.executable, "-c", "from multirun.cli.app import main; main()"]
        sup = subprocess.Popen([*main, "start", str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, cwd=ROOT, env=env)  # fmt: skip
        # -n 100, not 0: the supervisor may write its first lines before the follower
        # opens the log; "stopped" below can only come while it follows
        follow = subprocess.Popen([*main, "logs", str(config), "-f", "-n", "100"],
                                  stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)  # fmt: skip
        try:
            assert follow.stdout is not None
            seen: list[str] = []
            reader = threading.Thread(target=lambda: seen.extend(iter(follow.stdout.readline, "")))
            reader.start()
            wait_until(lambda: any("lv" in s and "started, pid" in s for s in seen), timeout=40)
            wait_until(lambda: any(s.split()[1:2] == ["lv"] for s in seen), timeout=40)  # its own
            sup.terminate()
            assert sup.wait(20) == 0
            wait_until(lambda: any("stopped" in s for s in seen), timeout=30)
            shown = subprocess.run([*main, "logs", str(config), "lv", "-n", "3"], env=env,
                                   capture_output=True, text=True, cwd=ROOT)  # fmt: skip
            assert shown.returncode == 0 and len(shown.stdout.splitlines()) == 3
        finally:
            for proc in (sup, follow):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
