"""Finding the running supervisor from a runner.yaml that may be mid-edit or broken.

``status`` and ``stop`` must work while the file or a strategy module is broken, so they
never go through :func:`multirun.config.loader.load` (which imports strategy code to check it).
The config path only *locates* the supervisor: :func:`read_file` takes from the file what
it can, tolerantly (a YAML parse, else a regex for ``state_dir``, else the schema's
default), and the truth about what runs comes from the state directory: the pidfile's
lock holder and ``supervisor.json`` (its pid, the config it was started from, the
accounts it runs). ``--state-dir DIR`` skips the file altogether.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from multirun.account import ownership
from multirun.config import schema
from multirun.config.interpolate import InterpolationError, interpolate
from multirun.config.yamlload import load_bytes
from multirun.core.errors import JournalError, SupervisorError, UsageError
from multirun.core.procutil import is_locked, looks_like_multirun, read_pid
from multirun.core.statedir import StateDir
from multirun.core.statefiles import SupervisorFile, read_supervisor, read_supervisor_records

_STATE_DIR_LINE = re.compile(r"^state_dir\s*:\s*(?P<value>[^#\n]*?)\s*(?:#.*)?$", re.MULTILINE)
_UNSET = "unset-for-status-and-stop"


@dataclass(frozen=True)
class FileView:
    """What a runner.yaml says, as far as it can be read without checking it."""

    path: Path  # resolved
    state_dir: Path
    accounts: tuple[tuple[str, bool], ...] | None  # (name, enabled); None: unreadable
    stop_timeout_s: float | None = None
    problem: str | None = None  # why the file could not be read whole


@dataclass(frozen=True)
class Running:
    """The supervisor holding a state directory's pidfile lock."""

    pid: int
    config: str | None  # the config file it was started from (supervisor.json)
    data: SupervisorFile  # its supervisor.json ({} until it wrote one)
    # found by its record in the host lock directory only: its pidfile is gone (its state
    # directory deleted under it)
    unlisted: bool = False


@dataclass(frozen=True)
class Target:
    """Where a control command looks, and what it finds there."""

    state_dir: Path
    file: FileView | None
    running: Running | None

    @property
    def foreign(self) -> str | None:
        """A message when the running supervisor was started from another config file."""
        if self.running is None or self.file is None or not self.running.config:
            return None
        if same_file(self.running.config, self.file.path):
            return None
        return (
            f"the supervisor on {self.state_dir} (pid {self.running.pid}) runs "
            f"{self.running.config}, not {self.file.path}"
        )

    @property
    def stop_timeout_s(self) -> float:
        """The running supervisor's stop_timeout if it recorded one, else the file's."""
        recorded = self.running.data.get("stop_timeout_s") if self.running else None
        if isinstance(recorded, int | float) and not isinstance(recorded, bool):
            return float(recorded)
        if self.file is not None and self.file.stop_timeout_s is not None:
            return self.file.stop_timeout_s
        return float(schema.runner_defaults()["stop_timeout"])


def target(config: Path | None, state_dir: Path | None = None) -> Target:
    """The state directory to look in (``state_dir`` or the file's) and what runs there."""
    view = None
    if config is not None and (state_dir is None or Path(config).is_file()):
        view = read_file(config)
    where = Path(state_dir).expanduser().resolve() if state_dir is not None else None
    if where is None:
        assert view is not None  # config or state_dir is given
        where = view.state_dir
    return Target(where, view, running(where))


def running(
    state_dir: Path, read_file: Callable[[StateDir], SupervisorFile] = read_supervisor
) -> Running | None:
    """The supervisor running on ``state_dir``, or None (stale pidfiles ignored).
    ``read_file``: how its ``supervisor.json`` is read (the dashboard's parses it again
    only when it changed)."""
    layout = StateDir(state_dir)
    pid = read_pid(layout.supervisor_pid)
    if pid is None or not is_locked(layout.supervisor_pid) or not looks_like_multirun(pid):
        return registered(state_dir)
    data = read_file(layout)
    if data.get("pid") != pid:
        data = SupervisorFile()  # a new supervisor that has not written its file yet
    config = data.get("config")
    return Running(pid, str(config) if config else None, data)


def registered(state_dir: Path) -> Running | None:
    """The supervisor whose record in the host lock directory names ``state_dir``, alive;
    found this way when the state directory lost its pidfile (deleted under it)."""
    try:
        records = read_supervisor_records(ownership.runtime_dir())
    except (OSError, JournalError):
        return None
    where = Path(state_dir).resolve()
    for record in records:
        pid, config = record["pid"], record.get("config")
        if Path(str(record.get("state_dir"))).resolve() == where and looks_like_multirun(pid):
            return Running(pid, str(config) if config else None, SupervisorFile(), unlisted=True)
    return None


def refuse_other_config(config: Path, found: Running | None, state_dir: Path) -> None:
    """Raise when ``found``, the supervisor running on ``state_dir`` (:func:`running`), was
    started from another config file.

    ``start`` of a second config sharing a state_dir calls it: the message names the first.
    """
    if found is None or not found.config or same_file(found.config, config):
        return
    raise SupervisorError(
        f"{state_dir} is in use by the supervisor (pid {found.pid}) running {found.config}: "
        f"give {Path(config).name} another state_dir, or stop that one first"
    )


def refresh(view: FileView | None) -> FileView | None:
    """``view`` read again (the file may have been fixed or broken since); itself if unreadable."""
    if view is None:
        return None
    try:
        return read_file(view.path)
    except UsageError:
        return view


def same_file(a: str | Path, b: str | Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def read_file(config: Path, environ: Mapping[str, str] | None = None) -> FileView:
    """The state_dir and account names of ``config``, read without checking the file.

    Never imports strategy code, never fails on a file that does not parse (the regex,
    then the default, give its state_dir); raises UsageError only when it cannot be read.
    """
    path = Path(config)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise UsageError(
            f"cannot read {path}: {error.strerror or error} (or give --state-dir DIR)"
        ) from None
    env = os.environ if environ is None else environ
    resolved = path.resolve()
    default = str(schema.runner_defaults()["state_dir"])
    doc = load_bytes(raw)
    data = doc.data if not doc.fatal and isinstance(doc.data, dict) else None
    if data is None:
        match = _STATE_DIR_LINE.search(raw.decode("utf-8", errors="replace"))
        text = match.group("value").strip("'\" ") if match else default
        problem = doc.problems[0].message if doc.problems else "not a mapping"
        where = _state_dir(resolved, _text(text, env, default))
        return FileView(resolved, where, None, None, problem)
    state_dir = _state_dir(resolved, _text(data.get("state_dir", default), env, default))
    return FileView(resolved, state_dir, _accounts(data), _seconds(data.get("stop_timeout")))


def _text(value: Any, env: Mapping[str, str], default: str) -> str:
    if not isinstance(value, str):
        return default
    try:
        return interpolate(value, env, missing=_UNSET).value
    except InterpolationError:
        return value


def _state_dir(config: Path, text: str) -> Path:
    return (config.parent / Path(os.path.expanduser(text))).resolve()


def _accounts(data: dict[str, Any]) -> tuple[tuple[str, bool], ...] | None:
    entries = data.get("accounts")
    if not isinstance(entries, list):
        return None
    found = data.get("defaults")
    defaults: dict[str, Any] = found if isinstance(found, dict) else {}
    out = []
    for entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            enabled = entry.get("enabled", defaults.get("enabled", True))
            out.append((entry["name"], enabled is not False))
    return tuple(out)


def _seconds(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None
