"""multirun.config.interpolate on its own: Compose semantics, plus unset-is-an-error."""

from __future__ import annotations

import pytest

from multirun.config.interpolate import (
    InterpolationError,
    has_references,
    interpolate,
    variable_names,
)

ENV = {"SET": "value", "EMPTY": "", "OTHER": "other"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        ("${SET}", "value"),
        ("$SET", "value"),
        ("a-${SET}-b", "a-value-b"),
        ("$SET/$OTHER", "value/other"),
        ("${EMPTY}", ""),
        ("${UNSET:-dflt}", "dflt"),
        ("${EMPTY:-dflt}", "dflt"),
        ("${SET:-dflt}", "value"),
        ("${UNSET-dflt}", "dflt"),
        ("${EMPTY-dflt}", ""),
        ("${UNSET:-}", ""),
        ("${SET:?needed}", "value"),
        ("${EMPTY?needed}", ""),
        ("${SET:+alt}", "alt"),
        ("${EMPTY:+alt}", ""),
        ("${EMPTY+alt}", "alt"),
        ("${UNSET+alt}", ""),
        ("$$", "$"),
        ("$${SET}", "${SET}"),
        ("cost: $$5", "cost: $5"),
        ("$$$SET", "$value"),
        ("${UNSET:-${OTHER}}", "other"),
        ("${UNSET:-a ${UNSET2:-b} c}", "a b c"),
        ("${UNSET:-{braces}}", "{braces}"),  # the first } closes it; the second is text
        ("${UNSET:-$$}", "$"),
        ("${UNSET:-sim-demo-key}", "sim-demo-key"),
    ],
)
def test_values(text: str, expected: str) -> None:
    assert interpolate(text, ENV).value == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("${UNSET}", "environment variable UNSET is not set"),
        ("$UNSET", "environment variable UNSET is not set"),
        ("${UNSET:?tell me}", "${UNSET} is not set: tell me"),
        ("${UNSET?tell me}", "${UNSET} is not set: tell me"),
        ("${EMPTY:?tell me}", "${EMPTY} is empty: tell me"),
        ("${UNSET:?}", "${UNSET} is not set: environment variable UNSET is not set"),
        ("${UNSET:?need ${OTHER}}", "need other"),
        ("${SET", "missing '}'"),
        ("${SET:-abc", "missing '}'"),
        ("${}", "expected a variable name"),
        ("${1A}", "expected a variable name"),
        ("${SET!}", "expected '}'"),
        ("${SET:=x}", "expected '}'"),
        ("a $ b", "lone '$' at character 3"),
        ("end$", "lone '$'"),
        ("${UNSET:-${ALSO_UNSET}}", "ALSO_UNSET is not set"),
    ],
)
def test_errors(text: str, message: str) -> None:
    with pytest.raises(InterpolationError, match=None) as caught:
        interpolate(text, ENV)
    assert message in str(caught.value)


def test_errors_never_contain_values() -> None:
    env = {"KEY": "hunter2-secret"}
    for text in ("${KEY:?x} ${UNSET}", "${KEY} $", "${KEY} ${"):
        with pytest.raises(InterpolationError) as caught:
            interpolate(text, env)
        assert "hunter2" not in str(caught.value)


def test_records_variables_read() -> None:
    result = interpolate("${A:-x}-${SET}-${B:-${C:-y}}", ENV)
    assert result.value == "x-value-y"
    assert set(result.variables) == {"A", "SET", "B", "C"}


def test_default_not_evaluated_when_unused() -> None:
    # Compose evaluates a default lazily: an unset variable inside an unused default is fine.
    assert interpolate("${SET:-${UNSET}}", ENV).value == "value"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${A}", True),
        ("$A", True),
        ("x${A:-b}", True),
        ("$$", False),
        ("$$A", False),
        ("$$$A", True),
        ("no dollars", False),
        ("$ 5", False),
    ],
)
def test_has_references(text: str, expected: bool) -> None:
    assert has_references(text) is expected


def test_missing_stands_in_for_required_variables_only() -> None:
    env = {"SET": "v"}
    assert interpolate("${A}-$B-${C:?why}", env, missing="x").value == "x-x-x"
    assert interpolate("${EMPTY}", {"EMPTY": ""}, missing="x").value == "x"
    assert interpolate("${A:-d}/${SET}/${A:+alt}", env, missing="x").value == "d/v/"


def test_variable_names_are_read_even_from_a_broken_form() -> None:
    assert variable_names("${A:-$B}x$$C ${D:?m} $1") == ["A", "B", "C", "D"]
    assert variable_names("${KEY") == ["KEY"]  # unterminated: still names key material
