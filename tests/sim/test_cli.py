"""``multirun sim`` as a real process, and its flag checking."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

from multirun.core.errors import UsageError
from multirun.sim import SimConfig, serve
from multirun.sim.options import config_from_options

MAIN = [sys.executable, "-c", "from multirun.cli.app import main; main()", "sim"]
ROOT = Path(__file__).resolve().parents[2]
DEFAULTS = {
    "host": "127.0.0.1",
    "port": "8765",
    "token_ttl": "3600",
    "seed": "1",
    "accounts": None,
    "fill_delay_ms": "20",
    "latency_ms": "0",
    "jitter_ms": "0",
    "error_rate": "0",
    "drop_rate": "0",
    "malformed_rate": "0",
    "revoke_rate": "0",
    "slow_success_rate": "0",
    "slow_success_ms": "30000",
}


def run_sim(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [*MAIN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


@pytest.mark.process
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sim_process_serves_prints_its_url_and_exits_0_on_signal(sig) -> None:
    proc = run_sim("--port", "0", "--seed", "3", "--token-ttl", "60")
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/rest/v1")
        session = requests.get(
            url + "/session", params={"user": "u", "api_key": "SECRET-KEY-42"}, timeout=5
        )
        assert session.status_code == 200 and "token" in session.json()["res"]
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0
        out, err = proc.communicate(timeout=5)
        for secret in ("SECRET-KEY-42", session.json()["res"]["token"]):
            assert secret not in out + err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(
    "args",
    [
        ["--error-rate", "2"],
        ["--drop-rate", "x"],
        ["--port", "99999"],
        ["--latency-ms", "-1"],
        ["--token-ttl", "0"],
        ["--accounts", "/no/such/file.yaml"],
    ],
)
@pytest.mark.process
def test_bad_flags_are_one_line_errors_exit_2(args) -> None:
    proc = run_sim(*args)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("multirun: error: --"), err


def test_flags_become_the_config(tmp_path) -> None:
    accounts = tmp_path / "a.yaml"
    accounts.write_text("users: []\n")
    config = config_from_options(
        **{
            **DEFAULTS,
            "port": "0",
            "seed": "9",
            "accounts": str(accounts),
            "error_rate": "0.25",
            "slow_success_ms": "500",
            "fill_delay_ms": "0",
        }
    )
    assert (config.port, config.seed, config.accounts_file) == (0, 9, accounts)
    assert config.faults.error_rate == 0.25 and config.faults.slow_success_ms == 500
    assert config.fill_delay_ms == 0 and config.token_ttl_s == 3600


def test_flag_errors_name_the_flag() -> None:
    with pytest.raises(UsageError, match="--slow-success-rate"):
        config_from_options(**{**DEFAULTS, "slow_success_rate": "1.5"})
    with pytest.raises(UsageError, match="--seed"):
        config_from_options(**{**DEFAULTS, "seed": "x"})


def test_serve_runs_until_sigterm_and_restores_handlers() -> None:
    before = signal.getsignal(signal.SIGTERM)
    seen: list[str] = []

    def ready(url: str) -> None:
        seen.append(requests.get(url + "/list_instrument", timeout=5).json()["res"][0])
        threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM)).start()

    serve(SimConfig(port=0), on_ready=ready)
    assert seen == ["AAPL"]
    assert signal.getsignal(signal.SIGTERM) is before


def test_serve_refuses_other_threads() -> None:
    errors: list[BaseException] = []

    def attempt() -> None:
        try:
            serve(SimConfig(port=0))
        except RuntimeError as error:
            errors.append(error)

    thread = threading.Thread(target=attempt)
    thread.start()
    thread.join(timeout=5)
    assert len(errors) == 1


def test_rate_limit_flags_become_the_config() -> None:
    config = config_from_options(**{**DEFAULTS, "rate_limit_rate": "0.5", "retry_after_s": "5"})
    assert (config.faults.rate_limit_rate, config.faults.retry_after_s) == (0.5, 5)
    with pytest.raises(UsageError, match="--retry-after-s"):
        config_from_options(**{**DEFAULTS, "retry_after_s": "-1"})
