"""Issue 17, cases 1, 2, 3 and 9 (worker part): one account, one trader; real processes
against the simulator (``run-account``, ``multirun close``)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from multirun.account import ownership
from multirun.account.journal.store import Journal
from multirun.api.models import Trade, Transaction
from multirun.config import loader as runner_config
from multirun.core.errors import EXIT_FATAL
from multirun.core.statedir import StateDir
from multirun.sim import SimServer
from tests.conftest import SimCaller, wait_until

ROOT = Path(__file__).resolve().parents[2]

CONFIG = """\
version: 1
server: {server}
state_dir: {state_dir}
stop_timeout: 20
accounts:
  - name: {name}
    user: alice
    api_key: alice-key
    accountid: ACC-1
    runmode: livetest
    strategy: {strategy}
    params: {params}
    instrument: BTCUSD
    volume: 1
    interval: 1s
    on_stop: {on_stop}
"""

BUY = "def on_tick(ctx):\n    return 'BUY'\n"


def write(
    root: Path,
    *,
    name: str = "alpha",
    server: str = "sim",
    strategy: str = "own17_buy:on_tick",
    params: str = "{}",
    on_stop: str = "keep",
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "own17_buy.py").write_text(BUY)
    path = root / "runner.yaml"
    path.write_text(
        CONFIG.format(
            server=server, state_dir=root / "state", name=name, strategy=strategy,
            params=params, on_stop=on_stop,
        )
    )  # fmt: skip
    return path


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An account-lock directory of this test's own (inherited by its processes)."""
    path = tmp_path / "runtime"
    monkeypatch.setenv(ownership.RUNTIME_ENV, str(path))
    return path


def cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from multirun.cli.app import main; main()", *args]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def start(config: Path, name: str, url: str, log: Path, **extra: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            cli("run-account", str(config), name, "--server", url),
            stdout=out, stderr=out, env={**env(), **extra},
        )  # fmt: skip


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli(*args), capture_output=True, text=True, timeout=timeout, env=env())


def ours_open(alice: SimCaller, prefix: str) -> list[str]:
    return [t["order_Ref"] for t in alice.opened().values() if t["order_Ref"].startswith(prefix)]


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def alice(sim: SimServer) -> SimCaller:
    return SimCaller(sim).login()


# --- case 1: two configs on one account -------------------------------------------


@pytest.mark.process
def test_a_second_config_on_the_same_account_is_refused_naming_the_first(
    tmp_path: Path, sim: SimServer, alice: SimCaller, runtime: Path
) -> None:
    first = write(tmp_path / "one")
    second = write(tmp_path / "two")  # another state_dir, same server account
    proc = start(first, "alpha", sim.base_url, tmp_path / "one.log")
    try:
        wait_until(lambda: ours_open(alice, "mr-alpha-"), timeout=30)
        began = time.monotonic()
        refused = run("run-account", str(second), "alpha", "--server", sim.base_url)
        assert time.monotonic() - began < 20
        assert refused.returncode == EXIT_FATAL
        (line,) = refused.stderr.strip().splitlines()
        assert f"pid {proc.pid}" in line and str(first) in line and "account alpha" in line
        assert "already traded" in line and "alice-key" not in line
        assert not (tmp_path / "two" / "state" / "alpha" / "journal.sqlite").exists()
        assert len(ours_open(alice, "mr-alpha-")) == 1
    finally:
        stop(proc)


FLIP = """\
def on_tick(ctx):
    n = ctx.state.get("n", 0)
    ctx.state["n"] = n + 1
    return "BUY" if n % 2 else "SELL"
"""


@pytest.mark.process
def test_two_machines_on_one_account_name_halt_instead_of_fighting(
    tmp_path: Path, sim: SimServer, alice: SimCaller, runtime: Path
) -> None:
    """No shared lock directory (two hosts): the churn of adopting and closing each
    other's trades is noticed and a worker halts naming the cause."""
    procs, logs = [], []
    for host in ("one", "two"):
        (tmp_path / host).mkdir()
        (tmp_path / host / "own17_flip.py").write_text(FLIP)
        config = write(tmp_path / host, strategy="own17_flip:on_tick")
        logs.append(tmp_path / f"{host}.log")
        lockdir = str(tmp_path / host / "runtime")
        procs.append(start(config, "alpha", sim.base_url, logs[-1], MULTIRUN_RUNTIME_DIR=lockdir))
    try:
        wait_until(
            lambda: any("another process trades this account" in p.read_text() for p in logs),
            timeout=40,
        )
    finally:
        for proc in procs:
            stop(proc)
    halted = [p for p in logs if "HALTED: another process trades this account" in p.read_text()]
    assert halted


@pytest.mark.process
def test_one_lock_per_host_whatever_the_environment_and_the_urls_spelling(
    tmp_path: Path, sim: SimServer, alice: SimCaller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service (XDG_RUNTIME_DIR set) and an SSH shell (not), or two spellings of one
    server, lock in one place: the second is refused. Uses the real default directory
    (the key holds this simulator's port: no other test shares it)."""
    monkeypatch.delenv(ownership.RUNTIME_ENV, raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    first = write(tmp_path / "one")
    second = write(tmp_path / "two")
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    proc = start(first, "alpha", sim.base_url, tmp_path / "one.log", XDG_RUNTIME_DIR=str(xdg))
    try:
        wait_until(lambda: ours_open(alice, "mr-alpha-"), timeout=30)
        port = sim.base_url.split(":")[2].split("/")[0]
        for url in (sim.base_url, f"http://localhost:{port}/rest/v1/"):
            refused = run("run-account", str(second), "alpha", "--server", url)
            assert refused.returncode == EXIT_FATAL, (url, refused.stderr)
            assert f"pid {proc.pid}" in refused.stderr
        assert len(ours_open(alice, "mr-alpha-")) == 1
    finally:
        stop(proc)
    assert max_open_at_once(sim, "mr-alpha-") == 1


def max_open_at_once(sim: SimServer, prefix: str) -> int:
    """The most trades of ``prefix`` the ledger shows open at one instant."""
    events = []
    for o in sim.ledger():
        if str(o["orderRef"]).startswith(prefix) and o.get("filled_utc"):
            events.append((str(o["filled_utc"]), 1))
            if o.get("closed_utc"):
                events.append((str(o["closed_utc"]), -1))
    most = count = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):
        count += step
        most = max(most, count)
    return most


LONG = "def on_tick(ctx):\n    return None\n"


@pytest.mark.process
@pytest.mark.slow
def test_a_foreign_epoch_halts_both_traders_at_a_long_interval(
    tmp_path: Path, sim: SimServer, alice: SimCaller, runtime: Path
) -> None:
    """Two hosts (two lock directories), interval 1h: no tick comes, yet a trade of our
    prefix under another epoch halts both within the ownership check (1 s here)."""
    procs, logs = [], []
    for host in ("one", "two"):
        (tmp_path / host).mkdir()
        (tmp_path / host / "own17_idle.py").write_text(LONG)
        config = write(tmp_path / host, strategy="own17_idle:on_tick")
        config.write_text(config.read_text().replace("interval: 1s", "interval: 1h"))
        logs.append(tmp_path / f"{host}.log")
        procs.append(start(config, "alpha", sim.base_url, logs[-1],
                           MULTIRUN_RUNTIME_DIR=str(tmp_path / host / "runtime"),
                           MULTIRUN_EPOCH_CHECK_S="0.5"))  # fmt: skip
    try:
        wait_until(lambda: all("every 3600s" in p.read_text() for p in logs), timeout=30)
        alice.open(orderRef="mr-alpha-ZZZZZZ-1")
        began = time.monotonic()
        wait_until(lambda: all("HALTED: another process" in p.read_text() for p in logs),
                   timeout=15)  # fmt: skip
        assert time.monotonic() - began < 10
        assert "mr-alpha-ZZZZZZ-1" in logs[0].read_text()
    finally:
        for proc in procs:
            stop(proc)


def test_the_server_key_is_one_spelling_per_server() -> None:
    names = {"localhost": ["::1", "127.0.0.1"], "algo.example": ["203.0.113.9", "198.51.100.4"]}
    key = lambda url: ownership.server_key(url, lambda host: names[host])  # noqa: E731
    same = [
        "http://127.0.0.1:8080/rest/v1", "http://localhost:8080/rest/v1/",
        "HTTP://LOCALHOST:8080//rest/v1//", "http://[::1]:8080/rest/v1",
    ]  # fmt: skip
    assert {key(url) for url in same} == {"http://loopback:8080/rest/v1"}
    assert key("https://algo.example/rest/v1") == "https://198.51.100.4:443/rest/v1"
    assert key("https://198.51.100.4:443/rest/v1/") == key("https://Algo.Example/rest/v1")
    assert key("http://algo.example/rest/v1") != key("https://algo.example/rest/v1")
    assert key("https://algo.example/rest/v2") != key("https://algo.example/rest/v1")
    unresolved = ownership.server_key("https://No.Such.Host/x", lambda host: [])
    assert unresolved == "https://no.such.host:443/x"
    a = ownership.account_key("http://localhost:9/rest/v1/", "alice", "livetest", "ACC-1")
    assert a == ownership.account_key("http://127.0.0.1:9/rest/v1", "alice", "livetest", "ACC-1")
    assert a != ownership.account_key("http://127.0.0.1:9/rest/v1", "alice", "livetest", "ACC-2")


def test_the_lock_directory_ignores_xdg_runtime_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ownership.RUNTIME_ENV, raising=False)
    monkeypatch.setattr(ownership, "SHARED_DIR", tmp_path / "shm")
    (tmp_path / "shm").mkdir()
    fixed = tmp_path / "shm" / f"multirun-{os.getuid()}"
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    assert ownership.runtime_dir() == fixed
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg"))
    assert ownership.runtime_dir() == fixed
    monkeypatch.setenv(ownership.RUNTIME_ENV, str(tmp_path / "mine"))  # tests, the unit
    assert ownership.runtime_dir() == tmp_path / "mine"


class FakeServer:
    def __init__(self) -> None:
        self.opened: list[str] = []
        self.history: list[str] = []
        self.reads: list[str] = []

    def opened_trades(self) -> list[Trade]:
        self.reads.append("opened_trades")
        return [trade(ref) for ref in self.opened]

    def pending_trades(self) -> list[Trade]:
        self.reads.append("pending_trades")
        return []

    def strategy_trades(self, order_ref: str | None = None, acdate: str = "") -> list[Transaction]:
        self.reads.append("strategy_trades")
        return [Transaction("2", ref, 1.0, 1.0, "") for ref in self.history]


def trade(order_ref: str) -> Trade:
    return Trade("1", order_ref, "BTCUSD", 1, 1.0, 1.0, "")


def test_the_epoch_watch_reports_other_epochs_first_seen_after_start() -> None:
    tripped: list[str] = []
    foreign = ownership.ForeignTrades(tripped.append, prefix="mr-a-", epoch="ABCDEF")
    server = FakeServer()
    server.opened = ["mr-a-OLDOLD-1", "mr-a-ABCDEF-2", "mr-ab-QQQQQQ-1"]
    watch = ownership.EpochWatch(server, foreign, every_s=0.0)  # type: ignore[arg-type]
    watch()  # at start: a previous journal's trade, ours, another account's
    server.history = ["mr-a-ABCDEF-3", "mr-a-OLDOLD-1", "mr-a-7"]
    watch()
    assert not tripped
    server.history.append("mr-a-XYZXYZ-1")  # opened and closed between two checks
    watch()
    assert len(tripped) == 1 and "mr-a-XYZXYZ-1" in tripped[0] and "ABCDEF" in tripped[0]


def test_the_epoch_watch_starts_from_the_listings_the_reconciliation_read() -> None:
    """Its first check takes the start-up reconciliation's listings (not read twice) and
    reads the day's history; a trade listed only after that reconciliation read is no
    part of the start: the next check, reading the listings, reports it."""
    tripped: list[str] = []
    foreign = ownership.ForeignTrades(tripped.append, prefix="mr-a-", epoch="ABCDEF")
    server = FakeServer()
    watch = ownership.EpochWatch(server, foreign, every_s=0.0)  # type: ignore[arg-type]
    watch.listed_at_start([trade("mr-a-OLDOLD-1"), trade("mr-a-ABCDEF-1"), trade("")])
    server.opened = ["mr-a-OLDOLD-1", "mr-a-LATERR-1"]
    server.history = ["mr-a-OLDOLD-2"]
    watch()
    assert server.reads == ["strategy_trades"]
    assert watch.known == {"mr-a-OLDOLD-1", "mr-a-OLDOLD-2"} and not tripped
    watch()
    assert server.reads[1:] == ["opened_trades", "pending_trades", "strategy_trades"]
    assert len(tripped) == 1 and "mr-a-LATERR-1" in tripped[0]


def test_a_trade_of_another_epoch_adopted_after_start_trips_at_once() -> None:
    tripped: list[str] = []
    foreign = ownership.ForeignTrades(tripped.append, prefix="mr-a-", epoch="ABCDEF")
    foreign.adopted("mr-a-ABCDEF-9")  # our own epoch: counted, limit 3
    assert not tripped
    foreign.adopted("mr-a-QWERTY-1")
    assert tripped and "epoch QWERTY" in tripped[0]


def test_foreign_trades_under_our_prefix_trip_the_detector() -> None:
    """Across machines: N trades of ours this worker never sent, within the window."""
    now = [0.0]
    tripped: list[str] = []
    foreign = ownership.ForeignTrades(
        tripped.append, armed=lambda: True, limit=3, window_s=60, clock=lambda: now[0]
    )
    for ref in ("mr-a-X-1", "mr-a-X-2"):
        foreign.adopted(ref)
        now[0] += 40
    foreign.adopted("mr-a-X-3")  # the first is out of the window: 2 in 60 s
    assert not tripped
    foreign.adopted("mr-a-X-4")
    assert tripped and "another process trades this account" in tripped[0]
    assert "mr-a-X-4" in tripped[0]


# --- case 2: a deleted or reset state directory -----------------------------------


def removed(directory: Path) -> bool:
    """``shutil.rmtree``; False when a file appeared meanwhile (the directory not empty)."""
    try:
        shutil.rmtree(directory)
    except OSError:
        return False
    return True


@pytest.mark.process
def test_deleting_the_state_dir_while_running_halts_the_worker(
    tmp_path: Path, sim: SimServer, alice: SimCaller, runtime: Path
) -> None:
    config = write(tmp_path)
    log = tmp_path / "worker.log"
    proc = start(config, "alpha", sim.base_url, log)
    try:
        wait_until(lambda: ours_open(alice, "mr-alpha-"), timeout=30)
        # as `rm -rf` would, again if the running worker wrote a file meanwhile
        wait_until(lambda: removed(tmp_path / "state"), timeout=5)
        wait_until(lambda: "HALTED" in log.read_text(), timeout=8)
        assert "was deleted while this process held it" in log.read_text()
        assert proc.poll() is None  # halted, holding the account lock: a second is refused
        refused = run("run-account", str(config), "alpha", "--server", sim.base_url)
        assert refused.returncode == EXIT_FATAL and f"pid {proc.pid}" in refused.stderr
    finally:
        stop(proc)


@pytest.mark.process
def test_a_reset_journal_never_reuses_the_servers_refs(
    tmp_path: Path, sim: SimServer, alice: SimCaller, runtime: Path
) -> None:
    config = write(tmp_path, on_stop="keep")
    first = start(config, "alpha", sim.base_url, tmp_path / "one.log")
    try:
        (old,) = wait_until(lambda: ours_open(alice, "mr-alpha-"), timeout=30)
    finally:
        stop(first)
    # Closed behind the worker's back, then the state directory is reset: the server
    # knows the old ref (closed, so not listed) while the new journal starts afresh.
    alice.ok("POST", "close_orders", tradeIDs=next(iter(alice.opened())))
    wait_until(lambda: not ours_open(alice, "mr-alpha-"), timeout=5)
    shutil.rmtree(tmp_path / "state")
    second = start(config, "alpha", sim.base_url, tmp_path / "two.log")
    try:
        (new,) = wait_until(lambda: ours_open(alice, "mr-alpha-"), timeout=30)
    finally:
        stop(second)
    assert new != old
    refs = [str(o["orderRef"]) for o in sim.ledger() if str(o["orderRef"]).startswith("mr-")]
    assert len(refs) == len(set(refs)) == 2, refs


@pytest.mark.process
def test_a_new_journal_meeting_trades_of_ours_says_so_in_one_line(
    tmp_path: Path, sim: SimServer, alice: SimCaller, runtime: Path
) -> None:
    config = write(tmp_path, on_stop="keep")
    first = start(config, "alpha", sim.base_url, tmp_path / "one.log")
    try:
        (old,) = wait_until(lambda: ours_open(alice, "mr-alpha-"), timeout=30)
    finally:
        stop(first)
    shutil.rmtree(tmp_path / "state")
    log = tmp_path / "two.log"
    second = start(config, "alpha", sim.base_url, log)
    try:
        wait_until(lambda: "is new, but the server lists" in log.read_text(), timeout=30)
    finally:
        stop(second)
    (line,) = [line for line in log.read_text().splitlines() if "is new" in line]
    assert "1 trade(s) of ours" in line and old in line
    assert ours_open(alice, "mr-alpha-") == [old]  # adopted, not doubled


# --- case 9 (worker part): deterministic failures are not retried ------------------


# `validate` (and so run-account's config load) builds each strategy once: these build
# fine there and fail in the worker, as a strategy whose module or data changed would.
SECOND_BUILD_FAILS = """\
BUILT = []


class S:
    def __init__(self):
        BUILT.append(1)
        if len(BUILT) > 1:
            raise ValueError("fast (20) must be below slow (5)")

    def on_tick(self, ctx):
        return None
"""

SECOND_BUILD_HAS_NO_ON_TICK = """\
BUILT = []


class S:
    def __init__(self):
        BUILT.append(1)
        if len(BUILT) > 1:
            self.on_tick = None

    def on_tick(self, ctx):
        return None
"""


@pytest.mark.process
def test_a_strategy_constructor_error_exits_78_at_once(
    tmp_path: Path, sim: SimServer, runtime: Path
) -> None:
    (tmp_path / "own17_ctor.py").write_text(SECOND_BUILD_FAILS)
    config = write(tmp_path, strategy="own17_ctor:S")
    began = time.monotonic()
    done = run("run-account", str(config), "alpha", "--server", sim.base_url)
    assert done.returncode == EXIT_FATAL and time.monotonic() - began < 20, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "account alpha" in line and "could not be created" in line and "slow (5)" in line


@pytest.mark.process
def test_a_class_without_on_tick_exits_78(tmp_path: Path, sim: SimServer, runtime: Path) -> None:
    (tmp_path / "own17_notick.py").write_text(SECOND_BUILD_HAS_NO_ON_TICK)
    config = write(tmp_path, strategy="own17_notick:S")
    done = run("run-account", str(config), "alpha", "--server", sim.base_url)
    assert done.returncode == EXIT_FATAL and "no on_tick" in done.stderr


@pytest.mark.process
def test_a_refused_api_key_exits_78(tmp_path: Path, sim_factory: object, runtime: Path) -> None:
    restricted = sim_factory(  # type: ignore[operator]
        accounts={
            "users": [
                {"user": "alice", "api_key": "other-key", "accounts": {"livetest": ["ACC-1"]}}
            ]
        }
    )
    config = write(tmp_path)
    done = run("run-account", str(config), "alpha", "--server", restricted.base_url)
    assert done.returncode == EXIT_FATAL, done.stderr
    assert "API key refused" in done.stderr and "alice-key" not in done.stderr


def test_an_unreachable_server_names_the_url_and_cause(tmp_path: Path, runtime: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/rest/v1"
    from multirun.account.process import diagnose

    assert diagnose(url) == f"connection refused by 127.0.0.1:{port}"
    assert diagnose("http://no-such-host.invalid/rest/v1").startswith("DNS: cannot resolve")


# --- case 3: a renamed account with open trades -------------------------------------


@pytest.mark.process
def test_a_renamed_account_is_listed_and_closed_by_multirun_close(
    tmp_path: Path, sim: SimServer, alice: SimCaller, runtime: Path
) -> None:
    config = write(tmp_path, name="alpha", server=sim.base_url)
    proc = start(config, "alpha", sim.base_url, tmp_path / "one.log")
    try:
        wait_until(lambda: ours_open(alice, "mr-alpha-"), timeout=30)
    finally:
        stop(proc)  # on_stop keep: the trade stays open
    assert ours_open(alice, "mr-alpha-")
    renamed = write(tmp_path, name="alpha2", server=sim.base_url)  # alpha -> alpha2
    runner = runner_config.load(renamed)
    (orphan,) = ownership.orphan_journals(runner)
    assert orphan.name == "alpha" and "mr-alpha-" in orphan.trades[0]
    (line,) = ownership.orphan_lines(runner, [orphan])
    assert "multirun close" in line and "alpha" in line
    done = run("close", str(renamed), "alpha")
    assert done.returncode == 0, done.stderr
    assert not ours_open(alice, "mr-alpha-")
    ours = [o for o in sim.ledger() if str(o["orderRef"]).startswith("mr-alpha-")]
    assert ours and all(o["closed_utc"] for o in ours)
    assert ownership.orphan_journals(runner) == []
    journal = Journal(StateDir(tmp_path / "state").account("alpha").journal, "mr-alpha-")
    try:
        assert journal.held() == []
    finally:
        journal.close()
