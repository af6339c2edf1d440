"""What every export format needs from one runner.yaml: accounts, variables, files, timings.

A :class:`ExportPlan` is built from a loaded :class:`~multirun.config.specs.RunnerSpec` (credentials
not needed: the CLI loads it like ``status`` does) and the file's own text, which is
never interpolated here: exported files carry ``${VAR}`` references and variable *names*,
never a value taken from the environment.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from multirun import strategies
from multirun.config.interpolate import (
    InterpolationError,
    has_references,
    interpolate,
    variable_names,
)
from multirun.config.specs import RunnerSpec
from multirun.config.yamlload import load_bytes
from multirun.core.errors import UsageError
from multirun.supervisor.program import RestartPolicy

# Seconds a stopping worker gets beyond `stop_timeout`: it first finishes the tick under
# way (a few API calls), then applies on_stop, which `stop_timeout` is sized for.
STOP_MARGIN_S = 10
# Where the containers (Kubernetes, Compose) find the config and keep the state.
CONFIG_MOUNT = "/etc/multirun"
STATE_MOUNT = "/var/lib/multirun"
CONFIG_NAME = "runner.yaml"
# The supervisor's restart rules, which every engine's restart settings are mapped from.
RESTARTS = RestartPolicy()

_KEY_FIELD = "api_key"
_STATE_DIR_LINE = re.compile(r"^state_dir[ \t]*:[^\n]*$", re.MULTILINE)
_MISSING = "\0missing\0"


@dataclass(frozen=True)
class Variable:
    """One environment variable the config refers to (its name only: never its value)."""

    name: str
    required: bool  # no default in any reference: the account cannot start without it
    secret: bool  # named by an `api_key`


@dataclass(frozen=True)
class ExportPlan:
    """One runner.yaml, as the exporters need it."""

    runner: RunnerSpec
    config_path: Path  # absolute
    text: str  # the file as written
    accounts: tuple[str, ...]  # the enabled accounts, in file order
    variables: tuple[Variable, ...]
    modules: tuple[tuple[str, Path], ...]  # strategy files: (path under the config dir, file)
    literal_keys: tuple[str, ...]  # accounts whose api_key is written in the file itself
    notes: list[str] = field(default_factory=list)

    @property
    def config_dir(self) -> Path:
        return self.config_path.parent

    @property
    def stop_grace_s(self) -> int:
        """How long an engine waits after SIGTERM before it kills: stop_timeout + margin."""
        return math.ceil(self.runner.stop_timeout_s) + STOP_MARGIN_S

    def copied_config(self, state_dir: str = STATE_MOUNT) -> str:
        """The file's text with ``state_dir`` set to ``state_dir`` (a container's volume).

        Everything else is kept as written (comments, ``${VAR}`` references, ``server``).
        Refuses a file whose api_key is literal: a copied config lands in a ConfigMap or
        an image directory, where a key does not belong.
        """
        if self.literal_keys:
            names = ", ".join(self.literal_keys)
            raise UsageError(
                f"{self.config_path}: api_key is written in the file for {names}; a copied "
                "config must take it from the environment: use api_key: ${VAR}"
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
        literal_keys=_literal_keys(data),
        notes=notes,
    )


# --- environment variables ----------------------------------------------------------


def _strings(value: Any, key: object = None) -> Iterator[tuple[object, str]]:
    """Every string in a parsed YAML value, with the key it is the value of."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, k)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item, key)
    elif isinstance(value, str):
        yield key, value


def _variables(data: dict[str, Any]) -> tuple[Variable, ...]:
    """The variables the file names, in order of first mention."""
    found: dict[str, Variable] = {}
    for key, text in _strings(data):
        if not has_references(text):
            continue
        names = list(dict.fromkeys(variable_names(text)))
        for name in names:
            required = _required(text, name, names)
            secret = key == _KEY_FIELD
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


def _literal_keys(data: dict[str, Any]) -> tuple[str, ...]:
    """Entries (accounts, or `defaults`) whose api_key is written literally."""
    found: list[str] = []
    entries: list[tuple[str, Any]] = [("defaults", data.get("defaults"))]
    accounts = data.get("accounts")
    if isinstance(accounts, list):
        entries += [(str(a.get("name", "?")), a) for a in accounts if isinstance(a, dict)]
    for label, entry in entries:
        if isinstance(entry, dict) and _KEY_FIELD in entry:
            value = entry[_KEY_FIELD]
            if not (isinstance(value, str) and has_references(value)):
                found.append(label)
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
