"""Exports that the real tools accept (systemd-analyze, kubernetes-validate, docker-compose),
secrets treated alike, and `run-account` serving its own /metrics, alerts and sd_notify."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import requests
import yaml

from multirun import export as exporter
from multirun.account import ownership
from multirun.core.errors import UsageError
from multirun.export import systemd
from multirun.export.plan import UNSET_SECRET
from multirun.sim import SimServer
from multirun.supervisor.standalone import metrics_address
from tests.conftest import wait_until

K8S_VERSION = "1.30.0"
COMPOSE_SPEC = Path("/usr/lib/python3/dist-packages/compose/config/compose_spec.json")
HOOK_TOKEN = "hooktoken-0123456789-SECRET"  # in a webhook URL: a secret like an api_key

CONFIG = """\
version: 1
server: {server}
state_dir: state
stop_timeout: 20
{extra}
defaults:
  user: alice
  api_key: ${{MR_DEPLOY_KEY:?set it}}
  runmode: livetest
  on_stop: {on_stop}
accounts:
  - name: acct-a
    accountid: ACC-DA
    strategy: {strategy}
    instrument: BTCUSD
    volume: 0.01
    interval: 1s
  - name: acct-b
    accountid: ACC-DB
    strategy: random
    instrument: BTCUSD
    volume: 0.01
    interval: 1s
"""
SERVICES = """\
metrics:
  listen: 127.0.0.1:{port}
notify:
  - url: {url}
    format: json
"""


def write_config(
    folder: Path,
    *,
    server: str = "sim",
    port: int = 9464,
    url: str = "${MR_DEPLOY_HOOK}",
    on_stop: str = "close",
    services: bool = True,
    strategy: str = "random",
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    extra = SERVICES.format(port=port, url=url) if services else ""
    path = folder / "runner.yaml"
    text = CONFIG.format(server=server, extra=extra, on_stop=on_stop, strategy=strategy)
    path.write_text(text)
    return path


def export(fmt: str, cfg: Path, out: Path, **options: Any) -> exporter.Written:
    return exporter.export(fmt, exporter.load(cfg), out, **options)


@pytest.fixture(autouse=True)
def _no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Exports are made where the credentials are not set (docs/deploy.md)."""
    monkeypatch.delenv("MR_DEPLOY_KEY", raising=False)
    monkeypatch.delenv("MR_DEPLOY_HOOK", raising=False)


# --- secrets --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", exporter.FORMATS)
def test_every_format_exports_with_every_secret_unset(tmp_path: Path, fmt: str) -> None:
    cfg = write_config(tmp_path / "cfg")
    written = export(fmt, cfg, tmp_path / "out", user="")
    texts = "\n".join(p.read_text() for p in written.written)
    assert "MR_DEPLOY_HOOK" in texts and UNSET_SECRET not in texts


def test_the_notify_variable_is_a_secret_like_the_key(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg")
    plan = exporter.build(exporter.load(cfg))
    secrets = {v.name: v.secret for v in plan.variables}
    assert secrets == {"MR_DEPLOY_KEY": True, "MR_DEPLOY_HOOK": True}
    export("systemd", cfg, tmp_path / "out", user="")
    env = (tmp_path / "out" / "multirun.env").read_text()
    assert "# MR_DEPLOY_HOOK: secret, required\nMR_DEPLOY_HOOK=\n" in env


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        (f"notify:\n  - url: https://api.telegram.org/bot123456:{HOOK_TOKEN}/sendMessage\n",
         "notify[0].url"),
        (f"web:\n  listen: 127.0.0.1:0\n  token: {HOOK_TOKEN}\n", "web.token"),
    ],
)  # fmt: skip
def test_a_literal_secret_of_any_kind_is_never_copied(
    tmp_path: Path, extra: str, field: str
) -> None:
    cfg = write_config(tmp_path / "cfg", services=False)
    cfg.write_text(cfg.read_text().replace("defaults:", extra + "defaults:"))
    runner = exporter.load(cfg)
    for fmt in ("kubernetes", "compose"):
        with pytest.raises(
            UsageError, match=re.escape(f"a secret is written in the file ({field})")
        ):
            exporter.export(fmt, runner, tmp_path / fmt)
        assert not (tmp_path / fmt).exists()  # refused before writing anything
    written = exporter.export("systemd", runner, tmp_path / "systemd", user="")
    assert all(HOOK_TOKEN not in p.read_text() for p in written.written)


# --- systemd ------------------------------------------------------------------------


def systemd_units(tmp_path: Path) -> Path:
    cfg = write_config(tmp_path / "cfg")
    (tmp_path / "cfg" / "state").mkdir()
    out = tmp_path / "units"
    export("systemd", cfg, out, user="")
    # systemd-analyze reads an instance: a file with the instance's name beside the template
    shutil.copy(out / "multirun@.service", out / "multirun@acct-a.service")
    return out


def unit_values(unit: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def test_the_unit_notifies_and_is_watched_like_the_supervisor_watches(tmp_path: Path) -> None:
    out = systemd_units(tmp_path)
    values = unit_values(out / "multirun@.service")
    runner = exporter.load(tmp_path / "cfg" / "runner.yaml")
    assert values["Type"] == ["notify"] and values["NotifyAccess"] == ["main"]
    assert values["WatchdogSec"] == [f"{runner.watchdog_timeout_s + 10}s"]
    assert values["WatchdogSignal"] == ["SIGKILL"]
    assert values["ReadWritePaths"] == [str(runner.state_dir)]
    # PrivateTmp= hides /tmp: the host-wide account locks move to a directory all share
    assert systemd.RUNTIME_ENV == ownership.RUNTIME_ENV
    # ... the one every multirun on the host uses by default (PrivateTmp= leaves /dev/shm)
    assert f"{ownership.RUNTIME_ENV}=/dev/shm/multirun-%U" in values["Environment"]
    assert Path("/dev/shm") == ownership.SHARED_DIR
    assert values["RuntimeDirectoryPreserve"] == ["yes"]
    comment = "acct-a 9464, acct-b 9465"  # one /metrics port per instance on one host
    assert comment in (out / "multirun@.service").read_text()
    assert [metrics_address(runner, a, None).port for a in ("acct-a", "acct-b")] == [9464, 9465]  # type: ignore[union-attr]


@pytest.mark.process
@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_analyze_verifies_the_units_and_rates_them_under_5(tmp_path: Path) -> None:
    out = systemd_units(tmp_path)
    instance = out / "multirun@acct-a.service"
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(instance), str(out / "multirun.target")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stderr
    known = re.compile(r"Unknown key '(RestartSteps|RestartMaxDelaySec)'")  # systemd < 254
    assert [x for x in verify.stderr.splitlines() if x and not known.search(x)] == []
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(instance)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", security.stdout)
    assert found, security.stdout + security.stderr
    score = float(found.group(1))
    print(f"systemd-analyze security: {score}")
    assert score < 5.0, security.stdout
    assert score <= 2.5  # what systemd.sandboxing promises


# --- Kubernetes ---------------------------------------------------------------------

# Pod Security Standards, "restricted" (kubernetes.io/docs/concepts/security/pod-security-standards)
RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
}  # fmt: skip


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What the restricted profile refuses in a pod spec (as the admission checks it)."""
    wrong: list[str] = []
    pod_ctx = pod.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            wrong.append(key)
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            wrong.append(f"volume {volume['name']}: {kinds}")
    for c in [*pod.get("containers", []), *pod.get("initContainers", [])]:
        ctx = c.get("securityContext") or {}
        if ctx.get("privileged"):
            wrong.append(f"{c['name']}: privileged")
        if ctx.get("allowPrivilegeEscalation") is not False:
            wrong.append(f"{c['name']}: allowPrivilegeEscalation must be false")
        caps = ctx.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            wrong.append(f"{c['name']}: capabilities must drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            wrong.append(f"{c['name']}: adds capabilities")
        if ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is not True:
            wrong.append(f"{c['name']}: runAsNonRoot must be true")
        if ctx.get("runAsUser", pod_ctx.get("runAsUser")) == 0:
            wrong.append(f"{c['name']}: runAsUser 0")
        seccomp = (ctx.get("seccompProfile") or pod_ctx.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            wrong.append(f"{c['name']}: seccompProfile must be RuntimeDefault or Localhost")
        if any(p.get("hostPort") for p in c.get("ports") or []):
            wrong.append(f"{c['name']}: hostPort")
    return wrong


VALUE = "it's a value: with #, \\ and \""  # what a quoted value may hold
FILLED_IN = "'it''s a value: with #, \\ and \"'"  # VALUE between the quotes, as told


def fill_in_as_told(template: str) -> str:
    """What the Secret's header says to do: remove the '# ' of a commented-out name, put
    each value between the quotes (a quote inside written twice)."""
    filled = []
    for line in template.splitlines():
        line = re.sub(r"^  # ([A-Z_][A-Z0-9_]*: '')", r"  \1", line)
        line = re.sub(r"^  ([A-Z_][A-Z0-9_]*): ''", lambda m: f"  {m[1]}: {FILLED_IN}", line)
        filled.append(line)
    return "\n".join(filled) + "\n"


@pytest.fixture
def k8s(tmp_path: Path) -> Path:
    cfg = write_config(tmp_path / "cfg")
    cfg.write_text(cfg.read_text().replace("user: alice", "user: ${MR_DEPLOY_USER:-alice}"))
    out = tmp_path / "k8s"
    export("kubernetes", cfg, out)
    return out


def test_pods_pass_the_restricted_profile_and_serve_metrics(k8s: Path) -> None:
    sts = yaml.safe_load((k8s / "statefulset-acct-b.yaml").read_text())
    template = sts["spec"]["template"]
    pod = template["spec"]
    assert restricted_violations(pod) == []
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["command"][-2:] == ["--metrics-listen", "0.0.0.0:9464"]
    assert container["ports"] == [{"name": "metrics", "containerPort": 9464, "protocol": "TCP"}]
    annotations = template["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true", "prometheus.io/port": "9464",
        "prometheus.io/path": "/metrics",
    }  # fmt: skip
    service = yaml.safe_load((k8s / "service.yaml").read_text())
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9464, "targetPort": "metrics"}]
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert env["MR_DEPLOY_HOOK"]["optional"] is False  # read by run-account's own alerts


def test_the_secret_template_is_valid_as_written_and_filled_in_as_told(k8s: Path) -> None:
    template = (k8s / "secret.yaml").read_text()
    assert "# MR_DEPLOY_USER: ''" in template  # has a default: commented out
    as_written = yaml.safe_load(template)
    kubernetes_validate.validate(as_written, K8S_VERSION, strict=True)
    filled = yaml.safe_load(fill_in_as_told(template))
    kubernetes_validate.validate(filled, K8S_VERSION, strict=True)
    assert filled["stringData"] == dict.fromkeys(
        ["MR_DEPLOY_KEY", "MR_DEPLOY_USER", "MR_DEPLOY_HOOK"], VALUE
    )


def test_a_secret_template_with_only_optional_names_is_valid_filled_in(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg", services=False)
    cfg.write_text(cfg.read_text().replace("${MR_DEPLOY_KEY:?set it}", "${MR_DEPLOY_KEY:-abcd}"))
    export("kubernetes", cfg, tmp_path / "k8s")
    template = (tmp_path / "k8s" / "secret.yaml").read_text()
    for text in (template, fill_in_as_told(template)):
        kubernetes_validate.validate(yaml.safe_load(text), K8S_VERSION, strict=True)


# installed with the test extras, beside this interpreter (on PATH or not)
K8S_VALIDATE = shutil.which("kubernetes-validate", path=str(Path(sys.executable).parent))


@pytest.mark.process
@pytest.mark.skipif(
    K8S_VALIDATE is None, reason="kubernetes-validate missing (pip install .[test])"
)
def test_kubernetes_validate_strict_accepts_every_manifest_with_the_secret_filled_in(
    k8s: Path,
) -> None:
    (k8s / "secret.yaml").write_text(fill_in_as_told((k8s / "secret.yaml").read_text()))
    files = sorted(str(p) for p in k8s.glob("*.yaml") if p.name != "kustomization.yaml")
    result = subprocess.run(
        [str(K8S_VALIDATE), "--strict", "-k", K8S_VERSION, *files],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") == len(files), result.stdout


# --- Compose ------------------------------------------------------------------------


@pytest.fixture
def compose_dir(tmp_path: Path) -> Path:
    cfg = write_config(tmp_path / "cfg")
    out = tmp_path / "compose"
    export("compose", cfg, out, image="multirun:test")
    return out


@pytest.mark.skipif(not COMPOSE_SPEC.is_file(), reason=f"no compose-spec schema at {COMPOSE_SPEC}")
def test_the_compose_file_follows_the_compose_spec_schema_v1_accepts(compose_dir: Path) -> None:
    document = yaml.safe_load((compose_dir / "compose.yaml").read_text())
    schema = json.loads(COMPOSE_SPEC.read_text())
    jsonschema.Draft201909Validator(schema).validate(document)  # its $schema
    assert "name" not in document  # Compose v1 (docker-compose 1.29) refuses it
    for account, service in document["services"].items():
        assert service["command"][-2:] == ["--metrics-listen", "0.0.0.0:9464"], account
        assert service["expose"] == ["9464"] and "ports" not in service
    copied = (compose_dir / "config" / "runner.yaml").read_text()
    assert "${MR_DEPLOY_HOOK}" in copied


@pytest.mark.process
@pytest.mark.skipif(not shutil.which("docker-compose"), reason="docker-compose (v1) not installed")
def test_docker_compose_v1_accepts_the_file(compose_dir: Path) -> None:
    result = subprocess.run(
        ["docker-compose", "-f", str(compose_dir / "compose.yaml"), "config", "-q"],
        capture_output=True, text=True, timeout=60, cwd=compose_dir,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


# --- run-account: its own /metrics, alerts and sd_notify ------------------------------


class Webhook:
    """Records each POST on 127.0.0.1 (its JSON body)."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                posts.append(json.loads(self.rfile.read(size) or b"{}"))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{HOOK_TOKEN}"


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.server.shutdown()
    hook.server.server_close()


@pytest.mark.process
@pytest.mark.slow
def test_run_account_serves_its_metrics_sends_its_alerts_and_notifies_systemd(
    sim: SimServer, webhook: Webhook, tmp_path: Path
) -> None:
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "mr_deploy_hold.py").write_text("def on_tick(ctx):\n    return 'BUY'\n")
    cfg = write_config(
        tmp_path / "cfg", server=sim.base_url, port=0, on_stop="keep",
        strategy="mr_deploy_hold:on_tick",
    )  # fmt: skip
    notify_path = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(notify_path)
    listener.settimeout(0.05)
    messages: list[bytes] = []

    def received(wanted: bytes) -> bool:
        with contextlib.suppress(TimeoutError):
            messages.append(listener.recv(512))
        return any(m.startswith(wanted) for m in messages)

    env = dict(os.environ, MR_DEPLOY_KEY="sk-deploy-0123456789", MR_DEPLOY_HOOK=webhook.url,
               NOTIFY_SOCKET=notify_path, MULTIRUN_RUNTIME_DIR=str(tmp_path / "run"))  # fmt: skip
    log = tmp_path / "run-account.log"
    exe = str(exporter.multirun_executable())
    with log.open("wb") as out:
        proc = subprocess.Popen([exe, "run-account", str(cfg), "acct-a"], env=env, stderr=out)
    try:
        wait_until(lambda: received(b"READY=1"), timeout=15)
        wait_until(lambda: received(b"WATCHDOG=1"), timeout=10)  # its heartbeat, forwarded
        line = wait_until(lambda: re.search(r"serving /metrics on (\S+)", log.read_text()))
        url = line.group(1)

        def scraped() -> str | None:
            text = requests.get(url, timeout=5).text
            return text if 'multirun_ticks_total{account="acct-a"} 2.0' in text else None

        text = wait_until(scraped, timeout=10)
        assert 'multirun_account_up{account="acct-a"} 1.0' in text
        assert 'multirun_account_state{account="acct-a",state="RUNNING"} 1.0' in text
        assert "acct-b" not in text  # its own account only
        wait_until(lambda: [o for o in sim.ledger() if o["accountid"] == "ACC-DA"], timeout=10)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        wait_until(lambda: received(b"STOPPING=1"), timeout=2)
    finally:
        proc.kill()
        listener.close()
    # on_stop: keep: the stop left its trades open, and its own alert says so
    kinds = [p["event"] for p in webhook.posts]
    assert "left_open" in kinds, kinds
    output = log.read_text()
    assert HOOK_TOKEN not in output and "sk-deploy" not in output and "Traceback" not in output


def test_metrics_listen_overrides_the_port_rule(tmp_path: Path) -> None:
    runner = exporter.load(write_config(tmp_path, port=9500))
    assert metrics_address(runner, "acct-b", None).port == 9501  # type: ignore[union-attr]
    spec = metrics_address(runner, "acct-b", "0.0.0.0:9464")
    assert spec is not None and (spec.host, spec.port, spec.allow_remote) == ("0.0.0.0", 9464, True)
    with pytest.raises(UsageError, match="--metrics-listen"):
        metrics_address(runner, "acct-a", "nowhere")
    quiet = exporter.load(write_config(tmp_path / "q", services=False))
    assert metrics_address(quiet, "acct-a", None) is None
