"""Fixtures shared by the worker tests: ``harness_of(**sim_kwargs)`` builds a
:class:`tests.account.test_worker.Harness` on a simulator of its own, closed after the test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.account.test_worker import Harness


@pytest.fixture
def harness_of(sim_factory: Any, tmp_path: Path) -> Iterator[Any]:
    made: list[Harness] = []

    def make(**sim_kwargs: Any) -> Harness:
        h = Harness(sim_factory(**sim_kwargs), tmp_path / "state")
        made.append(h)
        return h

    yield make
    for h in made:
        for worker in list(h.workers):
            h.close(worker)
