"""multirun.config.yamlload: safe, located loading that refuses what PyYAML lets through."""

from __future__ import annotations

from pathlib import Path

import pytest

from multirun.config.yamlload import MAX_BYTES, Document, Mark, load_bytes, load_text, typed


def test_positions_of_values_and_keys() -> None:
    doc = load_text("a: 1\nb:\n  - x\n  - {c: true}\n")
    assert doc.data == {"a": 1, "b": ["x", {"c": True}]}
    assert doc.values[("a",)] == Mark(1, 4)
    assert doc.values[("b", 1, "c")] == Mark(4, 9)
    assert doc.keys[("b", 1, "c")] == Mark(4, 6)
    assert doc.mark(("b", 1, "missing")) == Mark(4, 5)  # nearest written ancestor


def test_duplicate_keys_are_reported_at_the_second() -> None:
    doc = load_text("a: 1\nb: {x: 1, x: 2}\na: 3\n")
    found = [(p.mark.line, p.path, p.message) for p in doc.problems]
    assert found == [
        (2, ("b", "x"), "duplicate key 'x' (first at line 2)"),
        (3, ("a",), "duplicate key 'a' (first at line 1)"),
    ]
    assert not doc.fatal


def test_merge_keys_may_be_overridden_but_not_repeated() -> None:
    doc = load_text("base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  y: 3\n")
    assert doc.data["use"] == {"x": 1, "y": 3}
    assert doc.problems == []
    doc = load_text("base: &b {x: 1}\nuse:\n  <<: *b\n  y: 3\n  y: 4\n")
    assert [p.path for p in doc.problems] == [("use", "y")]


@pytest.mark.parametrize(
    "text",
    [
        "a: !!python/object/apply:os.system [echo hi]",
        "a: !!python/name:os.system ''",
        "a: !!set {x, y}",
        "a: !local 1",
    ],
)
def test_tags_beyond_plain_yaml_are_refused(text: str) -> None:
    doc = load_text(text)
    assert doc.fatal
    assert doc.problems[0].path == ("a",)


def test_alias_bomb_is_refused_before_expanding() -> None:
    text = "l0: &l0 [a, a, a, a, a, a, a, a, a, a]\n"
    for i in range(1, 9):  # 10**9 values once expanded
        text += f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]\n"
    doc = load_text(text)
    assert doc.fatal and "alias bomb" in doc.problems[0].message


def test_small_shared_aliases_are_fine() -> None:
    doc = load_text("a: &x [1, 2]\nb: *x\nc: *x\n")
    assert doc.data == {"a": [1, 2], "b": [1, 2], "c": [1, 2]}


def test_recursive_alias_is_refused() -> None:
    assert "recursive" in load_text("a: &a [1, *a]\n").problems[0].message


def test_oversized_text_is_refused() -> None:
    doc = load_text("#" * (MAX_BYTES + 1))
    assert doc.fatal and "larger than" in doc.problems[0].message


def test_oversized_bytes_are_refused_unread() -> None:
    doc = load_bytes(b"#" * (MAX_BYTES + 1))
    assert doc.fatal and doc.problems[0].message == "file is larger than 1 MiB: refusing to load it"


def test_bytes_that_are_not_utf8_are_located_in_characters() -> None:
    doc = load_bytes("a: 1\nb: é".encode() + b"\xff\n")
    assert doc.fatal and doc.problems[0].mark == Mark(2, 5)
    assert doc.problems[0].message == "file is not valid UTF-8 text"
    assert load_bytes(b"a: 1\n").data == {"a": 1}


def test_typed_is_what_an_unquoted_scalar_would_be() -> None:
    assert typed("0.01") == 0.01 and typed("3") == 3 and typed("true") is True
    assert typed("BTCUSD") == "BTCUSD" and typed("") == ""


def test_syntax_errors_carry_a_position_and_no_snippet() -> None:
    doc = load_text("a: 1\nb: [secret-value\nc: 2\n")
    problem = doc.problems[0]
    assert doc.fatal and problem.mark.line == 3
    assert "secret-value" not in problem.message


def test_tabs_get_a_hint() -> None:
    doc = load_text("a:\n\tb: 1\n")
    assert doc.fatal and doc.problems[0].mark == Mark(2, 1)
    assert "indent with spaces" in doc.problems[0].message


def test_characters_yaml_refuses_are_located() -> None:
    doc = load_text("a: 1\nb: x\x00\n")
    assert doc.fatal and doc.problems[0].mark == Mark(2, 5)
    assert "#x0000" in doc.problems[0].message


def test_empty_document() -> None:
    doc = load_text("# only a comment\n")
    assert doc.data is None and doc.problems == []


def _altered(text: str) -> list[str]:
    """``text`` and a few edits of it where libyaml and PyYAML could part ways."""
    lines = text.split("\n")
    edits = ["\t", "? ", "!", "\ufeff", "ü", "\U0001f600", "{", "- ", ": ", "'", "&a ", "*a"]
    out = [text]
    for i, edit in enumerate(edits):
        k = (7 * i + 3) % len(lines)
        line = lines[k]
        cut = len(line) // 2
        out.append("\n".join([*lines[:k], line[:cut] + edit + line[cut:], *lines[k + 1 :]]))
    return out


def test_libyaml_composes_what_pyyaml_does() -> None:
    """Every config of the test corpus, and edits of the full one: the same document,
    positions, styles and problems whichever parser composes it (a 500-account file: 20 ms,
    not 240)."""
    configs = Path(__file__).parent / "configs"
    texts = [f.read_text() for f in sorted(configs.rglob("*.yaml"))]
    texts += _altered((configs / "full.yaml").read_text())
    assert len(texts) > 40

    def seen(doc: Document) -> tuple[object, ...]:
        problems = [(p.mark, p.path, p.message) for p in doc.problems]
        return repr(doc.data), doc.values, doc.keys, doc.styles, doc.texts, problems, doc.fatal

    for text in texts:
        assert seen(load_text(text, libyaml=True)) == seen(load_text(text, libyaml=False)), text


@pytest.mark.parametrize("tagged", ["!!timestamp soon", "!!int ten", "!!float x", "!!bool maybe"])
def test_a_standard_tag_on_a_value_it_cannot_read_is_a_located_problem(tagged: str) -> None:
    """Not a traceback (the constructor raised unmarked errors); the value is not quoted."""
    for text in (f"a: 1\nb: {tagged}\n", f"a: 1\n{tagged}: 2\n"):
        doc = load_text(text)
        assert doc.fatal and len(doc.problems) == 1
        assert doc.problems[0].mark.line == 2
        assert "cannot be read as !!" in doc.problems[0].message
        assert tagged.split()[1] not in doc.problems[0].message
