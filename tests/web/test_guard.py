"""The dashboard's refusals, in-process: no token, a wrong token, a foreign Host, a
wrong Origin, no CSRF token, a GET to an action, read-only mode. Each is refused and
reaches nothing (the controller records every action that got through)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from multirun.config.specs import WebSpec
from multirun.core.redact import Redactor
from multirun.ops import locate
from multirun.web.fleet import AccountFacts, Fleet
from multirun.web.guard import CSRF_HEADER, Guard
from multirun.web.server import Dashboard

TOKEN = "s3cret-dashboard-token"
KEY = "the-api-key-0123456789"


class Recorder:
    """Stands for the control socket: records what would have been sent."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def run(self, action: str, name: str) -> dict[str, Any]:
        self.calls.append((action, name))
        return {"ok": True, "lines": [f"{name}: done"], "error": None}


def state_dir(tmp: Path) -> Path:
    account = tmp / "alpha"
    account.mkdir(parents=True)
    (account / "status.json").write_text(
        json.dumps({"name": "alpha", "last_error": f"login failed with api_key {KEY}"})
    )
    return tmp


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Any]:
    started: list[Dashboard] = []

    def build(*, token: str | None = None, read_only: bool = False) -> tuple[str, Recorder]:
        where = state_dir(tmp_path / f"s{len(started)}")
        view = locate.FileView(tmp_path / "runner.yaml", where, (("alpha", True),))
        fleet = Fleet(
            where,
            file_view=lambda: view,
            accounts={"alpha": AccountFacts("random", "BTCUSD", "close")},
            redactor=Redactor([KEY, TOKEN]),
        )
        spec = WebSpec.parse("127.0.0.1:0", token, read_only)
        recorder = Recorder()
        guard = Guard(spec.host, spec.port, token=spec.token, read_only=read_only)
        page = Dashboard(fleet, guard, recorder, host=spec.host, port=0)  # type: ignore[arg-type]
        started.append(page)
        return page.start(), recorder

    yield build
    for page in started:
        page.stop()


def csrf(url: str, session: requests.Session | None = None) -> str:
    page = (session or requests).get(url, timeout=5).text
    found = json.loads(page.split('type="application/json">')[1].split("</script>")[0])
    return str(found["csrf"])


def post(url: str, path: str, **headers: str) -> requests.Response:
    return requests.post(url + path, headers=headers, data="{}", timeout=5)


def test_a_confirmed_action_with_origin_and_csrf_gets_through(make: Any) -> None:
    url, recorder = make()
    reply = post(url, "api/accounts/alpha/stop", Origin=url.rstrip("/"), **{CSRF_HEADER: csrf(url)})
    assert reply.status_code == 200 and recorder.calls == [("stop", "alpha")]


def test_refusals_change_nothing(make: Any) -> None:
    url, recorder = make()
    origin, token = url.rstrip("/"), csrf(url)
    port = url.rsplit(":", 1)[1].strip("/")
    refused = [
        post(url, "api/accounts/alpha/stop", Origin="http://evil.example", **{CSRF_HEADER: token}),
        post(url, "api/accounts/alpha/stop", **{CSRF_HEADER: token}),  # no Origin
        post(url, "api/accounts/alpha/stop", Origin=origin),  # no CSRF token
        post(url, "api/accounts/alpha/stop", Origin=origin, **{CSRF_HEADER: "guess"}),
        post(
            url,
            "api/accounts/alpha/stop",
            Host=f"evil.example:{port}",
            Origin=origin,
            **{CSRF_HEADER: token},
        ),
        requests.get(url + "api/accounts/alpha/stop", timeout=5),
        requests.get(url + "api/status", headers={"Host": f"rebound.example:{port}"}, timeout=5),
        requests.get(url, headers={"Host": "127.0.0.1:1"}, timeout=5),
    ]
    assert [r.status_code for r in refused] == [403, 403, 403, 403, 421, 405, 421, 421]
    assert refused[5].headers["Allow"] == "POST"
    assert recorder.calls == []


def test_read_only_shows_but_never_acts(make: Any) -> None:
    url, recorder = make(read_only=True)
    reply = post(url, "api/accounts/alpha/stop", Origin=url.rstrip("/"), **{CSRF_HEADER: csrf(url)})
    assert reply.status_code == 403 and recorder.calls == []
    assert requests.get(url + "api/fleet", timeout=5).json()["read_only"] is True


def test_a_token_is_asked_once_then_kept_in_a_strict_httponly_cookie(make: Any) -> None:
    url, recorder = make(token=TOKEN)
    origin = url.rstrip("/")
    assert requests.get(url + "api/status", timeout=5).status_code == 401
    assert 'name="token"' in requests.get(url, timeout=5).text  # the form, not the page
    assert post(url, "api/accounts/alpha/stop", Origin=origin).status_code == 401
    wrong = requests.post(url + "login", data={"token": "nope"}, headers={"Origin": origin},
                          allow_redirects=False, timeout=5)  # fmt: skip
    assert wrong.status_code == 403 and "Set-Cookie" not in wrong.headers
    browser = requests.Session()
    right = browser.post(url + "login", data={"token": TOKEN}, headers={"Origin": origin},
                         allow_redirects=False, timeout=5)  # fmt: skip
    cookie = right.headers["Set-Cookie"]
    assert right.status_code == 303 and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert TOKEN not in cookie
    assert browser.get(url + "api/status", timeout=5).status_code == 200
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert requests.get(url + "api/status", headers=bearer, timeout=5).status_code == 200
    token = csrf(url, browser)
    reply = browser.post(url + "api/accounts/alpha/restart", data="{}", timeout=5,
                         headers={"Origin": origin, CSRF_HEADER: token})  # fmt: skip
    assert reply.status_code == 200 and recorder.calls == [("restart", "alpha")]


def test_no_secret_in_the_page_or_the_api(make: Any) -> None:
    url, _ = make(token=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    texts = [
        requests.get(url + path, headers=auth, timeout=5).text
        for path in ("", "api/status", "api/fleet", "api/accounts/alpha/logs")
    ]
    assert "login failed with api_key" in texts[1]  # the error is shown ...
    assert not any(KEY in t or TOKEN in t for t in texts)  # ... its secret is not


def test_the_page_fetches_nothing_from_elsewhere(make: Any) -> None:
    url, _ = make()
    reply = requests.get(url, timeout=5)
    page = reply.text
    assert "<link" not in page and "<img" not in page and "@import" not in page
    assert not [m for m in page.split('src="')[1:]]  # no script or image source at all
    assert "http://" not in page and "https://" not in page
    assert "default-src 'none'" in reply.headers["Content-Security-Policy"]


def test_confirmations_name_the_effect_on_positions() -> None:
    from multirun.web.actions import effects

    held = [{"side": "BUY", "volume": 0.5, "instrument": "BTCUSD"}]
    assert effects("close", held)["stop"] == "closes 1 BUY 0.5 BTCUSD"
    assert effects("keep", held)["stop"] == "leaves 1 BUY 0.5 BTCUSD open"
    assert effects("close", held)["restart"].startswith("closes 1 BUY 0.5 BTCUSD")
    assert effects("close", [])["stop"] == "no position open: nothing to close"
