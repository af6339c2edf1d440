"""Environment interpolation in runner.yaml string values, with Docker Compose semantics.

Forms: ``$VAR`` and ``${VAR}`` (the variable must be set), ``${VAR:-default}`` (default
when unset or empty), ``${VAR-default}`` (default when unset), ``${VAR:?message}`` (error
when unset or empty), ``${VAR?message}`` (error when unset), ``${VAR:+alt}`` / ``${VAR+alt}``
(``alt`` when set and non-empty / set), and ``$$`` for a literal ``$``. Defaults, messages
and alternatives may themselves contain interpolations.

Unlike Compose, an unset variable with no default is an error, not an empty string: a
missing credential must stop ``validate``, not become an empty API key.

Error messages name variables, never their values (a value may be an API key).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = (":-", ":?", ":+", "-", "?", "+")


class InterpolationError(ValueError):
    """A value cannot be interpolated; the message is one line and holds no value."""


@dataclass
class Result:
    """An interpolated string and the variables it read (set or not)."""

    value: str
    variables: list[str] = field(default_factory=list)


def has_references(text: str) -> bool:
    """Whether ``text`` refers to any variable (``$$`` alone does not)."""
    return bool(re.search(r"(?<!\$)(?:\$\$)*\$(?:\{|[A-Za-z_])", text))


def variable_names(text: str) -> list[str]:
    """Every name ``text`` may refer to, read without parsing (so even from a broken form).

    Errs on the side of more: ``$$VAR`` (a literal ``$VAR``) also yields ``VAR``.
    """
    return re.findall(r"\$\{?(" + _NAME.pattern + ")", text)


def interpolate(text: str, environ: Mapping[str, str], *, missing: str | None = None) -> Result:
    """``text`` with every reference replaced; raises :class:`InterpolationError`.

    ``missing``: the value of a required variable that is not set (``${VAR}``,
    ``${VAR:?...}``) instead of an error; defaults and alternatives apply as usual.
    """
    result = Result("")
    result.value = _Parser(text, environ, result.variables, missing).run()
    return result


class _Parser:
    def __init__(
        self, text: str, environ: Mapping[str, str], seen: list[str], missing: str | None = None
    ) -> None:
        self.text = text
        self.environ = environ
        self.seen = seen
        self.missing = missing
        self.pos = 0

    def run(self) -> str:
        out: list[str] = []
        while self.pos < len(self.text):
            dollar = self.text.find("$", self.pos)
            if dollar < 0:
                out.append(self.text[self.pos :])
                break
            out.append(self.text[self.pos : dollar])
            self.pos = dollar + 1
            out.append(self._reference(dollar))
        return "".join(out)

    def _reference(self, dollar: int) -> str:
        nxt = self.text[self.pos : self.pos + 1]
        if nxt == "$":
            self.pos += 1
            return "$"
        if nxt == "{":
            self.pos += 1
            return self._braced(dollar)
        match = _NAME.match(self.text, self.pos)
        if not match:
            raise InterpolationError(
                f"lone '$' at character {dollar + 1}: write $$ for a literal dollar"
            )
        self.pos = match.end()
        return self._lookup_required(match.group())

    def _braced(self, dollar: int) -> str:
        match = _NAME.match(self.text, self.pos)
        if not match:
            raise InterpolationError(
                f"malformed '${{' at character {dollar + 1}: expected a variable name"
            )
        name = match.group()
        self.pos = match.end()
        if self.text.startswith("}", self.pos):
            self.pos += 1
            return self._lookup_required(name)
        if self.pos >= len(self.text):
            raise InterpolationError(
                f"malformed '${{{name}' at character {dollar + 1}: missing '}}'"
            )
        operator = next((op for op in _OPERATORS if self.text.startswith(op, self.pos)), None)
        if operator is None:
            raise InterpolationError(
                f"malformed '${{{name}' at character {dollar + 1}: expected '}}', ':-', '-', "
                "':?', '?', ':+' or '+' after the name"
            )
        self.pos += len(operator)
        word = self._word(dollar, name)
        return self._apply(name, operator, word)

    def _word(self, dollar: int, name: str) -> str:
        """The raw text up to the '}' closing this reference (nested ``${...}`` allowed)."""
        depth, start = 0, self.pos
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if self.text.startswith("$$", self.pos):
                self.pos += 2
                continue
            if self.text.startswith("${", self.pos):
                depth += 1
                self.pos += 2
                continue
            self.pos += 1
            if char == "}":
                if depth == 0:
                    return self.text[start : self.pos - 1]
                depth -= 1
        raise InterpolationError(f"malformed '${{{name}' at character {dollar + 1}: missing '}}'")

    def _apply(self, name: str, operator: str, word: str) -> str:
        self.seen.append(name)
        value = self.environ.get(name)
        is_set = value is not None
        usable = is_set and value != "" if operator.startswith(":") else is_set
        kind = operator[-1]
        if kind == "-":
            return value if usable and value is not None else self._nested(word)
        if kind == "+":
            return self._nested(word) if usable else ""
        if usable and value is not None:  # kind == "?"
            return value
        if self.missing is not None:
            return self.missing
        message = self._nested(word) or f"environment variable {name} is not set"
        state = "is empty" if is_set else "is not set"
        raise InterpolationError(f"${{{name}}} {state}: {message}")

    def _nested(self, word: str) -> str:
        return _Parser(word, self.environ, self.seen, self.missing).run()

    def _lookup_required(self, name: str) -> str:
        self.seen.append(name)
        value = self.environ.get(name)
        if not value and self.missing is not None:  # unset or empty: nothing to go by
            return self.missing
        if value is None:
            raise InterpolationError(
                f"environment variable {name} is not set "
                f"(export it, or give a default with ${{{name}:-...}})"
            )
        return value
