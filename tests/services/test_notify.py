"""Alerts (``notify:``): real supervisors on the simulator post to a local HTTP receiver."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from multirun.config import loader as config
from multirun.config.schema import document
from multirun.config.specs import NotifyTarget
from multirun.core import procutil
from multirun.core.redact import MASK, Secret, mask_url
from multirun.core.statedir import StateDir
from multirun.services.notify import EVENTS, FORMATS, deliver, formats
from multirun.services.notify.events import Event, Watcher
from multirun.sim import SimServer
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "hooktoken-SECRET-9f3a"  # in every webhook path: must never be printed
KEY = "alice-key-1234"
STRATEGY = """
import os
import re


class Refused:  # built by `start` (a child of the test); refused in the worker: exit 78
    def __init__(self, params):
        if os.getppid() != int(os.environ["MR_TEST_PARENT_PID"]):
            raise ValueError("refused on purpose")

    def on_tick(self, ctx):
        return "FLAT"


class Boom:
    def __init__(self, params):
        pass

    def on_tick(self, ctx):
        raise RuntimeError("boom on purpose")


class Flat:
    def __init__(self, params):
        pass

    def on_tick(self, ctx):
        return "FLAT"


class Buy:
    def __init__(self, params):
        pass

    def on_tick(self, ctx):
        return "BUY"
"""


class Receiver:
    """A webhook on 127.0.0.1: records each POST (path, JSON body); answers by ``mode``."""

    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(size) or b"{}")
                receiver.posts.append((self.path, body))
                if receiver.mode == "hang":
                    receiver.release.wait(30)
                code = 500 if receiver.mode == "500" else 200
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True).start()

    def url(self, fmt: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{fmt}/{TOKEN}?chat_id=42"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Any]:
    made: list[Receiver] = []

    def make(mode: str = "ok") -> Receiver:
        made.append(Receiver(mode))
        return made[-1]

    yield make
    for r in made:
        r.close()


def account(name: str, strategy: str, extra: str = "") -> str:
    return (
        f"  - name: {name}\n    user: alice\n    api_key: {KEY}\n    accountid: ACC-{name}\n"
        f"    runmode: livetest\n    strategy: {strategy}\n    instrument: BTCUSD\n"
        f"    volume: 1\n    interval: 1s\n{extra}"
    )


def write(tmp_path: Path, server: str, targets: list[tuple[str, str]], accounts: str) -> Path:
    module = f"notifystrat_{abs(hash(str(tmp_path))) % 10**9}"
    (tmp_path / f"{module}.py").write_text(STRATEGY)
    text = f"version: 1\nserver: {server}\nstate_dir: {tmp_path / 'state'}\nstop_timeout: 10\n"
    text += "notify:\n"
    for index, (fmt, _url) in enumerate(targets):
        text += f"  - url: ${{HOOK_{index}}}\n    format: {fmt}\n"
    text += "accounts:\n" + accounts.replace("MODULE", module)
    path = tmp_path / "runner.yaml"
    path.write_text(text)
    return path


def start(tmp_path: Path, path: Path, targets: list[tuple[str, str]]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MR_TEST_PARENT_PID": str(os.getpid())}
    env.update({f"HOOK_{i}": url for i, (_fmt, url) in enumerate(targets)})
    with (tmp_path / "out.log").open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-c", "from multirun.cli.app import main; main()", "start", str(path)],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
        )  # fmt: skip


@pytest.fixture
def running() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def ticks(tmp_path: Path, name: str) -> int:
    status = procutil.read_json(StateDir(tmp_path / "state").account(name).status) or {}
    return int(status.get("ticks") or 0)


def events_of(r: Receiver, fmt: str) -> list[str]:
    """The texts ``r`` got in format ``fmt``, as each format carries them."""
    key = {"json": "text", "slack": "text", "discord": "content", "telegram": "text"}[fmt]
    return [str(body.get(key)) for path, body in r.posts if path.startswith(f"/{fmt}/")]


@pytest.mark.process
def test_a_forced_fatal_and_halted_reach_a_webhook_in_each_format_masked(
    sim: SimServer, tmp_path: Path, receiver: Any, running: list[Any]
) -> None:
    r = receiver()
    targets = [(fmt, r.url(fmt)) for fmt in FORMATS]
    accounts = account("bad", "MODULE:Refused") + account(
        "halts", "MODULE:Boom", "    halt_after_failures: 1\n"
    )
    path = write(tmp_path, sim.base_url, targets, accounts)
    began = time.monotonic()
    proc = start(tmp_path, path, targets)
    running.append(proc)

    def got(fmt: str, what: str) -> bool:
        assert proc.poll() is None, (tmp_path / "out.log").read_text()
        return any(what in text for text in events_of(r, fmt))

    for fmt in FORMATS:
        wait_until(lambda f=fmt: got(f, "bad: FATAL"), timeout=20)  # type: ignore[misc]
        wait_until(lambda f=fmt: got(f, "halts: HALTED"), timeout=20)  # type: ignore[misc]
    took = time.monotonic() - began
    assert took < 15, took
    json_bodies = [b for p, b in r.posts if p.startswith("/json/")]
    fatal = next(b for b in json_bodies if b["event"] == "fatal")
    assert fatal["account"] == "bad" and fatal["state"] == "FATAL"
    assert "refused on purpose" in fatal["text"] and "exit 78" in fatal["text"]
    halted = next(b for b in json_bodies if b["event"] == "halted")
    assert "boom on purpose" in halted["text"]
    telegram = [b for p, b in r.posts if p.startswith("/telegram/")]
    assert all(b["chat_id"] == "42" for b in telegram)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)
    shown = (tmp_path / "out.log").read_text()
    shown += (tmp_path / "state" / "supervisor.log").read_text()
    everything = shown + json.dumps(r.posts[::1] and [b for _p, b in r.posts])
    assert TOKEN not in everything and KEY not in everything
    assert f"http://127.0.0.1:{r.server.server_address[1]}/{MASK}" in shown  # masked, named


@pytest.mark.process
def test_a_hanging_or_failing_webhook_delays_no_tick_and_is_retried(
    sim: SimServer, tmp_path: Path, receiver: Any, running: list[Any]
) -> None:
    hang, fail = receiver("hang"), receiver("500")
    targets = [("json", hang.url("json")), ("slack", fail.url("slack"))]
    accounts = account("bad", "MODULE:Refused") + account("good", "MODULE:Flat")
    path = write(tmp_path, sim.base_url, targets, accounts)
    proc = start(tmp_path, path, targets)
    running.append(proc)
    wait_until(lambda: len(hang.posts) >= 1 and len(fail.posts) >= 2, timeout=20)
    assert all("bad: FATAL" in b["text"] for _p, b in fail.posts)  # the same alert, retried
    # the hanging webhook holds its post: the account goes on ticking on time meanwhile
    before, began = ticks(tmp_path, "good"), time.monotonic()
    wait_until(lambda: ticks(tmp_path, "good") >= before + 3, timeout=8)
    assert time.monotonic() - began < 5
    status = procutil.read_json(StateDir(tmp_path / "state").account("good").status) or {}
    assert status["state"] == "RUNNING"
    stopping = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)
    assert time.monotonic() - stopping < 9  # the notifier gives up within its 3 s deadline
    assert len(hang.posts) == 1
    shown = (tmp_path / "out.log").read_text()
    assert TOKEN not in shown and "HTTP 500" in shown and "retrying" in shown


@pytest.mark.process
def test_notify_test_sends_one_message_per_target_and_fails_on_a_refusal(
    tmp_path: Path, receiver: Any
) -> None:
    ok, bad = receiver(), receiver("500")
    targets = [("discord", ok.url("discord")), ("json", bad.url("json"))]
    path = write(tmp_path, "http://127.0.0.1:9", targets, account("a", "MODULE:Flat"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.update({f"HOOK_{i}": url for i, (_fmt, url) in enumerate(targets)})

    def notify_test() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", "from multirun.cli.app import main; main()", "notify-test",
             str(path)],
            capture_output=True, text=True, timeout=30, cwd=ROOT, env=env,
        )  # fmt: skip

    done = notify_test()
    assert done.returncode == 1, done.stderr
    port_ok, port_bad = ok.server.server_address[1], bad.server.server_address[1]
    assert f"http://127.0.0.1:{port_ok}/{MASK} (discord): ok" in done.stdout
    assert f"http://127.0.0.1:{port_bad}/{MASK} (json): failed: HTTP 500" in done.stdout
    assert TOKEN not in done.stdout + done.stderr
    assert "test message from multirun" in ok.posts[0][1]["content"]
    bad.mode = "ok"
    assert notify_test().returncode == 0


def test_the_schema_lists_the_events_and_formats_the_notifier_knows() -> None:
    items = document()["properties"]["notify"]["items"]["properties"]
    assert tuple(items["events"]["items"]["enum"]) == EVENTS
    assert tuple(items["format"]["enum"]) == FORMATS


def test_a_notify_url_is_checked_and_never_quoted(tmp_path: Path) -> None:
    path = tmp_path / "runner.yaml"
    path.write_text(
        "version: 1\nserver: sim\nnotify:\n  - url: ftp://x/" + TOKEN + "\n    format: xml\n"
        "accounts:\n" + account("a", "random")
    )
    report = config.validate(path)
    shown = "\n".join(p.message for p in report.problems)
    assert "must be an http:// or https:// URL" in shown and "must be one of" in shown
    assert TOKEN not in shown


def test_a_daily_summary_at_midnight_utc_and_recovery(tmp_path: Path) -> None:
    layout = StateDir(tmp_path)
    now = [time.mktime((2026, 1, 1, 23, 59, 0, 0, 0, 0)) - time.timezone]
    watcher = Watcher(layout, ["a"], clock=lambda: now[0])
    layout.account("a").path.mkdir(parents=True)
    status = {"pid": 7, "state": "HALTED", "orders_sent": 4, "realized_pl_today": 1.5,
              "nav": 1001.5, "open_trades": 1, "halted_reason": "3 failed ticks"}  # fmt: skip
    procutil.write_json_atomic(layout.account("a").status, status)
    procutil.write_json_atomic(
        layout.supervisor_json, {"accounts": {"a": {"state": "RUNNING", "pid": 7}}}
    )
    assert [e.kind for e in watcher.poll()] == ["halted"]
    assert watcher.poll() == []
    procutil.write_json_atomic(layout.account("a").status, {**status, "state": "RUNNING"})
    now[0] += 120
    events = watcher.poll()
    assert [e.kind for e in events] == ["daily_summary", "recovered"]
    assert "a: HALTED, 4 order(s) sent" in events[0].text and "P&L today 1.50" in events[0].text


@pytest.mark.slow
def test_a_full_queue_drops_the_oldest_and_says_how_many(receiver: Any) -> None:
    r = receiver("hang")
    target = NotifyTarget(Secret(r.url("slack")), "slack")
    sender = deliver.Sender(target, deliver.redactor_for([target]), maxlen=2, attempts=1)
    sender.put(Event("fatal", "event 0"))
    wait_until(lambda: len(r.posts) == 1)  # event 0 is held by the hanging webhook
    for n in range(1, 5):
        sender.put(Event("fatal", f"event {n}"))
    assert [e.text for e in sender.queue] == ["event 3", "event 4"] and sender.dropped == 2
    r.mode = "ok"
    r.release.set()
    wait_until(lambda: len(r.posts) == 3)
    assert "2 earlier alert(s) dropped" in r.posts[1][1]["text"]
    assert mask_url(r.url("slack")).endswith(f"/{MASK}")
    assert formats.body("discord", Event("x", "y" * 3000), str)["content"].endswith("...")


@pytest.mark.process
def test_a_stop_that_leaves_trades_open_is_told_after_the_workers_are_gone(
    sim: SimServer, tmp_path: Path, receiver: Any, running: list[Any]
) -> None:
    r = receiver()
    targets = [("json", r.url("json"))]
    keeper = account("keeper", "random", "    on_stop: keep\n    params:\n      seed: 3\n")
    path = write(tmp_path, sim.base_url, targets, keeper)
    proc = start(tmp_path, path, targets)
    running.append(proc)
    status = StateDir(tmp_path / "state").account("keeper").status

    def holding() -> bool:
        assert proc.poll() is None, (tmp_path / "out.log").read_text()
        return int((procutil.read_json(status) or {}).get("open_trades") or 0) >= 1

    wait_until(holding, timeout=20)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)
    told = [b for _p, b in r.posts if b["event"] == "left_open"]
    assert len(told) == 1 and "keeper: kept open (on_stop: keep)" in told[0]["text"]
    assert told[0]["accounts"]["keeper"]["trades"]


@pytest.mark.process
def test_an_order_the_server_refuses_is_told_with_its_reason(
    sim: SimServer, tmp_path: Path, receiver: Any, running: list[Any]
) -> None:
    r = receiver()
    targets = [("slack", r.url("slack"))]
    huge = account("greedy", "MODULE:Buy").replace("volume: 1\n", "volume: 1000000\n")
    path = write(tmp_path, sim.base_url, targets, huge)
    proc = start(tmp_path, path, targets)
    running.append(proc)

    def told() -> bool:
        assert proc.poll() is None, (tmp_path / "out.log").read_text()
        return any("refused by the server" in b["text"] for _p, b in r.posts)

    wait_until(told, timeout=20)
    text = next(b["text"] for _p, b in r.posts if "refused by the server" in b["text"])
    # one alert for the refusals the notifier saw since its last look (1 s apart): one,
    # or two when the machine is slow and two ticks' refusals fall in one look
    assert re.match(r"multirun: greedy: \d+ order\(s\) refused", text) and "margin" in text, text
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)


ISSUE_TEXT = "price <!channel> @everyone <b>x</b> &"  # a strategy's error, verbatim (issue 25)


def test_a_text_is_posted_as_literal_text_in_each_format(receiver: Any) -> None:
    """Each chat format gets the text escaped for its service, masked before escaped (a
    key with ``_`` in it is masked, not split by escapes); the real sender posts it."""
    r = receiver()
    secret = "alice_key_42"
    event = Event("halted", f"a: HALTED: {ISSUE_TEXT} (key {secret})", "a", "HALTED")
    for fmt in FORMATS:
        target = NotifyTarget(Secret(r.url(fmt)), fmt)
        deliver.Sender(target, deliver.redactor_for([target], [secret]), attempts=1).put(event)
    wait_until(lambda: len(r.posts) == len(FORMATS))
    got = {path.split("/")[1]: body for path, body in r.posts}
    line = f"multirun: a: HALTED: {ISSUE_TEXT} (key {MASK})"
    slack = "price &lt;!channel&gt; @everyone &lt;b&gt;x&lt;/b&gt; &amp;"
    slack = f"multirun: a: HALTED: {slack} (key ****)"
    assert got["slack"] == {"text": slack, "mrkdwn": False}
    discord = r"multirun: a: HALTED: price \<!channel\> \@everyone \<b\>x\</b\> & (key \*\*\*\*)"
    assert got["discord"] == {"content": discord, "allowed_mentions": {"parse": []}}
    assert got["telegram"] == {"text": line, "chat_id": "42"}  # plain text: no parse_mode
    assert got["json"]["text"] == f"a: HALTED: {ISSUE_TEXT} (key {MASK})"
    assert secret not in json.dumps(r.posts)


def test_an_escaped_text_reads_back_as_it_was_and_is_cut_between_escapes() -> None:
    every = "a & b < c > d <!here> <@U1> *x* _y_ ~z~ `q` |s| [l](u) # h @x \\ ok"
    slack = formats.body("slack", Event("x", every), str)["text"]
    unescaped = slack.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    assert unescaped == f"multirun: {every}" and "<" not in slack and ">" not in slack
    discord = formats.body("discord", Event("x", every), str)["content"]
    assert re.sub(r"\\(.)", r"\1", discord) == f"multirun: {every}"
    assert not re.search(r"(?<!\\)[*_~`|<>\[\]#@]", discord.replace("\\\\", ""))
    long = formats.body("discord", Event("x", "*" * 3000), str)["content"]
    assert len(long) <= formats.DISCORD_LIMIT and long.endswith("\\*...")
    assert long == "multirun: " + "\\*" * 993 + "..."
