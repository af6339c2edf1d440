"""Starting and stopping the simulator, in-process or in the foreground.

:class:`SimServer` runs it in a thread of the caller; :func:`serve` runs it until
SIGINT/SIGTERM.

An idle simulator uses no CPU: the engine sleeps until the broker's next event (a fill,
a holdtime, a time-in-force lapse, a late order's arrival), woken early by a request or a
clock advance that may bring it closer, and polls every ``tick_ms`` only while an order
waits for a price; the HTTP loop blocks in ``select`` until a connection or a shutdown.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from multirun.core.errors import UsageError
from multirun.sim.accounts import load_directory
from multirun.sim.app import SimApp
from multirun.sim.broker import Broker
from multirun.sim.clock import SimClock
from multirun.sim.faults import FaultInjector, FaultSettings
from multirun.sim.http import SimHTTPServer
from multirun.sim.market import Market

log = logging.getLogger("multirun.sim")

# The engine's longest sleep even with nothing due: a wall-clock jump (the simulator's
# time is wall time plus an offset) is then noticed within this, at ~no cost.
ENGINE_MAX_SLEEP_S = 60.0


@dataclass(frozen=True)
class SimConfig:
    host: str = "127.0.0.1"
    port: int = 0  # 0: any free port (the CLI defaults to 8765)
    seed: int = 1
    token_ttl_s: float = 3600.0
    accounts_file: Path | None = None
    accounts: Mapping[str, Any] | None = None  # the accounts file's content, inline
    fill_delay_ms: float = 20.0
    initial_balance: float = 1_000_000.0
    tick_ms: float = 10.0  # how often the engine looks at orders waiting for a price
    faults: FaultSettings = field(default_factory=FaultSettings)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be between 0 and 65535")
        if self.token_ttl_s <= 0:
            raise ValueError("token_ttl_s must be > 0")
        if self.fill_delay_ms < 0 or self.tick_ms <= 0 or self.initial_balance < 0:
            raise ValueError("fill_delay_ms and initial_balance must be >= 0, tick_ms > 0")


class SimServer:
    """The simulator in background threads: ``with SimServer(cfg) as sim: ...``."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config = config or SimConfig()
        try:
            directory = load_directory(config.accounts_file, config.accounts)
        except ValueError as error:
            raise UsageError(str(error)) from None
        self.clock = SimClock()
        self.market = Market(config.seed)
        self.broker = Broker(
            self.market,
            self.clock,
            directory,
            token_ttl_s=config.token_ttl_s,
            fill_delay_s=config.fill_delay_ms / 1000.0,
            initial_balance=config.initial_balance,
        )
        self._stopping = threading.Event()
        self.app = SimApp(self.broker, FaultInjector(config.faults, config.seed), self._stopping)
        self._httpd: SimHTTPServer | None = None
        self._threads: list[threading.Thread] = []

    # --- lifecycle ------------------------------------------------------------

    def start(self) -> SimServer:
        if self._httpd is not None:
            return self
        try:
            self._httpd = SimHTTPServer((self.config.host, self.config.port), self.app)
        except OSError as error:
            where = f"{self.config.host}:{self.config.port}"
            raise UsageError(f"cannot listen on {where}: {error.strerror or error}") from None
        self._threads = [
            threading.Thread(target=self._serve_http, name="sim-http", daemon=True),
            threading.Thread(target=self._engine, name="sim-engine", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self.broker.wakeup.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd.close_connections()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _serve_http(self) -> None:
        assert self._httpd is not None
        self._httpd.serve_forever()

    def _engine(self) -> None:
        tick = max(0.001, self.config.tick_ms / 1000.0)
        wakeup = self.broker.wakeup
        while not self._stopping.is_set():
            # Cleared before looking: a change after this point sets it again, so the wait
            # below returns at once instead of sleeping past the change.
            wakeup.clear()
            sleep = tick
            try:
                self.broker.process()
                due = self.broker.next_event()
                if due is None:
                    sleep = ENGINE_MAX_SLEEP_S
                else:  # not below a tick: an event just missed is caught on the next turn
                    sleep = min(ENGINE_MAX_SLEEP_S, max(tick, due - self.clock.now()))
            except Exception:
                log.exception("sim engine step failed")
            wakeup.wait(sleep)

    # --- addresses ------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("SimServer is not started")
        return int(self._httpd.server_address[1])

    @property
    def root_url(self) -> str:
        host = self.config.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/rest/v1"

    # --- inspection and control -----------------------------------------------

    def set_faults(self, **changes: Any) -> dict[str, object]:
        """Change fault settings; names left out keep their values (as POST /sim/faults)."""
        return self.app.set_faults(changes)

    def faults(self) -> dict[str, object]:
        return self.app.faults.settings.to_dict()

    def ledger(self) -> list[dict[str, Any]]:
        return self.broker.ledger()

    def stats(self) -> dict[str, Any]:
        return self.app.stats_snapshot()

    def advance(self, seconds: float) -> None:
        """Move the simulator's clock forward (fills, holdtime, timeinforce, tokens)."""
        self.clock.advance(seconds)
        self.broker.process()

    def set_price(self, instrument: str, mid: float) -> dict[str, Any]:
        """Pin ``instrument``'s mid price from now on (the walk continues from there)."""
        return self.app.pin_price(instrument.upper(), mid)

    def revoke_all_tokens(self) -> None:
        self.broker.revoke_all()


def serve(config: SimConfig, on_ready: Callable[[str], None] | None = None) -> None:
    """Run the simulator in the foreground until SIGINT or SIGTERM (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("multirun.sim.serve must run in the main thread (it handles signals)")
    # A self-pipe, not a polled Event: the handler writes a byte, the main thread sleeps in
    # select until then (PEP 475 retries it after any other signal).
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    stopped: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        stopped.append(signum)
        with contextlib.suppress(OSError):
            os.write(write_fd, b"x")

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with SimServer(config) as sim:
            if on_ready is not None:
                on_ready(sim.base_url)
            while not stopped:
                select.select([read_fd], [], [])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        os.close(read_fd)
        os.close(write_fd)
