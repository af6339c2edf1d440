"""logs: line splitting and masking as the router uses them, prefixes and colours, JSON lines,
rotation."""

from __future__ import annotations

import io
import json
import os
import threading
import time
from pathlib import Path

from multirun.core.redact import MAX_LINE, LineSplitter, Redactor
from multirun.core.statedir import StateDir
from multirun.supervisor.output import (
    LogRouter,
    Printer,
    RotatingFile,
    TerminalWriter,
    colour_wanted,
)
from tests.conftest import wait_until


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_line_splitter_joins_partial_writes_and_flushes_the_rest() -> None:
    split = LineSplitter()
    assert split.feed(b"one\ntw") == ["one"]
    assert split.feed(b"o\r\nthr") == ["two"]
    assert split.feed(b"\xff\n") == ["thr\ufffd"]  # undecodable bytes never break it
    assert split.flush() == []
    assert split.feed(b"tail") == [] and split.flush() == ["tail"]
    long = split.feed(b"x" * (MAX_LINE + 10))
    assert long == ["x" * MAX_LINE] and split.flush() == ["x" * 10]


def test_a_secret_across_the_cut_of_an_overlong_line_is_masked() -> None:
    secret = "s3cret-api-key-value"
    line = b"x" * (MAX_LINE - 6) + secret.encode() + b"y" * 70000 + b"\n"
    split = LineSplitter([secret])
    pieces = [p for i in range(0, len(line), 65536) for p in split.feed(line[i : i + 65536])]
    assert len(pieces) > 1 and len(pieces[0]) == MAX_LINE
    joined = "".join(pieces)
    assert secret[:6] not in joined and secret[6:] not in joined and "x****y" in joined
    plain = LineSplitter()  # without secrets: cut exactly at MAX_LINE, as before
    assert [len(p) for p in plain.feed(b"z" * (MAX_LINE + 5))] == [MAX_LINE]


def test_api_key_and_token_values_are_masked_wherever_they_appear() -> None:
    scrub = Redactor()
    url = "GET /rest/v1/balance?user=u&api_key=k3y-value&token=abcDEF123&runmode=livetest"
    assert scrub(url) == "GET /rest/v1/balance?user=u&api_key=****&token=****&runmode=livetest"
    assert scrub('{"res": {"token": "abcDEF123", "expires": 3}}') == (
        '{"res": {"token": "****", "expires": 3}}'
    )
    assert scrub("{'token': 'abc123'} token='xyz'") == "{'token': '****'} token='****'"
    words = "session token refused; token_expires_utc: 2026-01-02 (token: renewed)"
    assert scrub(words) == words


def test_redactor_masks_every_known_secret_longest_first() -> None:
    scrub = Redactor(["abcd1234", "abcd1234-more", ""])
    assert scrub("key=abcd1234-more and abcd1234, ab") == "key=**** and ****, ab"
    assert Redactor()("nothing") == "nothing"
    # A secret shorter than MIN_SECRET_LEN is masked only as a whole word.
    assert Redactor(["ab"])("key=abc and ab") == "key=abc and ****"


def test_printer_prefixes_and_colours_only_on_a_tty(monkeypatch) -> None:
    plain = io.StringIO()
    Printer(["a", "longer"], stream=plain).write("a", "hello", ts=3725.5)
    assert plain.getvalue() == "01:02:05 a          | hello\n"

    monkeypatch.delenv("NO_COLOR", raising=False)
    tty = Tty()
    printer = Printer(["a", "b"], stream=tty)
    printer.write("a", "x", ts=0)
    printer.write("b", "y", ts=0)
    printer.write("supervisor", "z", ts=0)
    first, second, third = tty.getvalue().splitlines()
    assert first.startswith("\033[36m00:00:00 a") and second.startswith("\033[33m00:00:00 b")
    assert third.startswith("\033[1m00:00:00 supervisor")

    assert colour_wanted(Tty(), {"NO_COLOR": "1"}) is False
    assert colour_wanted(Tty(), {}) is True
    assert colour_wanted(io.StringIO(), {}) is False


def test_json_lines() -> None:
    out = io.StringIO()
    Printer(["a"], stream=out, log_format="json").write("a", "hé", "stdout", ts=0.5)
    assert json.loads(out.getvalue()) == {
        "ts": "1970-01-01T00:00:00.500Z", "account": "a", "stream": "stdout", "line": "hé",
    }  # fmt: skip


def test_a_closed_terminal_does_not_stop_the_printer() -> None:
    out = io.StringIO()
    printer = Printer(["a"], stream=out)
    out.close()
    printer.write("a", "lost")  # no exception
    assert printer.broken


def test_rotating_file_keeps_n_backups_0600(tmp_path: Path) -> None:
    path = StateDir(tmp_path).account("a").log
    log = RotatingFile(path, max_bytes=100, keep=2)
    for i in range(20):
        log.write(f"{i:02d} " + "x" * 27 + "\n")  # 31 bytes: 3 lines a file
    log.close()
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["worker.log", "worker.log.1", "worker.log.2"]
    assert path.read_text().startswith("18 ")
    assert path.with_name("worker.log.1").read_text().startswith("15 ")
    for name in files:
        each = path.with_name(name)
        assert each.stat().st_size <= 100 and each.stat().st_mode & 0o777 == 0o600


def test_router_scrubs_before_printing_and_writing(tmp_path: Path) -> None:
    out = io.StringIO()
    router = LogRouter.for_accounts(["a"], tmp_path, ["topsecret"], stream=out)
    router.line("a", "leak topsecret here", "stderr")
    router.event("a: started with topsecret", "a")
    router.close()
    assert "topsecret" not in out.getvalue()
    assert "a          | leak **** here" in out.getvalue()
    layout = StateDir(tmp_path)
    text = layout.account("a").log.read_text()
    assert "stderr leak **** here" in text and "supervisor a: started with ****" in text
    assert "topsecret" not in text
    own = layout.supervisor_log.read_text()
    assert "supervisor a: started with ****" in own and "leak" not in own


def test_lines_of_a_child_without_a_file_go_to_the_supervisor_log(tmp_path: Path) -> None:
    router = LogRouter.for_accounts(["a"], tmp_path, [], stream=io.StringIO())
    router.line("sim", "listening", "stderr")
    router.close()
    assert StateDir(tmp_path).supervisor_log.read_text().endswith(" sim stderr listening\n")


def test_a_terminal_that_stops_reading_never_blocks_the_writer() -> None:
    r, w = os.pipe()
    writer = TerminalWriter(w, max_pending=50)
    began = time.monotonic()
    for i in range(5000):  # about 560 kB: far beyond what a pipe buffers
        writer.put(f"line {i:05d} " + "x" * 100 + "\n")
    assert time.monotonic() - began < 2.0 and writer.left_out > 0
    chunks: list[bytes] = []

    def read_all() -> None:
        while data := os.read(r, 65536):
            chunks.append(data)

    reader = threading.Thread(target=read_all)
    reader.start()  # the reader comes back
    wait_until(writer.pending.empty)
    writer.put("after\n")
    writer.close()
    os.close(w)
    reader.join(5)
    os.close(r)
    text = b"".join(chunks).decode()
    assert text.startswith("line 00000") and text.endswith("line(s) not shown here: the "
                                                           "terminal was not reading; see the "
                                                           "log files]\nafter\n")  # fmt: skip


def test_the_printer_writes_through_a_terminal_writer_for_real_descriptors(tmp_path) -> None:
    with (tmp_path / "out").open("w") as out:
        printer = Printer(["a"], stream=out)
        assert printer.writer is not None
        printer.write("a", "hello", ts=0)
        printer.close()
    assert (tmp_path / "out").read_text() == "00:00:00 a          | hello\n"
