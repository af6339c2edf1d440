"""`multirun export`: run each account of a runner.yaml on systemd, Kubernetes or Compose.

Every format runs the same unit, ``multirun run-account CONFIG NAME``, once per enabled
account, with credentials by variable name (never a value) and the supervisor's stop
and restart rules mapped to the engine's. See docs/deploy.md.
"""

from __future__ import annotations

import getpass
import os
import shutil
import sys
from pathlib import Path

from multirun import __version__
from multirun.config.specs import RunnerSpec
from multirun.core.errors import UsageError
from multirun.export import compose, kubernetes, systemd
from multirun.export.plan import ExportPlan, build, load
from multirun.export.write import Output, Written, write

FORMATS = ("systemd", "kubernetes", "compose")
DEFAULT_NAME = "multirun"
DEFAULT_IMAGE = f"multirun:{__version__}"

__all__ = [
    "DEFAULT_IMAGE", "DEFAULT_NAME", "FORMATS", "ExportPlan", "Written", "export", "load", "render",
]  # fmt: skip


def export(
    fmt: str,
    runner: RunnerSpec,
    out_dir: Path,
    *,
    name: str = DEFAULT_NAME,
    image: str = DEFAULT_IMAGE,
    executable: Path | None = None,
    user: str | None = None,
) -> Written:
    """Write the ``fmt`` files for ``runner``'s enabled accounts into ``out_dir``."""
    plan = build(runner)
    output = render(fmt, plan, out_dir, name=name, image=image, executable=executable, user=user)
    return write(output, out_dir)


def render(
    fmt: str,
    plan: ExportPlan,
    out_dir: Path,
    *,
    name: str = DEFAULT_NAME,
    image: str = DEFAULT_IMAGE,
    executable: Path | None = None,
    user: str | None = None,
) -> Output:
    """The files of ``fmt`` for ``plan``, not yet written."""
    _check_name(name)
    if fmt == "systemd":
        exe = executable or multirun_executable()
        if not exe.is_absolute():
            raise UsageError(f"--executable {exe}: must be an absolute path")
        output = systemd.render(plan, out_dir, name=name, executable=exe, user=_user(user))
    elif fmt == "kubernetes":
        output = kubernetes.render(plan, name=name, image=image)
    elif fmt == "compose":
        output = compose.render(plan, name=name, image=image)
    else:
        raise UsageError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    output.notes = plan.notes + output.notes
    return output


def multirun_executable() -> Path:
    """The absolute path of the ``multirun`` command of this installation."""
    beside = Path(sys.executable).parent / "multirun"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("multirun")
    if found:
        return Path(found).resolve()
    raise UsageError("cannot find the multirun command: pass --executable PATH")


def _user(user: str | None) -> str | None:
    """The unit's ``User=``: as asked; by default who exports, unless root ("" for none)."""
    if user is not None:
        return user or None
    current = getpass.getuser()
    return None if current == "root" else current


def _check_name(name: str) -> None:
    if not name or not all(c.isalnum() or c == "-" for c in name) or not name[0].isalpha():
        raise UsageError(f"--name {name!r}: use letters, digits and '-', starting with a letter")
    if name != name.lower():
        raise UsageError(f"--name {name!r}: use lower-case letters")
