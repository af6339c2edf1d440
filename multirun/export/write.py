"""Writing an export: its files in a directory, credential templates never overwritten.

A credential template (the systemd env file, the Kubernetes Secret) is written once,
with names and empty values; a second export keeps the file already there, since its
owner may have filled it in.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from multirun.core.errors import UsageError

FILE_MODE = 0o644


@dataclass
class Output:
    """What an exporter renders: path (relative to the output directory) -> text."""

    files: dict[str, str] = field(default_factory=dict)
    # path -> (text, mode): written only when absent
    credentials: dict[str, tuple[str, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class Written:
    """What :func:`write` did."""

    out_dir: Path
    written: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def write(output: Output, out_dir: Path) -> Written:
    """Write ``output`` under ``out_dir`` (created); returns what was written and kept."""
    out_dir = out_dir.resolve()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"{out_dir}: cannot create: {error.strerror or error}") from None
    done = Written(out_dir, notes=list(output.notes))
    for rel, text in output.files.items():
        path = out_dir / rel
        _write(path, text, FILE_MODE)
        done.written.append(path)
    for rel, (text, mode) in output.credentials.items():
        path = out_dir / rel
        if path.exists():
            done.kept.append(path)
            continue
        _write(path, text, mode)
        done.written.append(path)
    return done


def _write(path: Path, text: str, mode: int) -> None:
    """Write ``path`` born with ``mode`` (an env file is never world-readable, even briefly)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as error:
        raise UsageError(f"{path}: cannot write: {error.strerror or error}") from None
