"""RunnerSpec's lookups a worker makes after the fork: the same answers as a scan of the
accounts, and without copying a page per account (issue 27: 500 accounts starting)."""

from __future__ import annotations

import gc
import os
import resource
from collections.abc import Callable
from pathlib import Path

import pytest

from multirun.account.ticker import wake_offset
from multirun.config import loader
from multirun.config.specs import RunnerSpec

ACCOUNT = """\
  - name: acct-{i:03d}
    user: u{i}
    api_key: key-{i:03d}-long-enough
    accountid: "{i}"
    runmode: livetest
    strategy: random
    instrument: BTCUSD
    volume: 1
    interval: {interval}s
    enabled: {enabled}
"""


def fleet(tmp_path: Path, n: int) -> RunnerSpec:
    """``n`` accounts on 60 s and 5 s intervals, one in seven disabled."""
    body = "".join(
        ACCOUNT.format(i=i, interval=5 if i % 3 == 0 else 60, enabled=str(i % 7 != 0).lower())
        for i in range(n)
    )
    path = tmp_path / "runner.yaml"
    path.write_text(f"server: sim\nstate_dir: {tmp_path}\naccounts:\n{body}")
    return loader.load(path)


def test_lookups_answer_as_a_scan_of_the_accounts(tmp_path: Path) -> None:
    runner = fleet(tmp_path, 40)
    for spec in runner.accounts:
        assert runner.account(spec.name) is spec
    with pytest.raises(KeyError):
        runner.account("nobody")
    for interval in (5, 60, 1):
        scan = tuple(a.name for a in runner.accounts if a.enabled and a.interval_s == interval)
        assert runner.names_on_interval(interval) == scan
    assert runner.names_on_interval(1) == ()


def faults_in_a_fork(work: Callable[[], object]) -> int:
    """The minor page faults (pages first touched or copied) of ``work`` in a forked child."""
    gc.collect()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker
        gc.disable()  # no collection in the middle touching everything
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        work()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        os.write(write, str(faults).encode())
        os._exit(0)
    os.close(write)
    faults = int(os.read(read, 32))
    os.close(read)
    os.waitpid(pid, 0)
    return faults


@pytest.mark.process
def test_a_forked_worker_finds_its_spec_and_peers_in_a_few_pages(tmp_path: Path) -> None:
    """A worker forked from the supervisor (the specs shared) reads its own spec and its
    peers' names (its wake-up offset) copying a few pages, not one per account: scans
    of 200 accounts copied ~240 pages in every worker (~550 at 500 accounts, 2 ms).
    Compared with a scan in the same process (whatever else a fork here touches, e.g.
    under xdist, touches both alike)."""
    runner = fleet(tmp_path, 200)

    def lookup() -> None:
        spec = runner.account("acct-199")
        wake_offset(spec.name, spec.interval_s, runner.names_on_interval(spec.interval_s))

    def scan() -> None:
        spec = next(s for s in runner.accounts if s.name == "acct-199")
        peers = [s.name for s in runner.accounts if s.interval_s == spec.interval_s]
        wake_offset(spec.name, spec.interval_s, peers)

    looked_up, scanned = faults_in_a_fork(lookup), faults_in_a_fork(scan)
    assert scanned - looked_up >= 100, (looked_up, scanned)  # ~50 against ~250
