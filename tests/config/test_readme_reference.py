"""README.md's configuration reference is generated from the schema and must not drift.

The generator is a docs tool, tools/config_reference.py. After changing the schema,
regenerate the README's section with:
    MULTIRUN_UPDATE_README=1 python -m pytest tests/config/test_readme_reference.py
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))  # the generator is a script, not part of multirun

import config_reference  # noqa: E402

README = ROOT / "README.md"
START, END = "<!-- config-reference:start -->\n", "<!-- config-reference:end -->"


def section(text: str) -> str:
    match = re.search(re.escape(START) + r"(.*?)" + re.escape(END), text, flags=re.S)
    assert match, "README.md lost its config-reference markers"
    return match.group(1)


def test_readme_config_reference_matches_the_schema() -> None:
    text = README.read_text(encoding="utf-8")
    generated = config_reference.reference_markdown()
    if os.environ.get("MULTIRUN_UPDATE_README") and section(text) != generated:
        start = text.index(START) + len(START)
        end = text.index(END, start)
        README.write_text(text[:start] + generated + text[end:], encoding="utf-8")
        text = README.read_text(encoding="utf-8")
    assert section(text) == generated, (
        "README.md's configuration reference is stale: "
        "MULTIRUN_UPDATE_README=1 python -m pytest tests/config/test_readme_reference.py"
    )


def test_readme_documents_validate_and_schema() -> None:
    text = README.read_text(encoding="utf-8")
    commands = text[text.index("### Commands") :]
    assert "| `validate [CONFIG] [--json] [--strict] [--online]` |" in commands
    assert "| `schema` | prints the JSON Schema" in commands
