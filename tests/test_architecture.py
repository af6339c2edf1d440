"""The house's rules, checked on the source: layers import only downward, each package
says its job, typer stays in the CLI, one class per name, no mixins or patched methods."""

from __future__ import annotations

import ast
import functools
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "multirun"
TOP = "(top)"  # multirun/__init__.py and __main__.py

# What each package may import of the others (itself always). Data flows one way:
# config -> specs -> supervisor -> workers -> client -> server; ops and cli sit on top.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "api": {"core"},
    "sim": {"core"},
    "config": {"core", "strategies"},  # a strategy's params are checked against its schema
    "strategies": {"core", "api", "config"},  # quotes and bars; the account's spec
    "account": {"core", "api", "config", "strategies"},
    "report": {"core", "account"},
    "services": {"core", "config", "account", TOP},  # TOP: multirun.__version__
    "supervisor": {"core", "api", "config", "strategies", "account", "services", "sim"},
    "export": {"core", "config", "strategies", "supervisor", TOP},
    "ops": {"core", "api", "config", "account", "supervisor"},
    "web": {"core", "config", "account", "ops"},
    "cli": {"*"},
    TOP: {"cli"},
}


@functools.cache
def parsed() -> tuple[tuple[Path, ast.Module], ...]:
    return tuple(
        (path, ast.parse(path.read_text(encoding="utf-8")))
        for path in sorted(PACKAGE.rglob("*.py"))
        if "__pycache__" not in path.parts
    )


def modules() -> Iterator[tuple[Path, ast.Module]]:
    yield from parsed()


def package_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else TOP


def imported(tree: ast.Module) -> Iterator[str]:
    """Every multirun module a module imports, at its top or inside a function."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "multirun":
                yield from (f"multirun.{alias.name}" for alias in node.names)
            elif node.module.startswith("multirun."):
                yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("multirun"))


def test_packages_import_only_what_their_layer_allows() -> None:
    wrong = []
    for path, tree in modules():
        source = package_of(path)
        allowed = ALLOWED[source]
        for name in imported(tree):
            parts = name.split(".")
            target = parts[1] if len(parts) > 1 and parts[1] != "__version__" else TOP
            if target != source and "*" not in allowed and target not in allowed:
                wrong.append(f"{path.relative_to(PACKAGE.parent)} ({source}) imports {name}")
    assert not wrong, "\n".join(wrong)


def test_every_package_is_listed_and_says_its_job() -> None:
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert packages <= set(ALLOWED), f"add the new package to ALLOWED: {packages - set(ALLOWED)}"
    for init in PACKAGE.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and len(doc.split()) >= 8, f"{init}: a docstring saying the package's job"


def test_only_entry_points_sit_at_the_top() -> None:
    assert len(list(PACKAGE.glob("*.py"))) <= 6


def test_only_the_cli_imports_typer() -> None:
    for path, tree in modules():
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        if "typer" in names:
            assert package_of(path) == "cli", f"{path} imports typer"


def test_one_class_per_name() -> None:
    where: dict[str, list[str]] = defaultdict(list)
    for path, tree in modules():
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                where[node.name].append(str(path.relative_to(PACKAGE)))
    twice = {name: places for name, places in where.items() if len(places) > 1}
    assert not twice, twice


@pytest.mark.parametrize("word", ["Mixin", "setattr("])
def test_no_mixins_and_no_patched_methods(word: str) -> None:
    for path, _tree in modules():
        text = path.read_text(encoding="utf-8")
        for line in text.splitlines():
            if word in line and "object.__setattr__(self" not in line:  # frozen dataclass init
                raise AssertionError(f"{path}: {line.strip()}")
