"""An account is RUNNING as soon as its worker says it is up (reconciled, ticks scheduled),
not only once ``startsecs`` have passed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from multirun.sim import SimServer
from tests.supervisor.test_stop import NAME, start, write_config  # noqa: F401 (a fixture)


@pytest.mark.process
def test_running_when_the_worker_is_up_long_before_startsecs(
    sim: SimServer,
    tmp_path: Path,
    start: Any,  # noqa: F811
) -> None:
    config = write_config(tmp_path, sim.base_url)
    began = time.monotonic()
    sup = start(config, policy={"startsecs": 120.0})
    running = sup.wait_state("RUNNING", 60)
    assert time.monotonic() - began < 60  # startsecs alone would have taken 120 s
    assert running["pid"] and running["restarts"] == 0
    assert f"{NAME}: started" in sup.output()
