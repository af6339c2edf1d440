"""Sessions, token lifetime and revocation, and --accounts restrictions."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
import requests

from multirun.core.errors import UsageError
from multirun.sim import SimConfig, SimServer
from tests.conftest import SimCaller

ACCOUNTS = {
    "users": [
        {
            "user": "alice",
            "api_key": "alice-key",
            "balance": 50_000,
            "accounts": {"livetest": ["A-1", "A-2"], "livetrade": ["L-1"]},
        },
        {"user": "bob", "api_key": "bob-key", "accounts": {"livetest": ["B-1"]}},
    ]
}


def fail(reply: requests.Response, status: int) -> str:
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert body["status"] == "FAIL"
    return body["err_msg"]


def test_token_expires_after_its_ttl(sim_factory) -> None:
    sim = sim_factory(token_ttl_s=30.0)
    caller = SimCaller(sim).login()
    assert caller.get("balance").status_code == 200
    sim.advance(29)
    assert caller.get("balance").status_code == 200
    sim.advance(2)
    assert fail(caller.get("balance"), 401) == "token expired"
    caller.login()
    assert caller.get("balance").status_code == 200


def test_expired_utc_is_now_plus_ttl(sim_factory) -> None:
    sim = sim_factory(token_ttl_s=3600.0)
    reply = requests.get(sim.base_url + "/session", params={"user": "u", "api_key": "k"}).json()
    expires = datetime.strptime(reply["res"]["expired_utc"], "%Y-%m-%d %H:%M:%S.%f")
    now = datetime.strptime(
        requests.get(sim.root_url + "/sim/clock").json()["now_utc"], "%Y-%m-%d %H:%M:%S.%f"
    )
    assert 3599 <= (expires - now).total_seconds() <= 3600


def test_a_new_session_does_not_revoke_the_previous_token(sim) -> None:
    first = SimCaller(sim).login()
    second = SimCaller(sim).login()
    assert first.token != second.token
    assert first.get("balance").status_code == 200
    assert sim.stats()["tokens_issued"] == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"token": "nope"}, "invalid token"),
        ({"token": None}, "missing token"),
        ({"user": None}, "missing user or api_key"),
        ({"api_key": None}, "missing user or api_key"),
        ({"user": "mallory"}, "invalid token"),  # alice's token is not mallory's
    ],
)
def test_account_calls_need_a_valid_token_of_the_same_user(sim, change, message) -> None:
    caller = SimCaller(sim).login()
    assert fail(caller.get("opened_trades", **change), 401) == message
    assert sim.stats()["auth_rejections"] == 1


def test_revoked_tokens_are_refused(sim) -> None:
    caller = SimCaller(sim).login()
    sim.revoke_all_tokens()
    assert fail(caller.get("balance"), 401) == "token revoked"


def test_runmode_and_accountid_are_checked(caller) -> None:
    assert "runmode" in fail(caller.get("balance", runmode="paper"), 400)
    assert "runmode" in fail(caller.get("balance", runmode=None), 400)
    assert "accountid" in fail(caller.get("balance", accountid=None), 400)
    assert caller.get("balance", runmode="livetrade").status_code == 200


def test_open_mode_accepts_anyone(sim) -> None:
    for user, key in (("u1", "k1"), ("u1", "another-key"), ("u2", "k2")):
        assert SimCaller(sim, user=user, api_key=key).login().get("balance").status_code == 200
    assert fail(requests.get(sim.base_url + "/session", params={"user": "u"}), 401)


@pytest.fixture(params=["inline", "yaml", "json"])
def restricted(request, sim_factory, tmp_path) -> SimServer:
    if request.param == "inline":
        return sim_factory(accounts=ACCOUNTS)
    path = tmp_path / f"accounts.{request.param}"
    if request.param == "json":
        path.write_text(json.dumps(ACCOUNTS))
    else:
        path.write_text(
            "users:\n"
            "  - user: alice\n    api_key: alice-key\n    balance: 50000\n"
            "    accounts:\n      livetest: [A-1, A-2]\n      livetrade: [L-1]\n"
            "  - user: bob\n    api_key: bob-key\n    accounts: {livetest: [B-1]}\n"
        )
    return sim_factory(accounts_file=path)


def test_accounts_file_restricts_users_keys_and_accounts(restricted) -> None:
    session = restricted.base_url + "/session"
    assert requests.get(session, params={"user": "alice", "api_key": "bad"}).status_code == 401
    assert requests.get(session, params={"user": "eve", "api_key": "x"}).status_code == 401
    alice = SimCaller(restricted, accountid="A-1").login()
    assert alice.get("balance").json()["res"]["NAV"] == 50_000
    assert "not available" in fail(alice.get("balance", accountid="B-1"), 403)
    assert fail(alice.get("balance", accountid="L-1"), 403)  # L-1 is livetrade only
    assert alice.get("balance", accountid="L-1", runmode="livetrade").status_code == 200
    assert fail(alice.get("balance", api_key="bob-key"), 401)
    listed = alice.ok("GET", "accounts")
    assert [r["accountid"] for r in listed["res"]] == ["A-1", "A-2"]
    bob = SimCaller(restricted, user="bob", api_key="bob-key", accountid="B-1").login()
    assert bob.get("balance").json()["res"]["NAV"] == 1_000_000


@pytest.mark.parametrize(
    "content",
    [
        "users: nope",
        "just text",
        "users:\n  - user: a\n",
        "users:\n  - user: a\n    api_key: k\n    accounts: {paper: [x]}\n",
        "users:\n  - user: a\n    api_key: k\n  - user: a\n    api_key: k\n",
        "users: [\n",
    ],
)
def test_bad_accounts_files_are_usage_errors(tmp_path, content: str) -> None:
    path = tmp_path / "accounts.yaml"
    path.write_text(content)
    with pytest.raises(UsageError):
        SimServer(SimConfig(accounts_file=path))


def test_missing_accounts_file_is_a_usage_error(tmp_path) -> None:
    with pytest.raises(UsageError, match="cannot read"):
        SimServer(SimConfig(accounts_file=tmp_path / "missing.yaml"))
