"""Shared fixtures.

- ``sim``: a started :class:`multirun.sim.SimServer` on 127.0.0.1, port 0 (stopped after
  the test). ``sim.base_url`` is what clients use; ``sim.advance(s)`` moves its clock.
- ``sim_factory(**SimConfig kwargs)``: start more, or differently configured, simulators
  (``faults`` may be a dict of FaultSettings fields); all are stopped after the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from multirun.sim import FaultSettings, SimConfig, SimServer

SimFactory = Callable[..., SimServer]


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
