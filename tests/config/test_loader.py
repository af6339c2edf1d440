"""Valid runner files load to the expected specs; the schema and the CLI around them."""

from __future__ import annotations

import json
from pathlib import Path
from types import MappingProxyType

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from multirun.cli.app import app
from multirun.config import loader as config
from multirun.config import schema
from multirun.config.specs import (
    COUNT_GUARDRAILS,
    MAX_INTERVAL_S,
    AccountSpec,
    Guardrails,
    RunnerSpec,
    parse_interval,
)
from multirun.core.errors import ConfigError, UsageError
from multirun.core.redact import MIN_SECRET_LEN, Secret

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = Path(__file__).resolve().parent / "configs"
EXAMPLE = ROOT / "runner.yaml.example"
ACCOUNT = """\
  - name: {name}
    user: demo
    api_key: {key}
    accountid: "{name}-id"
    runmode: {runmode}
    strategy: random
    instrument: BTCUSD
    volume: 0.1
    interval: 5s
"""


def write(tmp_path: Path, body: str, name: str = "runner.yaml") -> Path:
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    return path


def runner_file(tmp_path: Path, *, key: str = "${K:-sim-key}", runmode: str = "livetest") -> Path:
    account = ACCOUNT.format(name="alpha", key=key, runmode=runmode)
    return write(tmp_path, "server: sim\naccounts:\n" + account)


# --- loading -------------------------------------------------------------------------


def test_full_config_loads_with_defaults_merged() -> None:
    spec = config.load(CONFIGS / "full.yaml", environ={"TEST_VOLUME": "0.25"})
    assert spec.server == "sim" and spec.uses_sim
    assert spec.path == CONFIGS / "full.yaml"
    assert spec.state_dir == CONFIGS / "state"
    assert spec.stop_timeout_s == 12.5
    alpha, beta, gamma = spec.accounts
    assert alpha.name == "alpha" and alpha.user == "demo"
    assert alpha.api_key == Secret("sim-key-000")
    assert alpha.volume == 0.25  # unquoted ${...} is typed after interpolation
    assert alpha.interval_s == 60
    assert alpha.strategy == "mystrats:always_flat"
    assert alpha.on_stop == "close" and alpha.enabled
    assert alpha.guardrails == Guardrails()
    assert beta.accountid == "42"
    assert beta.interval_s == 90 and beta.volume == 2.0
    assert beta.params == {"level": 1.5, "window": 3}
    assert beta.on_stop == "keep" and not beta.enabled
    assert beta.guardrails == Guardrails(2, 10, 3)
    assert gamma.user == "12345" and gamma.is_live and gamma.interval_s == 7200
    assert gamma.api_key.reveal() == "sim-key-000$x"
    assert spec.enabled_accounts == (alpha, gamma)


def test_environment_wins_over_defaults() -> None:
    env = {"TEST_USER": "carol", "TEST_API_KEY": "from-env-key-123", "TEST_VOLUME": "3"}
    spec = config.load(CONFIGS / "full.yaml", environ=env)
    assert {a.user for a in spec.accounts[:2]} == {"carol"}
    assert spec.accounts[0].api_key.reveal() == "from-env-key-123"
    assert spec.accounts[0].volume == 3.0


def test_specs_are_immutable(tmp_path: Path) -> None:
    spec = config.load(CONFIGS / "full.yaml", environ={})
    beta = spec.accounts[1]
    assert isinstance(beta.params, MappingProxyType)
    with pytest.raises(TypeError):
        beta.params["level"] = 2  # type: ignore[index]
    with pytest.raises(AttributeError):
        beta.volume = 1.0  # type: ignore[misc]


def test_top_level_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path, "accounts:\n" + ACCOUNT.format(name="a", key="${K:-sim-key}", runmode="livetest")
    )
    spec = config.load(path, environ={})
    assert spec.server == "https://algogene.com/rest/v1"
    assert spec.state_dir == tmp_path.resolve() / ".multirun"
    assert spec.stop_timeout_s == 30.0 and spec.version == 1


def test_every_default_is_the_schemas() -> None:
    runner, account = schema.runner_defaults(), schema.account_defaults()
    assert set(runner) == {
        "version", "server", "state_dir", "stop_timeout", "watchdog_timeout", "tick_spread"
    }  # fmt: skip
    assert set(account) == {"on_stop", "enabled", "tick_timeout", *COUNT_GUARDRAILS}
    assert Guardrails() == Guardrails(**{k: account[k] for k in COUNT_GUARDRAILS})
    assert Guardrails().max_volume is None and "max_volume" in schema.account_fields()
    spec = RunnerSpec(Path("r.yaml"), "sim", Path("s"), ())
    assert (spec.version, spec.stop_timeout_s) == (runner["version"], runner["stop_timeout"])
    fields = AccountSpec.__dataclass_fields__
    assert (fields["on_stop"].default, fields["enabled"].default) == (
        account["on_stop"],
        account["enabled"],
    )
    assert MAX_INTERVAL_S == 7 * 86400  # the schema's bound on whole seconds
    assert spec.watchdog_timeout_s == parse_interval(runner["watchdog_timeout"]) == 90
    assert fields["tick_timeout_s"].default == parse_interval(account["tick_timeout"]) == 30
    assert spec.tick_spread_s == runner["tick_spread"] == 5


def test_tick_spread_is_seconds_from_zero(tmp_path: Path) -> None:
    body = "server: sim\nSPREADaccounts:\n" + ACCOUNT.format(
        name="alpha", key="${K:-sim-key}", runmode="livetest"
    )
    ok = config.validate(write(tmp_path, body.replace("SPREAD", "tick_spread: 0.5\n")), environ={})
    assert ok.problems == [] and ok.spec is not None and ok.spec.tick_spread_s == 0.5
    bad = config.validate(write(tmp_path, body.replace("SPREAD", "tick_spread: -1\n")), environ={})
    assert [p.path for p in bad.problems] == ["tick_spread"]


def test_watchdog_timeout_must_exceed_every_tick_timeout_by_30_s(tmp_path: Path) -> None:
    body = "server: sim\nwatchdog_timeout: 2m\naccounts:\n" + ACCOUNT.format(
        name="alpha", key="${K:-sim-key}", runmode="livetest"
    )
    ok = config.validate(write(tmp_path, body + "    tick_timeout: 89s\n"), environ={})
    assert ok.problems == [] and ok.spec is not None
    assert (ok.spec.watchdog_timeout_s, ok.spec.accounts[0].tick_timeout_s) == (120, 89)
    bad = config.validate(write(tmp_path, body + "    tick_timeout: 90s\n"), environ={})
    assert [p.path for p in bad.problems] == ["accounts[0].tick_timeout"]
    assert "watchdog_timeout (120 s) must exceed it by more than 30 s" in bad.problems[0].message
    huge = config.validate(write(tmp_path, body + "    tick_timeout: 8d\n"), environ={})
    assert [p.path for p in huge.problems] == ["accounts[0].tick_timeout"]


def test_defaults_and_accounts_take_the_schemas_defaults(tmp_path: Path) -> None:
    spec = config.load(runner_file(tmp_path), environ={})
    account = schema.account_defaults()
    alpha = spec.accounts[0]
    assert (alpha.on_stop, alpha.enabled) == (account["on_stop"], account["enabled"])
    assert alpha.guardrails == Guardrails()


def test_state_dir_is_relative_to_the_config_not_the_cwd(tmp_path: Path, monkeypatch) -> None:
    sub = tmp_path / "conf"
    sub.mkdir()
    path = write(sub, "state_dir: ../var/state\n" + runner_file(tmp_path).read_text())
    monkeypatch.chdir(tmp_path.parent)
    assert config.load(path, environ={}).state_dir == tmp_path.resolve() / "var" / "state"


def test_server_url_trailing_slash_is_dropped(tmp_path: Path) -> None:
    body = runner_file(tmp_path).read_text().replace("server: sim", "server: http://h:1/rest/v1/")
    assert config.load(write(tmp_path, body), environ={}).server == "http://h:1/rest/v1"


def test_account_ids_are_kept_as_written(tmp_path: Path) -> None:
    body = runner_file(tmp_path).read_text().replace('accountid: "alpha-id"', "accountid: 0123")
    body += ACCOUNT.format(name="beta", key="sim-key", runmode="livetest").replace(
        'accountid: "beta-id"', "accountid: ${ACC:-0099}"
    )
    spec = config.load(write(tmp_path, body), environ={})
    assert [a.accountid for a in spec.accounts] == ["0123", "0099"]  # not octal 83, not 99


def test_quoted_interpolation_stays_a_string(tmp_path: Path) -> None:
    body = runner_file(tmp_path).read_text().replace("volume: 0.1", 'volume: "${V:-0.1}"')
    report = config.validate(write(tmp_path, body), environ={})
    assert [p.path for p in report.problems] == ["accounts[0].volume"]


def test_yaml_merge_keys_and_anchors(tmp_path: Path) -> None:
    first = ACCOUNT.format(name="a", key="${K:-sim-key}", runmode="livetest")
    body = (
        "server: sim\naccounts:\n"
        + first.replace("  - name: a", "  - &base\n    name: a")
        + "  - <<: *base\n    name: b\n    accountid: b-id\n"
    )
    spec = config.load(write(tmp_path, body), environ={})
    assert [(a.name, a.accountid, a.instrument) for a in spec.accounts] == [
        ("a", "a-id", "BTCUSD"),
        ("b", "b-id", "BTCUSD"),
    ]


def test_load_raises_config_error_with_every_problem(tmp_path: Path) -> None:
    body = runner_file(tmp_path).read_text()
    body = body.replace("volume: 0.1", "volume: 0").replace("runmode: livetest", "runmode: x")
    with pytest.raises(ConfigError) as caught:
        config.load(write(tmp_path, body + "    extra: 1\n"), environ={})
    paths = [p.path for p in caught.value.problems]
    assert paths == ["accounts[0].runmode", "accounts[0].volume", "accounts[0].extra"]
    assert "runner.yaml:7:14: accounts[0].runmode" in str(caught.value)
    assert "and 2 more" in str(caught.value)


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        config.load(tmp_path / "nope.yaml")
    with pytest.raises(UsageError):
        config.load(tmp_path)


def test_not_utf8_is_located(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"server: sim\naccounts:\n  - name: \xff\n")
    report = config.validate(path, environ={})
    assert [(p.line, p.column, p.path) for p in report.problems] == [(3, 11, "(root)")]


def test_not_utf8_column_counts_characters_not_bytes(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes("server: sim\nuser: ééé".encode() + b"\xff\n")
    report = config.validate(path, environ={})
    assert [(p.line, p.column) for p in report.problems] == [(2, 10)]


def test_a_whole_number_written_as_a_float_is_an_interval(tmp_path: Path) -> None:
    body = runner_file(tmp_path).read_text().replace("interval: 5s", "interval: 5.0")
    spec = config.load(write(tmp_path, body + "    max_open_trades: 2.0\n"), environ={})
    assert spec.accounts[0].interval_s == 5
    assert spec.accounts[0].guardrails.max_open_trades == 2
    assert isinstance(spec.accounts[0].guardrails.max_open_trades, int)


def test_parse_interval_bounds() -> None:
    assert parse_interval("7d") == parse_interval(MAX_INTERVAL_S) == MAX_INTERVAL_S
    assert parse_interval(90.0) == 90
    for bad in ("8d", MAX_INTERVAL_S + 1, 10**20, 1.5, 0, True):
        with pytest.raises(ValueError):
            parse_interval(bad)


def test_nan_is_refused_even_inside_params_and_from_the_environment(tmp_path: Path) -> None:
    body = runner_file(tmp_path).read_text().replace("volume: 0.1", "volume: ${V}")
    body = body.replace("strategy: random", "strategy: random\n    params: {seed: .nan}")
    report = config.validate(write(tmp_path, body + "stop_timeout: .nan\n"), environ={"V": ".inf"})
    assert [(p.path, p.message) for p in report.problems] == [
        ("accounts[0].params.seed", "must be a finite number, not NaN"),
        ("accounts[0].volume", "must be a finite number, not Infinity"),
        ("stop_timeout", "must be a finite number, not NaN"),
    ]


def test_every_message_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "broken_strat.py").write_text("raise RuntimeError('first\\nsecond')\n")
    body = runner_file(tmp_path).read_text().replace("random", "broken_strat:flat")
    report = config.validate(write(tmp_path, body), environ={})
    assert [p.path for p in report.problems] == ["accounts[0].strategy"]
    assert "first second" in str(report.problems[0])


def test_a_strategy_that_exits_while_imported_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "exiting_strat.py").write_text("import sys\nsys.exit(3)\n")
    body = runner_file(tmp_path).read_text().replace("random", "exiting_strat:flat")
    report = config.validate(write(tmp_path, body), environ={})
    assert [p.path for p in report.problems] == ["accounts[0].strategy"]
    assert "exit" in report.problems[0].message


def test_api_key_minimum_length_is_what_the_log_scrubber_masks() -> None:
    account = schema.document()["properties"]["accounts"]["items"]["properties"]
    assert account["api_key"]["minLength"] == MIN_SECRET_LEN


# --- warnings, notes, strict ---------------------------------------------------------


def test_literal_api_key_is_a_warning(tmp_path: Path) -> None:
    report = config.validate(runner_file(tmp_path, key="literal-key-123456"), environ={})
    assert report.ok
    assert [(w.severity, w.path) for w in report.warnings] == [("warning", "accounts[0].api_key")]
    assert "literal-key-123456" not in str(report.warnings[0])


def test_literal_api_key_is_an_error_when_strict(tmp_path: Path) -> None:
    report = config.validate(runner_file(tmp_path, key="literal"), strict=True, environ={})
    assert not report.ok and report.spec is None
    assert [p.path for p in report.problems] == ["accounts[0].api_key"]


def test_livetrade_is_a_note_even_when_strict(tmp_path: Path) -> None:
    report = config.validate(runner_file(tmp_path, runmode="livetrade"), strict=True, environ={})
    assert report.ok
    assert [(w.severity, w.path) for w in report.warnings] == [("note", "accounts[0].runmode")]
    assert "--live" in report.warnings[0].message


def test_every_problem_at_once(tmp_path: Path) -> None:
    body = (
        "server: simm\nbogus: 1\naccounts:\n"
        + ACCOUNT.format(name="A", key="${K:-sim-key}", runmode="paper")
        + ACCOUNT.format(name="b", key="${UNSET_KEY_XYZ}", runmode="livetest")
    ).replace("volume: 0.1", "volume: -1")
    report = config.validate(write(tmp_path, body), environ={})
    assert [(p.line, p.path) for p in report.problems] == [
        (1, "server"),
        (2, "bogus"),
        (4, "accounts[0].name"),
        (8, "accounts[0].runmode"),
        (11, "accounts[0].volume"),
        (15, "accounts[1].api_key"),
        (20, "accounts[1].volume"),
    ]


# --- built-in strategies and the example ------------------------------------------------


def test_example_validates_with_no_environment() -> None:
    report = config.validate(EXAMPLE, environ={})
    assert report.ok, [str(p) for p in report.problems]
    assert report.warnings == []
    spec = report.spec
    assert spec is not None and spec.uses_sim
    assert {a.strategy for a in spec.accounts} == {"random", "sma_cross"}
    assert len({a.instrument for a in spec.accounts}) == 3
    assert len({a.interval_s for a in spec.accounts}) == 3
    assert max(a.interval_s for a in spec.accounts) <= 30
    assert all(not a.is_live for a in spec.accounts)


def test_example_first_line_points_editors_at_the_schema() -> None:
    first = EXAMPLE.read_text(encoding="utf-8").splitlines()[0]
    assert first == "# yaml-language-server: $schema=./schemas/runner.schema.json"
    assert (EXAMPLE.parent / "schemas" / "runner.schema.json").is_file()


def test_builtin_params_are_checked(tmp_path: Path) -> None:
    body = runner_file(tmp_path).read_text().replace("strategy: random", "strategy: sma_cross")
    body += "    params: {fast: 3, slow: 8, extra: 1}\n"
    report = config.validate(write(tmp_path, body), environ={})
    assert [p.path for p in report.problems] == ["accounts[0].params.extra"]


# --- the schema --------------------------------------------------------------------------


def objects(node: object, where: str = "#") -> list[tuple[str, dict]]:
    """Every schema object with properties, anywhere in the schema."""
    found = []
    if isinstance(node, dict):
        if "properties" in node:
            found.append((where, node))
        for key, value in node.items():
            found += objects(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += objects(value, f"{where}/{i}")
    return found


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    doc = schema.document()
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(doc)


def test_schema_documents_every_property_and_closes_every_object() -> None:
    for where, node in objects(schema.document()):
        if where.endswith("/params"):
            continue  # a strategy's params: its own params_schema closes them
        assert node.get("additionalProperties") is False, where
        for name, prop in node["properties"].items():
            assert prop.get("title") and prop.get("description"), f"{where}/{name}"


def test_defaults_accept_every_account_field_but_name() -> None:
    props = schema.document()["properties"]
    account = props["accounts"]["items"]["properties"]
    assert props["defaults"]["properties"] == {k: v for k, v in account.items() if k != "name"}
    assert set(schema.required_account_fields()) <= set(account)


def test_example_validates_against_the_schema_itself() -> None:
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(schema.document()).validate(data)


def test_schema_found_in_the_wheel_layout(tmp_path: Path, monkeypatch) -> None:
    package = tmp_path / "multirun"
    (package / "_schemas").mkdir(parents=True)
    (package / "_schemas" / "runner.schema.json").write_text("{}")
    monkeypatch.setattr(schema, "__file__", str(package / "config" / "schema.py"))
    assert schema.path() == package / "_schemas" / "runner.schema.json"


# --- the CLI --------------------------------------------------------------------------------


def test_cli_validate_ok_prints_a_table_without_secrets(tmp_path: Path) -> None:
    secret = "env-secret-value-98765"
    result = CliRunner().invoke(
        app, ["validate", str(runner_file(tmp_path, key="${MR_K}"))], env={"MR_K": secret}
    )
    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()[:2]
    assert header.split() == [
        "name",
        "runmode",
        "accountid",
        "strategy",
        "instrument",
        "volume",
        "interval",
    ]
    assert row.split() == ["alpha", "livetest", "alpha-id", "random", "BTCUSD", "0.1", "5s"]
    assert secret not in result.output


def test_cli_validate_json_ok(tmp_path: Path) -> None:
    secret = "env-secret-value-98765"
    path = runner_file(tmp_path, key="${MR_K}")
    result = CliRunner().invoke(app, ["validate", "--json", str(path)], env={"MR_K": secret})
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["ok"] and report["problems"] == []
    assert report["accounts"][0]["name"] == "alpha"
    assert secret not in result.output


@pytest.mark.parametrize("args", [["validate"], ["validate", "--json"]])
def test_cli_validate_never_shows_a_key_used_as_another_value(
    tmp_path: Path, args: list[str]
) -> None:
    secret = "env-secret-value-98765"
    body = runner_file(tmp_path, key="${MR_K}").read_text()
    body = body.replace('accountid: "alpha-id"', "accountid: ${MR_K}")
    result = CliRunner().invoke(app, [*args, str(write(tmp_path, body))], env={"MR_K": secret})
    assert result.exit_code == 0, result.output
    assert "alpha" in result.output and secret not in result.output


def test_report_repr_holds_no_secret(tmp_path: Path) -> None:
    report = config.validate(runner_file(tmp_path, key="${MR_K}"), environ={"MR_K": "abcd-secret"})
    assert report.ok and "abcd-secret" not in repr(report)


def test_cli_validate_strict(tmp_path: Path) -> None:
    path = runner_file(tmp_path, key="literal-key-000111")
    relaxed = CliRunner().invoke(app, ["validate", str(path)])
    assert relaxed.exit_code == 0 and "warning: api_key is written in the file" in relaxed.stdout
    strict = CliRunner().invoke(app, ["validate", "--strict", str(path)])
    assert strict.exit_code == 1 and f"{path}:5:14: accounts[0].api_key:" in strict.stdout
    assert "literal-key-000111" not in relaxed.output + strict.output


def test_cli_validate_defaults_to_runner_yaml(tmp_path: Path, monkeypatch) -> None:
    runner_file(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(app, ["validate"]).exit_code == 0


@pytest.mark.parametrize("args", [["validate", "missing.yaml"], ["validate", "."]])
def test_cli_validate_unreadable_exits_2(tmp_path: Path, monkeypatch, args: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert result.stderr.startswith("multirun: error: ")
    assert "Traceback" not in result.output


def test_cli_validate_usage_error_exits_2() -> None:
    assert CliRunner().invoke(app, ["validate", "--no-such-option"]).exit_code == 2


def test_cli_schema_prints_the_schema() -> None:
    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == schema.document()


def test_cli_json_survives_a_strategy_that_prints(tmp_path: Path) -> None:
    (tmp_path / "noisy_strat.py").write_text("print('hello from import')\ndef flat(ctx): ...\n")
    body = (
        runner_file(tmp_path).read_text().replace("strategy: random", "strategy: noisy_strat:flat")
    )
    result = CliRunner().invoke(app, ["validate", "--json", str(write(tmp_path, body))])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["ok"]


def test_status_and_stop_load_a_config_without_its_credentials(tmp_path: Path) -> None:
    path = tmp_path / "runner.yaml"
    path.write_text(
        "version: 1\nserver: sim\nstate_dir: ${STATE_DIR:-state}\naccounts:\n"
        "  - {name: a, user: '${NO_SUCH_USER_VAR}', api_key: '${NO_SUCH_KEY_VAR:?set it}',\n"
        "     accountid: '1', runmode: livetest, strategy: random, instrument: BTCUSD,\n"
        "     volume: 1, interval: 5s}\n"
    )
    with pytest.raises(ConfigError):
        config.load(path, environ={})
    runner = config.load_for_control(path)
    assert runner.state_dir == tmp_path / "state" and [a.name for a in runner.accounts] == ["a"]


def test_no_character_of_an_api_key_is_shown() -> None:
    assert Secret("SuperSecretKey123456").masked() == "****"


def test_version() -> None:
    from multirun import __version__

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output == f"multirun {__version__}\n"


def test_validate_warns_of_a_journal_no_configured_account_owns(tmp_path: Path) -> None:
    from multirun.account.journal.store import Journal
    from multirun.core.statedir import StateDir

    path = runner_file(tmp_path)  # configures alpha only
    account = StateDir(tmp_path / ".multirun").account("beta")  # renamed or removed
    account.path.mkdir(parents=True)
    journal = Journal(account.journal, "mr-beta-")
    try:
        order = journal.new_intent("BTCUSD", "BUY", 0.1)
        journal.mark_acked(order.order_ref, "777")
    finally:
        journal.close()
    result = CliRunner().invoke(app, ["validate", str(path)], env={"K": ""})
    assert result.exit_code == 0, result.output
    (line,) = [x for x in result.output.splitlines() if "warning:" in x]
    assert "'beta'" in line and "trade 777" in line and order.order_ref in line
    assert f"multirun close {path} beta" in line
    document = json.loads(
        CliRunner().invoke(app, ["validate", "--json", str(path)], env={"K": ""}).output
    )
    (warning,) = document["warnings"]
    assert warning["severity"] == "warning" and "trade 777" in warning["message"]
    account.journal.unlink()
    assert "warning" not in CliRunner().invoke(app, ["validate", str(path)]).output
