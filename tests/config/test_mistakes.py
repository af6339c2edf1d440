"""Mistakes people make in runner.yaml, caught by `validate` (issue 17, cases 9 and 10)."""

from __future__ import annotations

from pathlib import Path

from multirun.config import loader as config
from multirun.config.specs import Guardrails

ACCOUNT = """\
  - name: {name}
    user: demo
    api_key: ${{K:-sim-key}}
    accountid: "{name}-id"
    runmode: livetest
    strategy: {strategy}
    instrument: BTCUSD
    volume: {volume}
    interval: 5s
"""


def account(name: str = "alpha", strategy: str = "random", volume: object = 0.1, **extra) -> str:
    text = ACCOUNT.format(name=name, strategy=strategy, volume=volume)
    return text + "".join(f"    {key}: {value}\n" for key, value in extra.items())


def write(tmp_path: Path, *accounts: str, head: str = "server: sim\n") -> Path:
    path = tmp_path / "runner.yaml"
    path.write_text(head + "accounts:\n" + "".join(accounts), encoding="utf-8")
    return path


def lines(report: config.CheckReport) -> list[str]:
    return [str(p) for p in report.problems]


# --- max_volume (case 10) -----------------------------------------------------------


def test_max_volume_refuses_a_volume_typo_at_the_volume(tmp_path: Path) -> None:
    path = write(tmp_path, account(volume=100000, max_volume=1))
    report = config.validate(path, environ={})
    assert lines(report) == [
        f"{path}:10:13: accounts[0].volume: volume 100000 is above max_volume 1 "
        "(accounts[0].max_volume): a typo? raise max_volume if you mean it"
    ]


def test_max_volume_from_defaults_and_in_the_spec(tmp_path: Path) -> None:
    head = "server: sim\ndefaults:\n  max_volume: 0.5\n"
    path = write(tmp_path, account(), account("beta", volume=0.7), head=head)
    report = config.validate(path, environ={})
    assert [p.path for p in report.problems] == ["accounts[1].volume"]
    assert "(defaults.max_volume)" in report.problems[0].message
    path = write(tmp_path, account(), account("beta", max_volume=2), head=head)
    spec = config.load(path, environ={})
    assert [a.guardrails.max_volume for a in spec.accounts] == [0.5, 2.0]


def test_no_max_volume_is_no_limit(tmp_path: Path) -> None:
    spec = config.load(write(tmp_path, account(volume=100000)), environ={})
    assert spec.accounts[0].guardrails == Guardrails() and Guardrails().max_volume is None


def test_max_volume_must_be_positive(tmp_path: Path) -> None:
    report = config.validate(write(tmp_path, account(max_volume=0)), environ={})
    assert [(p.path, p.message) for p in report.problems] == [
        ("accounts[0].max_volume", "must be greater than 0, not 0")
    ]


# --- strategies built by validate (case 9) --------------------------------------------


def strategy_module(tmp_path: Path, name: str, body: str) -> str:
    """A strategy module beside the runner file; ``name`` unique per test (sys.modules)."""
    (tmp_path / f"{name}.py").write_text(body, encoding="utf-8")
    return name


def test_a_constructor_refusing_its_params_is_located_at_params(tmp_path: Path) -> None:
    path = write(tmp_path, account(strategy="sma_cross", params="{fast: 20, slow: 5}"))
    report = config.validate(path, environ={})
    assert lines(report) == [
        f"{path}:12:13: accounts[0].params: strategy SmaCross could not be created: "
        "ValueError: fast (20) must be at least 1 and below slow (5)"
    ]


def test_a_constructor_refusing_default_params_is_located_at_strategy(tmp_path: Path) -> None:
    module = strategy_module(
        tmp_path,
        "h17m_needs_params",
        "class S:\n    def __init__(self, params):\n        self.level = params['level']\n"
        "    def on_tick(self, ctx):\n        return None\n",
    )
    report = config.validate(write(tmp_path, account(strategy=f"{module}:S")), environ={})
    assert [(p.path, p.line, p.message) for p in report.problems] == [
        ("accounts[0].strategy", 8, "strategy S could not be created: KeyError: 'level'")
    ]


def test_a_class_without_on_tick_is_a_located_problem(tmp_path: Path) -> None:
    module = strategy_module(
        tmp_path, "h17m_no_on_tick", "class S:\n    def tick(self, ctx):\n        pass\n"
    )
    path = write(tmp_path, account(strategy=f"{module}:S", params="{a: 1}"))
    report = config.validate(path, environ={})
    assert lines(report) == [
        f"{path}:8:15: accounts[0].strategy: strategy S has no on_tick(ctx) method"
    ]


def test_a_module_failing_to_import_is_a_located_problem(tmp_path: Path) -> None:
    module = strategy_module(tmp_path, "h17m_broken_import", "import no_such_module_h17m\n")
    report = config.validate(write(tmp_path, account(strategy=f"{module}:S")), environ={})
    assert [(p.path, p.line, p.column) for p in report.problems] == [
        ("accounts[0].strategy", 8, 15)
    ]
    assert "no_such_module_h17m" in report.problems[0].message
    assert "Traceback" not in report.problems[0].message


def test_a_disabled_account_with_a_broken_strategy_is_a_warning(tmp_path: Path) -> None:
    module = strategy_module(tmp_path, "h17m_broken_disabled", "raise RuntimeError('boom')\n")
    broken = account("beta", strategy=f"{module}:S", enabled="false")
    bad_params = account(
        "gamma", strategy="sma_cross", params="{fast: 20, slow: 5}", enabled="false"
    )
    report = config.validate(write(tmp_path, account(), broken, bad_params), environ={})
    assert report.ok and not report.problems
    assert [(w.path, w.severity) for w in report.warnings] == [
        ("accounts[1].strategy", "warning"),
        ("accounts[2].params", "warning"),
    ]
    assert report.warnings[0].message.startswith("disabled account: strategy module")
    strict = config.validate(write(tmp_path, account(), broken), environ={}, strict=True)
    assert [p.path for p in strict.problems] == ["accounts[1].strategy"]


def test_a_strategy_shared_by_defaults_is_an_error_for_the_enabled_account(tmp_path: Path) -> None:
    head = "server: sim\ndefaults:\n  params: {fast: 20, slow: 5}\n"
    path = write(
        tmp_path,
        account("beta", strategy="sma_cross", enabled="false"),
        account("alpha", strategy="sma_cross"),
        head=head,
    )
    report = config.validate(path, environ={})
    assert [(p.path, p.severity) for p in report.problems] == [("defaults.params", "error")]
    assert [(w.path, w.severity) for w in report.warnings] == [("defaults.params", "warning")]


def test_start_and_run_account_refuse_an_unbuildable_strategy(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from multirun.cli.app import app

    path = write(tmp_path, account(strategy="sma_cross", params="{fast: 20, slow: 5}"))
    runner = CliRunner()
    started = runner.invoke(app, ["start", str(path)])
    assert started.exit_code == 1
    assert "accounts[0].params: strategy SmaCross could not be created" in started.output
    assert "Traceback" not in started.output
    assert not (tmp_path / ".multirun").exists()  # nothing started
    ran = runner.invoke(app, ["run-account", str(path), "alpha"])
    assert ran.exit_code != 0 and "could not be created" in str(ran.exception or ran.output)


def test_an_account_named_like_a_service_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "runner.yaml"
    path.write_text(
        "version: 1\nserver: sim\naccounts:\n"
        "  - name: metrics\n    user: u\n    api_key: k-12345\n    accountid: A\n"
        "    runmode: livetest\n    strategy: random\n    instrument: BTCUSD\n"
        "    volume: 1\n    interval: 5s\n"
    )
    report = config.validate(path)
    assert not report.ok
    (problem,) = [p for p in report.problems if "multirun's own processes" in p.message]
    assert problem.line == 4 and "metrics" in problem.message
