"""`multirun export systemd`: a template unit per account instance, a target, an env file.

``<name>@.service`` runs ``multirun run-account CONFIG %i`` (the instance is the
account's name); ``<name>.target`` wants one instance per enabled account, so
``systemctl start/stop <name>.target`` starts and stops them all. Credentials come
from ``<name>.env`` (0600), which the export writes with the variable names only.
"""

from __future__ import annotations

import math
import shlex
from pathlib import Path

from multirun.core.errors import EXIT_FATAL
from multirun.export.plan import RESTARTS, ExportPlan
from multirun.export.write import Output
from multirun.supervisor.watchdog import KILL_AFTER_S

ENV_MODE = 0o600
RUNTIME_ENV = "MULTIRUN_RUNTIME_DIR"  # multirun.account.ownership.RUNTIME_ENV
RUNTIME_NAME = "multirun"  # under %t: /run (system units), $XDG_RUNTIME_DIR (user units)


def render(
    plan: ExportPlan, out_dir: Path, *, name: str, executable: Path, user: str | None
) -> Output:
    """The unit files and the environment file of ``plan``."""
    env_file = (out_dir / f"{name}.env").resolve()
    unit = service(plan, name=name, executable=executable, env_file=env_file, user=user)
    notes = []
    if not plan.runner.state_dir.is_dir():
        notes.append(
            f"create the state directory before starting the units (ProtectSystem=strict lets "
            f"them write there only): mkdir -p {plan.runner.state_dir}"
        )
    return Output(
        notes=notes,
        files={
            f"{name}@.service": unit,
            f"{name}.target": target(plan, name=name),
        },
        credentials={f"{name}.env": (environment_file(plan), ENV_MODE)},
    )


def exec_start(plan: ExportPlan, executable: Path) -> str:
    """The ``ExecStart=`` value: the absolute multirun, ``run-account``, CONFIG, ``%i``."""
    args = [_quote(str(executable)), "run-account", _quote(str(plan.config_path)), "%i"]
    return " ".join(args)


def restart_settings() -> dict[str, str]:
    """The supervisor's backoff (1 s, doubling, 60 s cap) and crash-loop limit, in systemd's
    terms. RestartSteps: the number of steps from RestartSec to RestartMaxDelaySec, so
    ``log2(cap / base)`` steps make each delay about twice the one before (systemd >= 254;
    older ones ignore both keys and restart after RestartSec every time).
    RestartPreventExitStatus: a worker exiting :data:`~multirun.core.errors.EXIT_FATAL` failed
    deterministically (a refused key, a broken strategy, an account another process
    holds): restarting it would only fail again, so systemd leaves it failed."""
    base, cap = RESTARTS.backoff_base_s, RESTARTS.backoff_cap_s
    steps = max(1, round(math.log2(cap / base)))
    # The supervisor gives up (FATAL) after `fatal_after` failed starts in a row, each one
    # shorter than `startsecs`: that many starts within this window means the same here.
    window = sum(RESTARTS.delay(n) for n in range(1, RESTARTS.fatal_after + 1))
    window += RESTARTS.fatal_after * RESTARTS.startsecs
    return {
        "Restart": "on-failure",
        "RestartSec": f"{_seconds(base)}",
        "RestartSteps": str(steps),
        "RestartMaxDelaySec": f"{_seconds(cap)}",
        "RestartPreventExitStatus": str(EXIT_FATAL),
        "StartLimitIntervalSec": f"{_seconds(window)}",
        "StartLimitBurst": str(RESTARTS.fatal_after),
    }


def service(
    plan: ExportPlan, *, name: str, executable: Path, env_file: Path, user: str | None
) -> str:
    restart = restart_settings()
    lines = [
        "# Written by `multirun export systemd`; the instance (%i) is the account's name.",
        f"# Config: {plan.config_path}",
        *_metrics_comment(plan),
        "[Unit]",
        "Description=multirun account %i",
        "After=network-online.target",
        "Wants=network-online.target",
        f"PartOf={name}.target",
        f"StartLimitIntervalSec={restart.pop('StartLimitIntervalSec')}",
        f"StartLimitBurst={restart.pop('StartLimitBurst')}",
        "",
        "[Service]",
        *watchdog_settings(plan),
        f"ExecStart={exec_start(plan, executable)}",
        f"WorkingDirectory={_path(plan.config_dir)}",
        f"EnvironmentFile={_path(env_file)}",
        "Environment=PYTHONUNBUFFERED=1",
        "# The host-wide account locks (one process per server account) in a directory",
        "# every unit shares: /tmp is private to each unit (PrivateTmp=).",
        f"Environment={RUNTIME_ENV}=/dev/shm/multirun-%U",
        f"RuntimeDirectory={RUNTIME_NAME}",
        "RuntimeDirectoryPreserve=yes",
    ]
    if user:
        lines.append(f"User={user}")
    lines += [f"{key}={value}" for key, value in restart.items()]
    lines += [
        "# SIGTERM: the worker finishes its tick, applies on_stop, exits 0.",
        "KillMode=control-group",
        "KillSignal=SIGTERM",
        f"TimeoutStopSec={plan.stop_grace_s}",
        *sandboxing(plan),
        "",
        "[Install]",
        f"WantedBy={name}.target",
        "",
    ]
    return "\n".join(lines)


def watchdog_settings(plan: ExportPlan) -> list[str]:
    """``Type=notify``: the worker says READY=1 once reconciled and ticking, WATCHDOG=1 at
    each heartbeat (at least every 5 s while idle). Silent for the supervisor's
    watchdog_timeout plus its grace: killed (SIGKILL, as the supervisor's watchdog does)
    and restarted. Before READY=1 each heartbeat extends the start by watchdog_timeout."""
    timeout = plan.runner.watchdog_timeout_s
    return [
        "# READY=1 once reconciled and ticking; WATCHDOG=1 at each heartbeat (sd_notify).",
        "Type=notify",
        "NotifyAccess=main",
        f"TimeoutStartSec={_seconds(timeout)}",
        f"WatchdogSec={_seconds(timeout + KILL_AFTER_S)}",
        "WatchdogSignal=SIGKILL",
    ]


def sandboxing(plan: ExportPlan) -> list[str]:
    """What a trading process tolerates: it reads its config, code and the system; writes
    its state directory only; talks HTTP(S) and unix sockets; forks nothing privileged.
    Not set: MemoryDenyWriteExecute (libffi, JITs a strategy may use), PrivateNetwork and
    IP allow lists (it trades over the network). A forbidden system call fails with EPERM
    instead of killing the process mid-order. ``systemd-analyze security`` rates it
    below 2.5 (tests/export)."""
    return [
        "# Sandboxing (systemd-analyze security): writes its state directory only.",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        f"ReadWritePaths={_path(plan.runner.state_dir)}",
        "ProtectHome=read-only",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "DevicePolicy=closed",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "ProtectProc=invisible",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "RestrictNamespaces=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "SystemCallArchitectures=native",
        "SystemCallFilter=@system-service",
        "SystemCallFilter=~@privileged",
        "SystemCallErrorNumber=EPERM",
        "KeyringMode=private",
        "RemoveIPC=yes",
        "UMask=0077",
    ]


def _metrics_comment(plan: ExportPlan) -> list[str]:
    """Where each instance serves /metrics: the configured port plus its position."""
    if plan.runner.metrics is None:
        return []
    host = plan.runner.metrics.host
    ports = ", ".join(f"{a} {plan.instance_metrics_port(a)}" for a in plan.accounts)
    return [f"# /metrics on {host}, one port per instance (metrics.listen + position): {ports}"]


def target(plan: ExportPlan, *, name: str) -> str:
    wants = " ".join(f"{name}@{account}.service" for account in plan.accounts)
    return "\n".join(
        [
            "# Written by `multirun export systemd`: one instance per enabled account.",
            "[Unit]",
            f"Description=multirun: every enabled account of {_path(plan.config_path)}",
            f"Wants={wants}",
            "",
            "[Install]",
            "WantedBy=multi-user.target",
            "",
        ]
    )


def environment_file(plan: ExportPlan) -> str:
    """``VAR=`` for each variable the config needs, commented out where it has a default."""
    lines = [
        "# Environment of the multirun units (EnvironmentFile=, keep it 0600).",
        "# Written by `multirun export systemd` with names only: fill in the values.",
        "# Commented-out names have a default in the config; set them to override it.",
    ]
    for var in plan.variables:
        what = "secret" if var.secret else "setting"
        prefix = "" if var.required else "#"
        lines.append(f"# {var.name}: {what}, {'required' if var.required else 'optional'}")
        lines.append(f"{prefix}{var.name}=")
    return "\n".join(lines) + "\n"


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _path(path: Path) -> str:
    """A path where a unit file expands specifiers (``%`` is written ``%%``)."""
    return str(path).replace("%", "%%")


def _quote(arg: str) -> str:
    """One ExecStart argument: specifiers escaped, quoted when it holds blanks or quotes."""
    arg = arg.replace("%", "%%")
    return shlex.quote(arg) if any(c in arg for c in " \t\"'\\;") else arg
