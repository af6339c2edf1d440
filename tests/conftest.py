"""Shared fixtures.

- ``sim``: a started :class:`multirun.sim.SimServer` on 127.0.0.1, port 0 (stopped after
  the test). ``sim.base_url`` is what clients use; ``sim.advance(s)`` moves its clock.
- ``sim_factory(**SimConfig kwargs)``: start more, or differently configured, simulators
  (``faults`` may be a dict of FaultSettings fields); all are stopped after the test.
- ``caller``: a logged-in :class:`SimCaller` on ``sim`` making seed-style calls.
- ``wait_until(predicate, timeout)``: poll with a deadline instead of sleeping.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from multirun.core.clock import StopSignal
from multirun.sim import FaultSettings, SimConfig, SimServer

SimFactory = Callable[..., SimServer]


def _keep_compiled_test_modules() -> None:
    """Let this test run keep compiled modules in ``__pycache__`` (gitignored) as Python
    does by default: the test modules pytest rewrites, and multirun's modules in this
    process and in every process the tests start (the CLI, supervisors, simulators).

    Where PYTHONDONTWRITEBYTECODE is set (this project's CI machines set it), every xdist
    worker would parse, rewrite and compile the whole suite again on every run (about 2 s
    of CPU each), and every CLI process a test starts would compile multirun from source
    (60-70 ms of its 0.3 s). Not a PYTHONPYCACHEPREFIX: that would also move the standard
    library's and the installed packages' compiled files, compiling them all again.
    """
    if sys.dont_write_bytecode:
        sys.dont_write_bytecode = False
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


_keep_compiled_test_modules()


@pytest.fixture(scope="session", autouse=True)
def _private_runtime_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Account locks and running supervisors' records go to a directory of this run (the
    processes the tests start inherit it), not the user's ``/dev/shm/multirun-<uid>``:
    runs of the suite left ~53,000 lock files and ~1,000 records of killed supervisors
    there, and every look-up of a running supervisor lists that directory (0.16 s then).
    A test that sets its own (``monkeypatch.setenv``) still wins."""
    from multirun.account.ownership import RUNTIME_ENV

    if RUNTIME_ENV not in os.environ:
        os.environ[RUNTIME_ENV] = str(tmp_path_factory.mktemp("runtime"))


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Under xdist, compile the test modules once here, before the workers start, so each
    worker reads the compiled files instead of rewriting every module itself (a fresh
    clone's first run would otherwise compile the suite once per worker)."""
    distributed = getattr(session.config.option, "numprocesses", None)
    if not distributed or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    here = Path(__file__).parent
    for path in sorted(here.rglob("test_*.py")):
        dotted = ".".join(path.relative_to(here).with_suffix("").parts)
        with contextlib.suppress(Exception):  # a broken module: its worker reports it
            importlib.import_module(f"{__package__}.{dotted}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Soak tests run only when ``-m`` names them: so ``-m "not process"`` (the fast
    tests) does not bring back the long runs the default ``-m`` expression left out."""
    if "soak" in (config.option.markexpr or ""):
        return
    soak = [item for item in items if item.get_closest_marker("soak")]
    if soak:
        config.hook.pytest_deselected(items=soak)
        items[:] = [item for item in items if not item.get_closest_marker("soak")]


@pytest.fixture(autouse=True)
def _processes_only_where_marked(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test that starts a process (a CLI, a supervisor, a forked worker) must say so
    with ``@pytest.mark.process``: ``pytest -m "not process"`` is the fast, in-process
    run, and an unmarked test that forks would make that promise false. Marked tests
    run as they are; an unmarked one that starts a process fails, naming the fix."""
    if request.node.get_closest_marker("process"):
        return
    nodeid = request.node.nodeid

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"{nodeid} starts a process: mark it @pytest.mark.process")

    monkeypatch.setattr(os, "fork", refuse)
    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse)


@pytest.fixture
def sim_factory() -> Iterator[SimFactory]:
    started: list[SimServer] = []

    def make(**kwargs: Any) -> SimServer:
        kwargs.setdefault("host", "127.0.0.1")
        kwargs.setdefault("port", 0)
        if isinstance(kwargs.get("faults"), dict):
            kwargs["faults"] = FaultSettings(**kwargs["faults"])
        server = SimServer(SimConfig(**kwargs)).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def sim(sim_factory: SimFactory) -> SimServer:
    return sim_factory()


POLL_FIRST_S = 0.005
POLL_MAX_S = 0.05


def wait_until(
    predicate: Callable[[], Any], timeout: float = 5.0, interval: float | None = None
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds.

    Without ``interval`` the polls start 5 ms apart and back off to 50 ms: a condition
    that comes at once is seen at once, and a wait of seconds (a supervisor's start, a
    worker's tick) costs 20 predicate calls a second, not 200. Several such waits run at
    once under ``-n auto`` on a 2-core machine, and each call reads files or a listing.
    """
    deadline = time.monotonic() + timeout
    pause = POLL_FIRST_S if interval is None else interval
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(pause)
        if interval is None:
            pause = min(POLL_MAX_S, pause * 1.5)


class SimCaller:
    """Calls a simulator the way ALGOGENE's seed script does.

    GET: ``requests.get(url, params=...)``; POST: ``requests.post(url, data=json.dumps(...))``
    (no JSON content type). Credentials and, after :meth:`login`, the token are added to
    every call; explicit keyword arguments override them (``token=None`` leaves it out).
    """

    def __init__(
        self,
        sim: SimServer,
        user: str = "alice",
        api_key: str = "alice-key",
        runmode: str = "livetest",
        accountid: str = "ACC-1",
        timeout: float = 10.0,
    ) -> None:
        self.sim = sim
        self.creds: dict[str, Any] = {
            "user": user,
            "api_key": api_key,
            "runmode": runmode,
            "accountid": accountid,
        }
        self.token: str | None = None
        self.timeout = timeout

    def login(self) -> SimCaller:
        reply = requests.get(
            self.sim.base_url + "/session",
            params={"user": self.creds["user"], "api_key": self.creds["api_key"]},
            timeout=self.timeout,
        )
        assert reply.status_code == 200, reply.text
        self.token = reply.json()["res"]["token"]
        return self

    def _params(self, extra: dict[str, Any]) -> dict[str, Any]:
        params = {**self.creds, "token": self.token, **extra}
        return {k: v for k, v in params.items() if v is not None}

    def get(self, endpoint: str, **params: Any) -> requests.Response:
        return requests.get(
            f"{self.sim.base_url}/{endpoint}", params=self._params(params), timeout=self.timeout
        )

    def post(self, endpoint: str, **data: Any) -> requests.Response:
        return requests.post(
            f"{self.sim.base_url}/{endpoint}",
            data=json.dumps(self._params(data)),
            timeout=self.timeout,
        )

    def ok(self, method: str, endpoint: str, **params: Any) -> Any:
        """The JSON of a call that must succeed."""
        reply = (self.get if method == "GET" else self.post)(endpoint, **params)
        assert reply.status_code == 200, (endpoint, reply.status_code, reply.text)
        return reply.json()

    def open(
        self,
        instrument: str = "BTCUSD",
        buysell: str = "BUY",
        volume: float = 1.0,
        ordertype: str = "MKT",
        **extra: Any,
    ) -> str:
        """Place an order; returns its trade id as a string."""
        body = self.ok(
            "POST",
            "open_order",
            instrument=instrument,
            buysell=buysell,
            volume=volume,
            ordertype=ordertype,
            **extra,
        )
        return str(body["tradeID"])

    def opened(self) -> dict[str, dict[str, Any]]:
        return {t["trade_ID"]: t for t in self.ok("GET", "opened_trades")["res"]}

    def pending(self) -> dict[str, dict[str, Any]]:
        return {t["trade_ID"]: t for t in self.ok("GET", "pending_trades")["res"]}

    def wait_open(self, trade_id: str, timeout: float = 5.0) -> dict[str, Any]:
        return wait_until(lambda: self.opened().get(trade_id), timeout)

    def ledger_entry(self, trade_id: str) -> dict[str, Any]:
        return next(o for o in self.sim.ledger() if str(o["tradeID"]) == trade_id)


@pytest.fixture
def caller(sim: SimServer) -> SimCaller:
    """A logged-in :class:`SimCaller` (user alice, livetest account ACC-1) on ``sim``."""
    return SimCaller(sim).login()


class FakeClock:
    """A :class:`multirun.core.clock.Clock` whose clocks move only when told (waits move them)."""

    def __init__(self, wall: datetime, mono: float = 1000.0) -> None:
        self.mono = mono
        self.wall = wall.timestamp()
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.advance(seconds)

    def wait(self, stop: StopSignal, seconds: float) -> bool:
        """:meth:`multirun.core.clock.Clock.wait`: sleeps (moves the clocks) unless stopped."""
        if stop.is_set():
            return True
        self.sleep(seconds)
        return stop.is_set()


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: four workers per core, at most 12.

    Most of the suite waits on real processes and real sockets (a worker's tick, a
    supervisor's start and stop), not on the CPU: one worker per core left the cores mostly
    idle. On 2 cores, quiet, compiled modules cached: 6 workers 55 s, 8 workers 55 s,
    10 workers 63 s (each worker costs about a second of CPU to start and collect).
    """
    return min(12, 4 * (os.cpu_count() or 1))
