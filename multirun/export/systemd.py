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

ENV_MODE = 0o600


def render(
    plan: ExportPlan, out_dir: Path, *, name: str, executable: Path, user: str | None
) -> Output:
    """The unit files and the environment file of ``plan``."""
    env_file = (out_dir / f"{name}.env").resolve()
    unit = service(plan, name=name, executable=executable, env_file=env_file, user=user)
    return Output(
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
        "[Unit]",
        "Description=multirun account %i",
        "After=network-online.target",
        "Wants=network-online.target",
        f"PartOf={name}.target",
        f"StartLimitIntervalSec={restart.pop('StartLimitIntervalSec')}",
        f"StartLimitBurst={restart.pop('StartLimitBurst')}",
        "",
        "[Service]",
        "# The worker does not notify systemd (no sd_notify yet): started = running.",
        "Type=simple",
        f"ExecStart={exec_start(plan, executable)}",
        f"WorkingDirectory={_path(plan.config_dir)}",
        f"EnvironmentFile={_path(env_file)}",
        "Environment=PYTHONUNBUFFERED=1",
    ]
    if user:
        lines.append(f"User={user}")
    lines += [f"{key}={value}" for key, value in restart.items()]
    lines += [
        "# SIGTERM: the worker finishes its tick, applies on_stop, exits 0.",
        "KillMode=control-group",
        "KillSignal=SIGTERM",
        f"TimeoutStopSec={plan.stop_grace_s}",
        "NoNewPrivileges=yes",
        "",
        "[Install]",
        f"WantedBy={name}.target",
        "",
    ]
    return "\n".join(lines)


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
