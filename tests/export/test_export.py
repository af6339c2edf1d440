"""`multirun export`: systemd units, Kubernetes manifests and a Compose file that run the
same `run-account` command, hold no secret, validate, and trade against the simulator."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from multirun import export as exporter
from multirun.cli.app import app
from multirun.config import loader as runner_config
from multirun.core.errors import EXIT_FATAL, UsageError
from multirun.core.procutil import read_json
from multirun.core.statedir import StateDir
from multirun.export import kubernetes
from multirun.export.plan import STATE_MOUNT, STOP_MARGIN_S
from multirun.sim import SimServer
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-export-test-0123456789abcdef"  # what must never appear in an exported file
USER = "export-user-visible"
K8S_VERSION = "1.30.0"
MOUNTED = "/etc/multirun/runner.yaml"  # where the containers find the config

CONFIG = """\
version: 1
server: {server}
state_dir: {state_dir}   # relative to this file
stop_timeout: 20
defaults:
  user: ${{MR_EXPORT_USER:-alice}}
  api_key: ${{MR_EXPORT_KEY:?set MR_EXPORT_KEY}}
  runmode: livetest
  on_stop: close
accounts:
{accounts}
"""
ACCOUNT = """\
  - name: {name}
    accountid: {accountid}
    strategy: {strategy}
    params: {params}
    instrument: BTCUSD
    volume: 0.01
    interval: 1s
"""


def write_config(
    folder: Path,
    *,
    server: str = "sim",
    state_dir: str = "state",
    accounts: tuple[tuple[str, str], ...] = (("acct-a", "ACC-A"),),
    strategy: str = "random",
    params: str = "{seed: 3}",
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    body = "".join(
        ACCOUNT.format(name=n, accountid=a, strategy=strategy, params=params) for n, a in accounts
    )
    path = folder / "runner.yaml"
    path.write_text(CONFIG.format(server=server, state_dir=state_dir, accounts=body))
    return path


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MR_EXPORT_KEY", KEY)
    monkeypatch.setenv("MR_EXPORT_USER", USER)


def export(fmt: str, cfg: Path, out: Path, **options: Any) -> exporter.Written:
    return exporter.export(fmt, runner_config.load_for_control(cfg), out, **options)


def all_text(out: Path) -> dict[Path, str]:
    return {p: p.read_text() for p in out.rglob("*") if p.is_file()}


def unit_value(unit: Path, key: str) -> str:
    for line in unit.read_text().splitlines():
        if line.startswith(f"{key}="):
            return line.split("=", 1)[1]
    raise AssertionError(f"no {key}= in {unit}")


# --- no secret, anywhere ------------------------------------------------------------


@pytest.mark.parametrize("fmt", exporter.FORMATS)
def test_no_secret_value_in_any_exported_file(secret_env: None, tmp_path: Path, fmt: str) -> None:
    folder = tmp_path / "cfg"
    folder.mkdir()
    (folder / "mr_export_mystrat.py").write_text("def on_tick(ctx):\n    return None\n")
    cfg = write_config(folder, strategy="mr_export_mystrat:on_tick", params="{}")
    written = export(fmt, cfg, tmp_path / "out")
    texts = all_text(tmp_path / "out")
    assert texts and set(written.written) == set(texts)
    for path, text in texts.items():
        assert KEY not in text and USER not in text, path
    names = "\n".join(texts.values())
    assert "MR_EXPORT_KEY" in names  # the variable goes by its name
    for path in written.written:
        if path.name.endswith((".env", "secret.yaml")):
            assert path.stat().st_mode & 0o777 == 0o600, path
    if fmt != "systemd":  # the strategy module travels with the config
        assert "def on_tick(ctx)" in names


def test_a_literal_api_key_is_never_copied(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    cfg.write_text(cfg.read_text().replace("${MR_EXPORT_KEY:?set MR_EXPORT_KEY}", KEY))
    runner = runner_config.load_for_control(cfg)
    for fmt in ("kubernetes", "compose"):
        with pytest.raises(
            UsageError, match=r"a secret is written in the file \(defaults.api_key\)"
        ):
            exporter.export(fmt, runner, tmp_path / fmt)
        assert not (tmp_path / fmt).exists()  # refused before writing anything
    # systemd points at the file in place: nothing is copied
    written = exporter.export("systemd", runner, tmp_path / "systemd")
    assert all(KEY not in text for text in all_text(written.out_dir).values())


def test_a_filled_in_credentials_file_is_kept(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    export("systemd", cfg, tmp_path / "out")
    env = tmp_path / "out" / "multirun.env"
    assert env.read_text().count("MR_EXPORT_KEY=\n") == 1  # required: uncommented, empty
    assert "#MR_EXPORT_USER=" in env.read_text()  # has a default: commented out
    env.write_text("MR_EXPORT_KEY=filled-in\n")
    again = export("systemd", cfg, tmp_path / "out")
    assert env in again.kept and env.read_text() == "MR_EXPORT_KEY=filled-in\n"


# --- systemd ------------------------------------------------------------------------


def test_systemd_units_map_the_supervisor_rules(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, accounts=(("acct-a", "A"), ("acct-b", "B")))
    export("systemd", cfg, tmp_path / "out", user="")
    unit = tmp_path / "out" / "multirun@.service"
    expected = {
        "Type": "notify",
        "Restart": "on-failure",
        "RestartSec": "1s",
        "RestartSteps": "6",  # 1 s doubling six times reaches the 60 s cap
        "RestartMaxDelaySec": "60s",
        "RestartPreventExitStatus": str(EXIT_FATAL),  # 78: a deterministic failure
        "KillMode": "control-group",
        "KillSignal": "SIGTERM",
        "TimeoutStopSec": str(20 + STOP_MARGIN_S),
        "WorkingDirectory": str(tmp_path),
        "EnvironmentFile": str(tmp_path / "out" / "multirun.env"),
    }
    for key, value in expected.items():
        assert unit_value(unit, key) == value, key
    exec_start = shlex.split(unit_value(unit, "ExecStart"))
    assert exec_start == [str(exporter.multirun_executable()), "run-account", str(cfg), "%i"]
    assert Path(exec_start[0]).is_absolute()
    target = (tmp_path / "out" / "multirun.target").read_text()
    assert "Wants=multirun@acct-a.service multirun@acct-b.service" in target


@pytest.mark.process
@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, accounts=(("acct-a", "A"), ("acct-b", "B")))
    out = tmp_path / "out"
    export("systemd", cfg, out, user="")
    # verify checks instances: an instance file beside the template, as systemd would see it
    shutil.copy(out / "multirun@.service", out / "multirun@acct-a.service")
    result = subprocess.run(
        ["systemd-analyze", "verify", str(out / "multirun@acct-a.service"),
         str(out / "multirun.target")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # systemd < 254 does not know the exponential backoff keys (and ignores them)
    known = re.compile(r"Unknown key '(RestartSteps|RestartMaxDelaySec)'")
    other = [line for line in result.stderr.splitlines() if line and not known.search(line)]
    assert other == [], other


def exec_start_argv(unit_dir: Path, account: str) -> list[str]:
    """The unit's ExecStart as systemd runs it for instance ``account``."""
    line = unit_value(unit_dir / "multirun@.service", "ExecStart")
    return [arg.replace("%i", account).replace("%%", "%") for arg in shlex.split(line)]


def start_unit(unit_dir: Path, account: str, log: Path) -> subprocess.Popen[bytes]:
    """Start what systemd would: ExecStart in WorkingDirectory, with the EnvironmentFile."""
    env = dict(os.environ)
    env_file = Path(unit_value(unit_dir / "multirun@.service", "EnvironmentFile"))
    for line in env_file.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            env[name] = value or env.get(name, "")  # empty in the export: the test fills it
    with log.open("ab") as out:
        return subprocess.Popen(
            exec_start_argv(unit_dir, account),
            cwd=unit_value(unit_dir / "multirun@.service", "WorkingDirectory"),
            env=env, stdout=out, stderr=out,
        )  # fmt: skip


def health(cfg: Path, account: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(exporter.multirun_executable()), "health", str(cfg), account],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def orders(sim: SimServer, accountid: str) -> list[dict[str, Any]]:
    return [o for o in sim.ledger() if o["accountid"] == accountid]


def open_orders(sim: SimServer, accountid: str) -> list[dict[str, Any]]:
    return [o for o in orders(sim, accountid) if o["status"] not in ("CLOSED", "CANCELLED")]


def ticks(cfg: Path, account: str) -> int:
    state_dir = runner_config.load_for_control(cfg).state_dir
    return int((read_json(StateDir(state_dir).account(account).status) or {}).get("ticks") or 0)


@pytest.mark.process
def test_the_exec_start_line_trades_is_healthy_and_stops_cleanly_on_sigterm(
    secret_env: None, sim: SimServer, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path / "host", server=sim.base_url)
    export("systemd", cfg, tmp_path / "units", user="")
    proc = start_unit(tmp_path / "units", "acct-a", tmp_path / "worker.log")
    try:
        wait_until(lambda: orders(sim, "ACC-A") and ticks(cfg, "acct-a") >= 1, timeout=12)
        result = health(cfg, "acct-a")
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("acct-a: ok: RUNNING")
        proc.send_signal(signal.SIGTERM)  # KillSignal=
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
    assert open_orders(sim, "ACC-A") == []  # on_stop: close
    stopped = health(cfg, "acct-a")
    assert stopped.returncode == 1 and "STOPPED" in stopped.stderr
    log = (tmp_path / "worker.log").read_text()
    assert "Traceback" not in log and KEY not in log


@pytest.mark.process
def test_two_hosts_two_exec_start_lines_one_killed_the_other_ticks(
    secret_env: None, sim: SimServer, tmp_path: Path
) -> None:
    hosts = {
        name: write_config(tmp_path / f"host-{name}", server=sim.base_url, accounts=((name, acc),))
        for name, acc in (("acct-a", "ACC-A"), ("acct-b", "ACC-B"))
    }
    procs = {}
    try:
        for account, cfg in hosts.items():
            units = cfg.parent / "units"
            export("systemd", cfg, units, user="")
            procs[account] = start_unit(units, account, cfg.parent / "worker.log")
        wait_until(lambda: orders(sim, "ACC-A") and orders(sim, "ACC-B"), timeout=12)
        assert hosts["acct-a"].parent / "state" != hosts["acct-b"].parent / "state"
        procs["acct-a"].kill()
        procs["acct-a"].wait(timeout=10)
        after_kill = ticks(hosts["acct-b"], "acct-b")
        wait_until(lambda: ticks(hosts["acct-b"], "acct-b") >= after_kill + 2, timeout=8)
        assert procs["acct-b"].poll() is None
        assert health(hosts["acct-b"], "acct-b").returncode == 0
        dead = health(hosts["acct-a"], "acct-a")
        assert dead.returncode == 1 and "not running" in dead.stderr
        procs["acct-b"].send_signal(signal.SIGTERM)
        assert procs["acct-b"].wait(timeout=20) == 0
    finally:
        for proc in procs.values():
            proc.kill()
    assert open_orders(sim, "ACC-B") == []


# --- Kubernetes ---------------------------------------------------------------------


def manifests(out: Path) -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted(out.glob("*.yaml")):
        document = yaml.safe_load(path.read_text())
        if document.get("kind") != "Kustomization":
            found[path.name] = document
    return found


def test_kubernetes_manifests_validate_and_run_the_same_command(
    secret_env: None, tmp_path: Path
) -> None:
    folder = tmp_path / "cfg"
    folder.mkdir()
    (folder / "mr_export_strats").mkdir()
    (folder / "mr_export_strats" / "__init__.py").write_text("")
    (folder / "mr_export_strats" / "flat.py").write_text("def on_tick(ctx):\n    return 'FLAT'\n")
    cfg = write_config(
        folder,
        accounts=(("acct_a", "A"), ("acct-b", "B")),
        strategy="mr_export_strats.flat:on_tick",
        params="{}",
    )
    out = tmp_path / "k8s"
    export("kubernetes", cfg, out)
    found = manifests(out)
    for document in found.values():
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)  # raises when invalid
    kustomization = yaml.safe_load((out / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == set(found) - {"secret.yaml"}

    sts = found["statefulset-acct-a.yaml"]
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert spec["replicas"] == 1
    assert spec["volumeClaimTemplates"][0]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert pod["terminationGracePeriodSeconds"] == 20 + STOP_MARGIN_S
    assert container["command"] == [
        "multirun",
        "run-account",
        "/etc/multirun/runner.yaml",
        "acct_a",
    ]
    assert container["readinessProbe"]["exec"]["command"] == [
        "multirun", "health", MOUNTED, "acct_a"
    ]  # fmt: skip
    assert "--liveness" in container["livenessProbe"]["exec"]["command"]
    assert container["resources"] == kubernetes.RESOURCES
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert refs["MR_EXPORT_KEY"] == {
        "name": "multirun-credentials", "key": "MR_EXPORT_KEY", "optional": False
    }  # fmt: skip
    assert refs["MR_EXPORT_USER"]["optional"] is True
    secret = found["secret.yaml"]
    assert secret["stringData"] == {"MR_EXPORT_KEY": ""}

    # The ConfigMap's runner.yaml, mounted with its modules, loads with state_dir on the volume.
    config_map = found["configmap.yaml"]["data"]
    mounted = tmp_path / "etc-multirun"
    items = pod["volumes"][0]["configMap"]["items"]
    for item in items:
        (mounted / item["path"]).parent.mkdir(parents=True, exist_ok=True)
        (mounted / item["path"]).write_text(config_map[item["key"]])
    copy = runner_config.load(mounted / "runner.yaml")
    original = runner_config.load(cfg)
    assert copy.state_dir == Path(STATE_MOUNT) and copy.server == original.server
    assert [a.name for a in copy.accounts] == [a.name for a in original.accounts]
    assert (mounted / "mr_export_strats" / "flat.py").is_file()


def test_export_kubernetes_of_the_example_validates(tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    result = CliRunner().invoke(
        app, ["export", "kubernetes", str(ROOT / "runner.yaml.example"), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    found = manifests(out)
    assert {"statefulset-coin-btc.yaml", "statefulset-sma-eurusd.yaml"} <= set(found)
    for document in found.values():
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)


def test_kubernetes_names_that_collide_are_refused(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, accounts=(("a_b", "A"), ("a-b", "B")))
    with pytest.raises(UsageError, match="both map to"):
        export("kubernetes", cfg, tmp_path / "out")


# --- Compose ------------------------------------------------------------------------


@pytest.mark.process
def test_compose_file_one_service_and_volume_per_account(secret_env: None, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg", accounts=(("acct-a", "A"), ("acct-b", "B")))
    out = tmp_path / "compose"
    export("compose", cfg, out, image="multirun:test")
    document = yaml.safe_load((out / "compose.yaml").read_text())
    assert set(document["services"]) == {"acct-a", "acct-b"}
    assert set(document["volumes"]) == {"state-acct-a", "state-acct-b"}
    for account, service in document["services"].items():
        assert service["image"] == "multirun:test"
        assert service["command"] == [
            "multirun",
            "run-account",
            "/etc/multirun/runner.yaml",
            account,
        ]
        assert service["restart"] == "unless-stopped"
        assert service["stop_grace_period"] == f"{20 + STOP_MARGIN_S}s"
        assert "MR_EXPORT_KEY" in service["environment"]  # a bare name: from the environment
        assert all("=" not in e or e.startswith("PYTHON") for e in service["environment"])
        mounts = service["volumes"]
        assert f"state-{account}:{STATE_MOUNT}" in mounts and "./config:/etc/multirun:ro" in mounts
        assert service["healthcheck"]["test"][1:3] == ["multirun", "health"]
    copy = runner_config.load_for_control(out / "config" / "runner.yaml")
    assert copy.state_dir == Path(STATE_MOUNT)
    if compose_cli():  # pragma: no cover - not on the test machines (no compose plugin)
        result = subprocess.run(["docker", "compose", "config", "-q"], cwd=out, capture_output=True)
        assert result.returncode == 0, result.stderr


def compose_cli() -> bool:
    """Whether `docker compose` runs here (`config` needs no engine, only the plugin)."""
    if not shutil.which("docker"):
        return False
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
    return probe.returncode == 0


def test_dockerfile_copies_what_the_package_build_needs() -> None:
    """No docker engine here: check that the files the Dockerfile copies exist and are
    not excluded by .dockerignore, and that it installs from the sources (pip install .)."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    ignored = (ROOT / ".dockerignore").read_text().split()
    sources = [
        part
        for line in dockerfile.splitlines()
        if line.startswith("COPY ") and "--from" not in line
        for part in line.split()[1:-1]
    ]
    assert {"pyproject.toml", "README.md", "multirun", "schemas"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), source
        assert source not in ignored, source
    assert "pip install --no-cache-dir ." in dockerfile
    assert re.search(r"^USER 10001", dockerfile, re.M)


def test_cli_export_rejects_an_unknown_format(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["export", "nomad", str(ROOT / "runner.yaml.example")])
    assert result.exit_code == 2 and "unknown format 'nomad'" in result.output
