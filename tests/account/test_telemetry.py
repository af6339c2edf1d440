"""The worker's counters live in a mapped file: a count is seen at once, nothing is lost."""

from __future__ import annotations

import errno
import math
import os
from array import array
from pathlib import Path

import pytest

from multirun.account import telemetry as telemetry_module
from multirun.account.telemetry import LATENESS_BUCKETS, Telemetry
from multirun.core import procutil, slotfile, statefiles
from multirun.core.statedir import AccountDir, StateDir
from tests.clocks import ManualClock


def account_dir(tmp_path: Path) -> AccountDir:
    account = StateDir(tmp_path).account("a")
    account.path.mkdir(parents=True)
    return account


def ticks(account: AccountDir) -> float:
    found = statefiles.read_metrics(account)
    return sum(c["value"] for c in found.get("counters", []) if c["name"] == "ticks_total")


def test_a_ticks_counts_are_in_the_file_at_its_end_the_same_file(tmp_path: Path) -> None:
    """Read through the file (read(2), as the metrics child reads it): what is copied into
    the shared mapping is what any reader of the file sees; no file is written."""
    account = account_dir(tmp_path)
    telemetry = Telemetry(account)
    telemetry.write()  # makes the file
    inode = os.stat(account.metrics).st_ino
    telemetry.count("ticks_total")
    telemetry.count("ticks_total", 2)
    telemetry.observe("tick_lateness_seconds", 0.0015)
    telemetry.last_success = 1_800_000_000.5
    assert ticks(account) == 0  # not yet: at the tick's end
    telemetry.write()
    found = statefiles.read_metrics(account)
    assert ticks(account) == 3
    late = found["histograms"]["tick_lateness_seconds"]
    assert late["bounds"] == list(LATENESS_BUCKETS) and late["sum"] == 0.0015
    assert late["counts"][LATENESS_BUCKETS.index(0.002)] == 1 and sum(late["counts"]) == 1
    assert found["last_successful_tick"] == 1_800_000_000.5
    assert os.stat(account.metrics).st_ino == inode  # the same file, updated in place


def test_a_file_that_cannot_be_made_keeps_the_counts_and_is_made_later(tmp_path: Path) -> None:
    account = StateDir(tmp_path).account("a")  # its directory missing: the file cannot be made
    clock = ManualClock(start=100.0)
    telemetry = Telemetry(account, clock=clock.monotonic)
    telemetry.write()
    telemetry.count("ticks_total", 2)
    assert not account.metrics.exists()
    account.path.mkdir(parents=True)
    telemetry.write()  # too soon after the failure: not tried
    assert not account.metrics.exists()
    clock.advance(telemetry_module.RETRY_S)
    telemetry.write()
    assert ticks(account) == 2  # what was counted meanwhile is in it
    telemetry.count("ticks_total")
    telemetry.write()
    assert ticks(account) == 3


def test_a_removed_replaced_or_cut_file_is_made_again_with_the_counts(tmp_path: Path) -> None:
    """Never a SIGBUS: a file cut short under the mapping is not written to again."""
    account = account_dir(tmp_path)
    telemetry = Telemetry(account)
    telemetry.write()
    telemetry.count("ticks_total", 4)
    account.metrics.unlink()  # an operator cleaning the state directory
    telemetry.write()  # the tick's end
    assert ticks(account) == 4
    replaced = account.path / "other"
    replaced.write_bytes(b"not ours")
    replaced.replace(account.metrics)
    telemetry.count("ticks_total")
    telemetry.write()
    assert ticks(account) == 5
    os.truncate(account.metrics, 0)  # cut in place: the mapped inode itself
    telemetry.count("ticks_total")
    telemetry.write()
    assert ticks(account) == 6


def test_a_new_worker_starts_from_zero(tmp_path: Path) -> None:
    """A restarted worker's counters restart (as Prometheus expects of a restarted
    process); a reader never sees a half-made file (made whole, then renamed)."""
    account = account_dir(tmp_path)
    first = Telemetry(account)
    first.write()
    first.count("ticks_total", 9)
    second = Telemetry(account)
    second.write()
    assert ticks(account) == 0
    assert [p.name for p in account.path.iterdir()] == ["metrics.bin"]  # no temporary left
    assert oct(os.stat(account.metrics).st_mode & 0o777) == "0o600"


@pytest.mark.parametrize(
    "raw",
    [b"", b"MRSLOTS1", b"MRSLOTS1\xff\xff\xff\x7f{}", b"MRSLOTS1\x02\x00\x00\x00[]\0\0" + bytes(8),
     b"MRSLOTS1\x02\x00\x00\x00{}\0\0" + bytes(5), b"JSON{...}" + bytes(16)],
)  # fmt: skip
def test_what_is_not_a_metrics_file_reads_as_nothing(tmp_path: Path, raw: bytes) -> None:
    account = account_dir(tmp_path)
    account.metrics.write_bytes(raw)
    assert statefiles.read_metrics(account) == {}


def test_a_header_that_does_not_describe_its_slots_reads_as_nothing(tmp_path: Path) -> None:
    account = account_dir(tmp_path)
    Telemetry(account).write()
    whole = account.metrics.read_bytes()
    account.metrics.unlink()
    account.metrics.write_bytes(whole + bytes(8))  # one slot too many
    assert statefiles.read_metrics(account) == {}
    odd = statefiles.MetricsLayout([("ticks_total", ())], {"h": [1.0]})
    assert statefiles.decode_metrics(b'{"counters": "x"}', odd.empty()) == {}
    assert statefiles.decode_metrics(b"[]", odd.empty()) == {}


def test_an_older_versions_metrics_json_is_removed(tmp_path: Path) -> None:
    account = account_dir(tmp_path)
    for stale in ("metrics.json", ".metrics.json.a", ".metrics.json.b"):
        (account.path / stale).write_text("{}")
    (account.path / "status.json").write_text("{}")
    Telemetry(account).write()
    assert sorted(p.name for p in account.path.iterdir()) == ["metrics.bin", "status.json"]


def test_where_files_cannot_be_mapped_the_file_is_written_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file system that maps no file (mmap: ENODEV, some FUSE ones): every tick's end
    makes the file anew, as a JSON state file is written; the counts are right."""

    def no_mapping(*_args: object) -> None:
        raise OSError(errno.ENODEV, "No such device")

    monkeypatch.setattr(slotfile.mmap, "mmap", no_mapping)
    account = account_dir(tmp_path)
    telemetry = Telemetry(account)
    telemetry.write()
    assert telemetry._file is not None and not telemetry._file.mapped
    for expected in (1, 2):
        telemetry.count("ticks_total")
        telemetry.write()
        assert ticks(account) == expected
    assert [p.name for p in account.path.iterdir()] == ["metrics.bin"]


def test_damaged_slots_and_another_versions_header_never_break_a_reader(tmp_path: Path) -> None:
    """NaN and infinities where counts belong read as they are (the page shows them), and
    a header of another version reads as nothing: the metrics child never fails on them."""
    from multirun.services.metrics import StateDirPage

    layout = StateDir(tmp_path)
    procutil.write_json_atomic(layout.supervisor_json, {"accounts": {"a": {"state": "RUNNING"}}})
    account = layout.account("a")
    account.path.mkdir(parents=True)
    Telemetry(account).write()
    whole = account.metrics.read_bytes()
    found = slotfile.parse(whole)
    assert found is not None
    header, slots = found
    slots = array("d", [math.nan if i % 2 else math.inf for i in range(len(slots))])
    account.metrics.unlink()  # not in place: the mapping holds that inode
    account.metrics.write_bytes(whole[: len(whole) - 8 * len(slots)] + slots.tobytes())
    late = statefiles.read_metrics(account)["histograms"]["tick_lateness_seconds"]
    assert any(math.isnan(c) for c in late["counts"])
    assert b"multirun_tick_lateness_seconds_bucket" in StateDirPage(tmp_path).render()
    other = header.replace(b'"version":1', b'"version":2')
    assert statefiles.decode_metrics(other, slots) == {}
