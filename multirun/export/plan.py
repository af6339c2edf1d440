"""What every export format needs from one runner.yaml: accounts, variables, files, timings.

A :class:`ExportPlan` is built from a loaded :class:`~multirun.config.specs.RunnerSpec` (credentials
not needed: :func:`load` reads it like ``status`` does, every secret's variable may be unset)
and the file's own text, which is never interpolated here: exported files carry ``${VAR}``
references and variable *names*, never a value taken from the environment.

A secret is what :func:`multirun.config.findings.holds_secret` says (an ``api_key``, a
``notify:`` URL, ``web.token``): its variables are marked secret, and a copied config
refuses one written literally.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from multirun import strategies
from multirun.config import loader
from multirun.config.findings import YamlPath, format_path, holds_secret
from multirun.config.interpolate import (
    InterpolationError,
    has_references,
    interpolate,
    variable_names,
)
from multirun.config.specs import RunnerSpec
from multirun.config.yamlload import load_bytes
from multirun.core.errors import UsageError
from multirun.supervisor import standalone
from multirun.supervisor.program import RestartPolicy

# Seconds a stopping worker gets beyond `stop_timeout`: it first finishes the tick under
# way (a few API calls), then applies on_stop, which `stop_timeout` is sized for.
STOP_MARGIN_S = 10
# Where the containers (Kubernetes, Compose) find the config and keep the state.
CONFIG_MOUNT = "/etc/multirun"
STATE_MOUNT = "/var/lib/multirun"
CONFIG_NAME = "runner.yaml"
CONTAINER_METRICS_PORT = 9464  # Prometheus' registered port for exporters like this one
# The supervisor's restart rules, which every engine's restart settings are mapped from.
RESTARTS = RestartPolicy()

_STATE_DIR_LINE = re.compile(r"^state_dir[ \t]*:[^\n]*$", re.MULTILINE)
_MISSING = "\0missing\0"
# Stands for an unset secret's variable while exporting: valid wherever a secret goes
# (a URL with a host, a key, a 16-character token), never used for anything.
UNSET_SECRET = "https://unset.invalid/unset-for-export"


@dataclass(frozen=True)
class Variable:
    """One environment variable the config refers to (its name only: never its value)."""

    name: str
    required: bool  # no default in any reference: the account cannot start without it
    secret: bool  # in a field that holds a secret (findings.holds_secret)


@dataclass(frozen=True)
class ExportPlan:
    """One runner.yaml, as the exporters need it."""

    runner: RunnerSpec
    config_path: Path  # absolute
    text: str  # the file as written
    accounts: tuple[str, ...]  # the enabled accounts, in file order
    variables: tuple[Variable, ...]
    modules: tuple[tuple[str, Path], ...]  # strategy files: (path under the config dir, file)
    literal_secrets: tuple[str, ...]  # secret fields written in the file itself (their paths)
    notes: list[str] = field(default_factory=list)

    @property
    def config_dir(self) -> Path:
        return self.config_path.parent

    @property
    def metrics_port(self) -> int | None:
        """The port a container serves ``/metrics`` on (``--metrics-listen 0.0.0.0:PORT``):
        the configured one (9464 for ``:0``); None without ``metrics:``."""
        metrics = self.runner.metrics
        return None if metrics is None else metrics.port or CONTAINER_METRICS_PORT

    def instance_metrics_port(self, account: str) -> int | None:
        """The port ``run-account`` serves ``/metrics`` on without ``--metrics-listen``
        (:func:`multirun.supervisor.standalone.metrics_address`)."""
        found = standalone.metrics_address(self.runner, account, None)
        return None if found is None else found.port

    @property
    def stop_grace_s(self) -> int:
        """How long an engine waits after SIGTERM before it kills: stop_timeout + margin."""
        return math.ceil(self.runner.stop_timeout_s) + STOP_MARGIN_S

    def copied_config(self, state_dir: str = STATE_MOUNT) -> str:
        """The file's text with ``state_dir`` set to ``state_dir`` (a container's volume).

        Everything else is kept as written (comments, ``${VAR}`` references, ``server``).
        Refuses a file with a secret written in it (an api_key, a notify URL, web.token):
        a copied config lands in a ConfigMap or a directory readable by others, where a
        secret does not belong.
        """
        if self.literal_secrets:
            paths = ", ".join(self.literal_secrets)
            raise UsageError(
                f"{self.config_path}: a secret is written in the file ({paths}); a copied "
                "config must take each from the environment: write ${VAR} in its place"
            )
        line = f"state_dir: {state_dir}"
        text, count = _STATE_DIR_LINE.subn(line, self.text, count=1)
        if count == 0:
            text = self.text.rstrip("\n") + f"\n\n# set by `multirun export`\n{line}\n"
        data = load_bytes(text.encode()).data
        if not isinstance(data, dict) or data.get("state_dir") != state_dir:
            raise UsageError(
                f"{self.config_path}: cannot set state_dir in a copy of it; write "
                "`state_dir: PATH` on one line at the top level"
            )
        return text

    def require_copyable(self) -> None:
        """Raise now, before any file is written, if the config cannot be copied."""
        self.copied_config()


def load(path: Path, environ: dict[str, str] | None = None) -> RunnerSpec:
    """``path`` loaded for an export: unset variables stand for themselves (as for
    ``status``), an unset secret's variable for :data:`UNSET_SECRET`, so that a
    ``url: ${SLACK_WEBHOOK_URL}`` still passes as a URL: credentials need not be set."""
    env = dict(os.environ if environ is None else environ)
    try:
        data = load_bytes(Path(path).read_bytes()).data
    except OSError:
        data = None  # the loader says why, located
    if isinstance(data, dict):
        for var in _variables(data):
            if var.secret and var.name not in env:
                env[var.name] = UNSET_SECRET
    return loader.load(path, environ=env, missing_env=loader.UNSET_FOR_CONTROL)


def build(runner: RunnerSpec) -> ExportPlan:
    """The plan for ``runner`` (loaded from ``runner.path``)."""
    path = runner.path.resolve()
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise UsageError(f"{path}: cannot read: {error.strerror or error}") from None
    data = load_bytes(raw).data
    if not isinstance(data, dict):
        raise UsageError(f"{path}: not a runner file")
    accounts = tuple(a.name for a in runner.enabled_accounts)
    if not accounts:
        raise UsageError(f"{path}: no enabled account to export")
    notes: list[str] = []
    modules = _strategy_files(runner, path.parent, notes)
    return ExportPlan(
        runner=runner,
        config_path=path,
        text=raw.decode("utf-8"),
        accounts=accounts,
        variables=_variables(data),
        modules=modules,
        literal_secrets=_literal_secrets(data),
        notes=notes,
    )


# --- environment variables ----------------------------------------------------------


def _strings(value: Any, path: YamlPath = ()) -> Iterator[tuple[YamlPath, str]]:
    """Every string in a parsed YAML value, with its path."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, (*path, str(k)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, (*path, index))
    elif isinstance(value, str):
        yield path, value


def _variables(data: dict[str, Any]) -> tuple[Variable, ...]:
    """The variables the file names, in order of first mention."""
    found: dict[str, Variable] = {}
    for path, text in _strings(data):
        if not has_references(text):
            continue
        names = list(dict.fromkeys(variable_names(text)))
        for name in names:
            required = _required(text, name, names)
            secret = holds_secret(path)
            old = found.get(name)
            if old is not None:
                required, secret = required or old.required, secret or old.secret
            found[name] = Variable(name, required, secret)
    return tuple(found.values())


def _required(text: str, name: str, names: list[str]) -> bool:
    """Whether ``text`` cannot be interpolated without ``name`` (the others set)."""
    environ = {other: "x" for other in names if other != name}
    try:
        return _MISSING in interpolate(text, environ, missing=_MISSING).value
    except InterpolationError:
        return True


def _literal_secrets(data: dict[str, Any]) -> tuple[str, ...]:
    """The paths of the secret fields written literally (no ``${VAR}`` in them)."""
    found: list[str] = []
    for path, text in _strings(data):
        if holds_secret(path) and not has_references(text):
            found.append(format_path(path))
    return tuple(found)


# --- strategy modules ---------------------------------------------------------------


def _strategy_files(
    runner: RunnerSpec, config_dir: Path, notes: list[str]
) -> tuple[tuple[str, Path], ...]:
    """The files of the strategy modules the enabled accounts import from the config dir."""
    files: dict[str, Path] = {}
    for spec in runner.enabled_accounts:
        if spec.strategy in strategies.BUILTINS:
            continue
        top = spec.strategy.partition(":")[0].split(".")[0]
        single = config_dir / f"{top}.py"
        package = config_dir / top
        if single.is_file():
            files[single.name] = single
        elif (package / "__init__.py").is_file():
            for file in sorted(package.rglob("*.py")):
                if "__pycache__" not in file.parts:
                    files[file.relative_to(config_dir).as_posix()] = file
        else:
            notes.append(
                f"strategy {spec.strategy!r} ({spec.name}): module {top!r} is not next to "
                "the config; install it where the worker runs (e.g. in the image)"
            )
    return tuple(sorted(files.items()))
