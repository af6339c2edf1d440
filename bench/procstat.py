"""/proc readings for the benches and tests: memory, CPU time and a process's descendants.

Linux only; each reader returns None (or nothing) where /proc does not tell.
"""

from __future__ import annotations

from pathlib import Path

PROC = Path("/proc")


def pss_kib(pid: int) -> int | None:
    """Proportional set size of ``pid`` in KiB (/proc/PID/smaps_rollup), None if unknown."""
    try:
        text = (PROC / str(pid) / "smaps_rollup").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return None


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of ``pid`` in clock ticks (/proc/PID/stat), None if unknown."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)


def parent_pid(pid: int) -> int | None:
    """The parent of ``pid`` (/proc/PID/stat), None if unknown."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return int(text[text.rindex(")") + 2 :].split()[1])


def descendants(root: int) -> list[int]:
    """Every live descendant of ``root`` (Linux /proc scan), children first."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir() if PROC.is_dir() else ():
        if entry.name.isdigit():
            ppid = parent_pid(int(entry.name))
            if ppid is not None:
                children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found
