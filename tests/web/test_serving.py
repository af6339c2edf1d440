"""The dashboard's server and reads as a page polls them, in-process: one kept-alive
connection per page, a stop at once even with a page connected, a request whose body is
left unread closing its connection; the log tail read as the file grows equal to one
read whole; a status file changed since the last build masked again; a log tail's or
trades' rows encoded once each."""

from __future__ import annotations

import http.client
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from multirun.core.redact import Redactor
from multirun.core.states import State
from multirun.ops import locate
from multirun.web import fleet as web_fleet
from multirun.web.fleet import AccountFacts, Fleet
from multirun.web.guard import Guard
from multirun.web.server import Dashboard, _compact_rows, _field

KEY = "the-api-key-0123456789"


def make_fleet(where: Path) -> Fleet:
    (where / "alpha").mkdir(parents=True)
    write_status(where, "starting")
    view = locate.FileView(where / "runner.yaml", where, (("alpha", True),))
    return Fleet(
        where,
        file_view=lambda: view,
        accounts={"alpha": AccountFacts("random", "BTCUSD", "close")},
        redactor=Redactor([KEY]),
    )


def write_status(where: Path, error: str) -> None:
    path = where / "alpha" / "status.json"
    path.write_text(json.dumps({"name": "alpha", "ticks": 1, "last_error": error}))
    stamp = time.time_ns() + 5_000_000_000  # a later time than any write before: changed
    os.utime(path, ns=(stamp, stamp))


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[Dashboard]:
    guard = Guard("127.0.0.1", 0, token=None, read_only=False)
    page = Dashboard(make_fleet(tmp_path), guard, None, host="127.0.0.1", port=0)  # type: ignore[arg-type]
    page.start()
    yield page
    page.stop()


def get(conn: http.client.HTTPConnection, path: str, **headers: Any) -> http.client.HTTPResponse:
    conn.request("GET", path, headers=headers)
    reply = conn.getresponse()
    reply.read()
    return reply


def test_a_page_polls_over_one_connection_and_a_stop_closes_it_at_once(
    dashboard: Dashboard,
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=5)
    first = get(conn, "/api/fleet")
    sock = conn.sock
    for path in ("/api/fleet", "/api/accounts/alpha/logs", "/api/accounts/alpha/trades"):
        reply = get(conn, path)
        assert reply.status == 200 and not reply.will_close
    assert first.status == 200 and conn.sock is sock  # the same connection all along
    began = time.monotonic()
    dashboard.stop()
    assert time.monotonic() - began < 1.0
    assert sock is not None and sock.recv(1) == b""  # the page's connection: closed
    with pytest.raises(ConnectionRefusedError):
        get(http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=5), "/")


def test_a_body_left_unread_closes_its_connection(dashboard: Dashboard) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=5)
    origin = f"http://127.0.0.1:{dashboard.port}"
    conn.request("POST", "/api/accounts/alpha/stop", body=b"x" * 5000, headers={"Origin": origin})
    reply = conn.getresponse()
    assert reply.status == 413 and reply.will_close  # its body would read as a request
    reply.read()
    refused = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=5)
    refused.request("POST", "/api/accounts/alpha/stop", body=b"{}", headers={"Origin": "x"})
    assert refused.getresponse().will_close  # refused before its body was read
    assert get(conn, "/api/fleet").status == 200  # a new connection serves as ever


def test_a_log_tail_read_as_it_grows_is_the_tail_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web_fleet, "LOG_TAIL_BYTES", 2000)  # a small window: it overflows
    following = make_fleet(tmp_path)
    log = tmp_path / "alpha" / "worker.log"

    def fresh() -> list[dict[str, Any]]:
        return Fleet(
            tmp_path, file_view=following.file_view, accounts={}, redactor=following.redact
        )._tail("alpha")

    def append(text: str) -> None:
        with log.open("a", encoding="utf-8") as out:
            out.write(text)
        assert following._tail("alpha") == fresh()

    append("2026-01-02T03:04:05.678Z stderr INFO first\n")
    append(f"2026-01-02T03:04:06.000Z stdout key {KEY} in a line\nno stamp\npart")
    append("ial line, then done\n")  # the line being written, shown whole once written
    for i in range(60):  # past the window: the oldest lines leave it
        append(f"2026-01-02T03:05:{i:02d}.000Z stdout line {i}\n")
    rows = following._tail("alpha")
    assert KEY not in json.dumps(rows) and rows[-1]["line"] == "line 59"
    log.rename(log.with_name("worker.log.1"))  # rotated: the new file alone
    append("2026-01-02T03:06:00.000Z stdout after the rotation\n")
    assert [r["line"] for r in following._tail("alpha")] == ["after the rotation"]


def test_a_status_changed_since_the_last_build_is_masked_again(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path)
    assert fleet._read_status()["accounts"][0]["last_error"] == "starting"
    write_status(tmp_path, f"login failed with api_key {KEY}")
    shown = fleet._read_status()
    assert "login failed with api_key" in json.dumps(shown) and KEY not in json.dumps(shown)
    again = fleet._read_status()  # unchanged: read and masked at the last build
    assert again["accounts"][0]["last_error"] == shown["accounts"][0]["last_error"]
    assert list(again) == ["supervisor", "accounts", "left_open", "file_problem",
                           "lost_state_dir", "risk", "exit_code"]  # fmt: skip


def test_only_the_fields_changed_since_the_last_build_are_masked_again(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path)
    status = tmp_path / "alpha" / "status.json"

    def shown(nav: float, instrument: str, stamp: int) -> dict[str, Any]:
        held = [{"instrument": instrument, "volume": 1}]
        text = {"name": "alpha", "nav": nav, "last_error": f"api_key {KEY}", "positions": held}
        status.write_text(json.dumps(text))
        os.utime(status, ns=(stamp, stamp))  # changed: read again
        (row,) = fleet._read_status()["accounts"]
        return row

    first = shown(1, "BTCUSD", time.time_ns() + 5_000_000_000)
    assert KEY not in json.dumps(first) and first["positions"][0]["instrument"] == "BTCUSD"
    second = shown(1.0, KEY, time.time_ns() + 6_000_000_000)
    assert KEY not in json.dumps(second)  # a secret come in a changed field: masked
    assert second["last_error"] is first["last_error"]  # as masked then: not masked again
    assert json.dumps(second["nav"]) == "1.0"  # equal to 1, but shown as it is now


def test_a_field_is_written_as_json_writes_it() -> None:
    values = ["plain", 'q"uote\\', "caf\u00e9 \u2603 \x00\n", State.RUNNING, 0, -7, 10**30, True,
              False, None, 1.0, -0.0, 1e-7, 1e22, 0.1 + 0.2, float("nan"), float("inf"),
              [1, "a", None], {"k": [2.5]}]  # fmt: skip
    for value in values:
        assert _field("f", value) == json.dumps({"f": value}, separators=(",", ":")).encode()[1:-1]


def test_a_list_is_encoded_as_json_would_each_row_once() -> None:
    lines = [{"ts": None, "stream": "stdout", "line": "a"}, {"ts": "x", "line": 1.0}]
    body, kept = _compact_rows(lines, {})
    assert body == json.dumps(lines, separators=(",", ":")).encode()
    later = [lines[1], {"line": "b", "n": [1, True]}]  # one line out, one in (new objects)
    again, kept_now = _compact_rows(later, kept)
    assert again == json.dumps(later, separators=(",", ":")).encode()
    assert kept_now[id(lines[1])] is kept[id(lines[1])]  # the row kept: not encoded again
    assert _compact_rows([], kept_now)[0] == b"[]"
