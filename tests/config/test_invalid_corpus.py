"""Every invalid config in tests/config/configs/invalid/ fails `multirun validate` where it says.

Each file's first line states the expected problem: ``# expect: LINE PATH``. The test
runs the real CLI and checks the exit code, that line and path, that there is no
traceback, and that no secret (the API key variable's value, or any ``# secret:`` value
listed in the file) appears anywhere in the output.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from multirun.cli.app import app

INVALID = Path(__file__).parent / "configs" / "invalid"
CASES = sorted(INVALID.glob("*.yaml"))
SECRET = "s3cr3t-key-VALUE-4242"
# MR_TEST_KEY is the api_key of every corpus file; MR_EMPTY is set but empty.
ENV = {"MR_TEST_KEY": SECRET, "MR_EMPTY": ""}


def expectation(path: Path) -> tuple[int, str, list[str]]:
    """(line, path) from the ``# expect:`` header, plus any ``# secret:`` values."""
    text = path.read_text(encoding="utf-8")
    match = re.match(r"# expect: (\d+) (\S+)\n", text)
    assert match, f"{path.name}: first line must be '# expect: LINE PATH'"
    secrets = re.findall(r"^# secret: (\S+)$", text, flags=re.M)
    return int(match.group(1)), match.group(2), [SECRET, *secrets]


def located(output: str, config: Path) -> set[tuple[int, str]]:
    """Every (line, path) reported as FILE:LINE:COL: PATH: message."""
    pattern = re.compile(rf"^{re.escape(str(config))}:(\d+):(\d+): (\S+): ", flags=re.M)
    return {(int(m.group(1)), m.group(3)) for m in pattern.finditer(output)}


def assert_clean(output: str, secrets: list[str]) -> None:
    assert "Traceback" not in output
    for secret in secrets:
        assert secret not in output, "a secret value leaked into the output"


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("config", CASES, ids=[c.stem for c in CASES])
def test_invalid_config(config: Path) -> None:
    line, path, secrets = expectation(config)
    runner = CliRunner()

    result = runner.invoke(app, ["validate", str(config)], env=ENV)
    assert result.exit_code == 1, result.output
    assert (line, path) in located(result.output, config), result.output
    assert_clean(result.output, secrets)

    result = runner.invoke(app, ["validate", "--json", str(config)], env=ENV)
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert not report["ok"]
    assert (line, path) in {(p["line"], p["path"]) for p in report["problems"]}
    assert_clean(result.output, secrets)


def console_script() -> str | None:
    beside = Path(sys.executable).with_name("multirun")
    return str(beside) if beside.exists() else shutil.which("multirun")


SUBPROCESS_CASES = [
    "yaml_unclosed_flow",
    "duplicate_key_account",
    "interp_required_message",
    "alias_bomb",
    "secret_in_other_field",
    "params_unknown",
]


@pytest.mark.process
@pytest.mark.parametrize("stem", SUBPROCESS_CASES)
def test_installed_console_script(stem: str) -> None:
    script = console_script()
    if script is None:
        pytest.skip("the multirun console script is not installed (pip install .)")
    config = INVALID / f"{stem}.yaml"
    line, path, secrets = expectation(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MR_")} | ENV
    done = subprocess.run(
        [script, "validate", str(config)], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert (line, path) in located(done.stdout, config), done.stdout
    assert_clean(done.stdout + done.stderr, secrets)


def test_oversized_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "big.yaml"
    padding = "# padding padding padding padding padding padding padding padding\n" * 17000
    config.write_text("server: sim\naccounts: []\n" + padding, encoding="utf-8")
    assert config.stat().st_size > 1024 * 1024
    result = CliRunner().invoke(app, ["validate", str(config)], env=ENV)
    assert result.exit_code == 1
    assert (1, "(root)") in located(result.output, config)
    assert "larger than 1 MiB" in result.output
    assert_clean(result.output, [SECRET])
