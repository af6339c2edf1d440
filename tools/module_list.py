"""Print every module of the multirun package with the first line of its docstring.

A docs tool, not part of the runtime package: ``docs/architecture.md`` points here for the
exhaustive list instead of keeping a hand-written copy that drifts. Docstrings are read
with :mod:`ast`, so nothing is imported (no optional dependency, no side effect).

    python tools/module_list.py            # the whole package
    python tools/module_list.py account    # one package (a path under multirun/)
"""

from __future__ import annotations

import ast
import os
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "multirun"


def modules(root: Path) -> Iterator[Path]:
    """The ``.py`` files under ``root``: each package's ``__init__.py`` first, then its
    modules, then its subpackages, in name order."""
    init = root / "__init__.py"
    if init.is_file():
        yield init
    for path in sorted(root.glob("*.py")):
        if path.name != "__init__.py":
            yield path
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and (p / "__init__.py").is_file()):
        yield from modules(sub)


def first_line(path: Path) -> str:
    """The first line of ``path``'s module docstring, or ``-`` when it has none."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    return doc.strip().splitlines()[0] if doc and doc.strip() else "-"


def listing(root: Path = PACKAGE) -> list[str]:
    """One line per module: its path relative to the package's parent, then its first line."""
    base = PACKAGE.parent
    rows = [(str(p.relative_to(base)), first_line(p)) for p in modules(root)]
    width = max((len(name) for name, _ in rows), default=0)
    return [f"{name:<{width}}  {line}" for name, line in rows]


def main(argv: list[str]) -> int:
    root = PACKAGE / argv[0] if argv else PACKAGE
    if not root.is_dir():
        print(f"module_list: no package {root}", file=sys.stderr)
        return 2
    try:
        sys.stdout.write("".join(f"{line}\n" for line in listing(root)))
        sys.stdout.flush()
    except BrokenPipeError:  # `| head`: the reader has all it wanted (Python's documented way)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
