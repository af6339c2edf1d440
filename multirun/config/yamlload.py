"""Safe YAML loading that remembers where every value came from.

PyYAML's ``safe_load`` silently keeps the last of two duplicate keys, expands aliases
without limit and forgets line numbers. This loader composes the node graph with the
safe loader (so no Python tags; libyaml's where it is installed and agrees, PyYAML's for
every text with a problem), then builds plain values itself, recording the line and
column of every key and value and refusing duplicate keys, oversized files and alias
bombs. Every problem is collected, so the caller can report them all at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

MAX_BYTES = 1024 * 1024
# Nodes after alias expansion. A real runner.yaml has a few hundred; a "billion laughs"
# document has billions, built from a few lines.
MAX_EXPANDED_NODES = 100_000

_MERGE_TAG = "tag:yaml.org,2002:merge"
_PLAIN_COLLECTION_TAGS = frozenset({"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})
# libyaml composes a 500-account runner.yaml in 20 ms where PyYAML's Python parser takes
# 240 (start reads the file twice before its first fork; status, validate and reload once)
LIBYAML: bool = getattr(yaml, "__with_libyaml__", False)
# Where the two parsers disagree, PyYAML composes the text alone: libyaml accepts a tab or
# "? " inside a plain scalar, a byte-order mark inside the text, a lone "!" (found by
# composing 70,000 altered runner.yaml files both ways; no other difference)
_DIVERGES = re.compile("[\t?!\ufeff]")

PathKey = str | int
Path = tuple[PathKey, ...]


@dataclass(frozen=True)
class Mark:
    """A 1-based position in the file."""

    line: int
    column: int


@dataclass
class YamlProblem:
    mark: Mark
    path: Path
    message: str


@dataclass
class Document:
    """A loaded document: plain data, where each part of it is, what went wrong."""

    data: Any = None
    values: dict[Path, Mark] = field(default_factory=dict)
    keys: dict[Path, Mark] = field(default_factory=dict)
    styles: dict[Path, str | None] = field(default_factory=dict)
    texts: dict[Path, str] = field(default_factory=dict)  # scalars as written
    problems: list[YamlProblem] = field(default_factory=list)
    fatal: bool = False

    def mark(self, path: Path) -> Mark:
        """Where ``path`` is written: its value, else its nearest written ancestor."""
        for end in range(len(path), -1, -1):
            found = self.values.get(path[:end])
            if found is not None:
                return found
        return Mark(1, 1)

    def key_mark(self, path: Path) -> Mark:
        """Where the key of ``path`` is written (for unknown or duplicate keys)."""
        return self.keys.get(path) or self.mark(path)


def _mark(node_mark: yaml.Mark | None) -> Mark:
    if node_mark is None:
        return Mark(1, 1)
    return Mark(node_mark.line + 1, node_mark.column + 1)


def load_bytes(raw: bytes) -> Document:
    """Parse a file's bytes: more than :data:`MAX_BYTES`, or not UTF-8, is ``fatal``."""
    if len(raw) > MAX_BYTES:
        limit = f"{MAX_BYTES // (1024 * 1024)} MiB"
        return _fatal(Document(), Mark(1, 1), f"file is larger than {limit}: refusing to load it")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        # Counted in characters, as YAML's positions are: what precedes is valid UTF-8.
        valid = raw[: error.start].decode("utf-8")
        line_start = valid.rfind("\n") + 1
        mark = Mark(valid.count("\n") + 1, len(valid) - line_start + 1)
        return _fatal(Document(), mark, "file is not valid UTF-8 text")
    return load_text(text)


def typed(text: str) -> Any:
    """``text`` typed as YAML types an unquoted scalar: ``0.01`` is a number, ``x`` text."""
    loader = yaml.SafeLoader("")
    tag = loader.resolve(yaml.ScalarNode, text, (True, False))
    if tag == "tag:yaml.org,2002:str" or not text:
        return text
    try:
        return loader.construct_object(yaml.ScalarNode(tag, text))
    except yaml.YAMLError:
        return text


def load_text(text: str, *, libyaml: bool = LIBYAML) -> Document:
    """Parse ``text``; syntax errors, alias bombs and bad tags make the result ``fatal``.

    ``libyaml``: compose with libyaml where it agrees with PyYAML (the same document, the
    same positions), else with PyYAML alone, as always for a text with a problem."""
    doc = Document()
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        return _fatal(doc, Mark(1, 1), f"file is larger than {MAX_BYTES // 1024} KiB")
    try:
        # The reader checks every character as it is built: a NUL fails here.
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as error:
        return _fatal(doc, _position(text, error.position), _reader_message(error))
    try:
        node = _compose_fast(text) if libyaml and not _DIVERGES.search(text) else None
        if node is None:  # not composed by libyaml: PyYAML's own words for the problem
            node = loader.get_single_node()
    except yaml.MarkedYAMLError as error:
        return _fatal(doc, _mark(error.problem_mark), _yaml_message(error))
    except yaml.YAMLError as error:  # unmarked, none known: keep it to one line
        return _fatal(doc, Mark(1, 1), f"YAML: {error}".splitlines()[0])
    finally:
        loader.dispose()
    if node is None:
        return doc
    expansion = _check_expansion(node)
    if expansion is not None:
        return _fatal(doc, _mark(node.start_mark), expansion)
    try:
        doc.data = _Builder(doc, loader).build(node, ())
    except _Refused as refused:
        return _fatal(doc, _mark(refused.error.problem_mark), refused.message, refused.path)
    except yaml.MarkedYAMLError as error:
        return _fatal(doc, _mark(error.problem_mark), _yaml_message(error))
    return doc


def _compose_fast(text: str) -> yaml.Node | None:
    """``text``'s node graph composed by libyaml (the same safe resolver, hence the same
    tags and marks); None when libyaml finds anything wrong (or the document empty), so
    that PyYAML composes it again and names the problem in the words it always used."""
    loader = yaml.CSafeLoader(text)
    try:
        return loader.get_single_node()
    except yaml.YAMLError:
        return None
    finally:
        loader.dispose()


def _unreadable(node: yaml.Node) -> yaml.MarkedYAMLError:
    tag = node.tag.replace("tag:yaml.org,2002:", "!!", 1)
    return yaml.constructor.ConstructorError(
        None, None, f"this value cannot be read as {tag}", node.start_mark
    )


def _tag_error(node: yaml.Node) -> yaml.MarkedYAMLError:
    return yaml.constructor.ConstructorError(
        None, None, f"unsupported tag {node.tag!r}", node.start_mark
    )


class _Refused(Exception):
    """A value the safe constructor cannot build (an unknown or unsafe tag)."""

    def __init__(self, path: Path, error: yaml.MarkedYAMLError) -> None:
        super().__init__()
        self.path = path
        self.error = error
        self.message = _yaml_message(error).replace("YAML syntax error: ", "YAML: ")


def _fatal(doc: Document, mark: Mark, message: str, path: Path = ()) -> Document:
    doc.problems.append(YamlProblem(mark, path, message))
    doc.fatal = True
    return doc


def _yaml_message(error: yaml.MarkedYAMLError) -> str:
    """PyYAML's problem and context, without its quoted snippet of the file (secrets)."""
    parts = [p for p in (error.context, error.problem) if p]
    message = "YAML syntax error: " + ("; ".join(parts) or "cannot parse")
    if "'\\t'" in message:  # PyYAML's words for a tab do not say what to do
        message += " (indent with spaces, not tabs)"
    return message


def _reader_message(error: yaml.reader.ReaderError) -> str:
    """A character YAML does not allow, by code point (never the text around it)."""
    return f"YAML: unacceptable character #x{error.character:04x}: {error.reason}"


def _position(text: str, offset: int) -> Mark:
    """The line and column of character ``offset`` in ``text``."""
    line_start = text.rfind("\n", 0, offset) + 1
    return Mark(text.count("\n", 0, offset) + 1, offset - line_start + 1)


def _check_expansion(root: yaml.Node) -> str | None:
    """Refuse recursive aliases and documents that expand to too many nodes."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise RecursionError
        active.add(key)
        total = 1 + sum(size(child) for child in _children(node))
        active.discard(key)
        sizes[key] = min(total, MAX_EXPANDED_NODES + 1)
        return sizes[key]

    try:
        total = size(root)
    except RecursionError:
        return "recursive alias: an anchor refers to itself"
    if total > MAX_EXPANDED_NODES:
        return f"aliases expand to more than {MAX_EXPANDED_NODES} values (alias bomb?); refusing"
    return None


def _children(node: yaml.Node) -> Iterator[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield key
            yield value
    elif isinstance(node, yaml.SequenceNode):
        yield from node.value


class _Builder:
    def __init__(self, doc: Document, loader: yaml.SafeLoader) -> None:
        self.doc = doc
        self.loader = loader

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.doc.values[path] = _mark(node.start_mark)
        # Collections are built here, not by the constructor: refuse any tag on them
        # (!!python/object/apply:..., !!set, !!omap) rather than silently ignore it.
        is_collection = isinstance(node, yaml.MappingNode | yaml.SequenceNode)
        if is_collection and node.tag not in _PLAIN_COLLECTION_TAGS:
            raise _Refused(path, _tag_error(node))
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(child, (*path, i)) for i, child in enumerate(node.value)]
        if isinstance(node, yaml.ScalarNode):  # every node that is not a collection
            self.doc.styles[path] = node.style or None  # libyaml's plain style is ''
            self.doc.texts[path] = node.value
        # The safe constructor types the scalar (int, float, bool, null, str...) and
        # raises a marked error for any tag it does not know, e.g. !!python/object.
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as error:
            raise _Refused(path, error) from None
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError):
            # a standard tag on a value it cannot read (!!int foo, !!timestamp x): the
            # constructor fails unmarked; named without the value (it may be a secret)
            raise _Refused(path, _unreadable(node)) from None

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, Any]:
        # Merge keys (<<: *anchor) are expanded by the safe constructor, which puts the
        # merged entries first; explicit keys may override them, but not repeat each other.
        explicit = sum(1 for key, _ in node.value if key.tag != _MERGE_TAG)
        self.loader.flatten_mapping(node)
        first_explicit = len(node.value) - explicit
        result: dict[str, Any] = {}
        written: set[str] = set()
        for index, (key_node, value_node) in enumerate(node.value):
            key = self._key(key_node, path)
            if key is None:
                continue
            child = (*path, key)
            if index >= first_explicit:
                if key in written:
                    self._duplicate(key_node, child)
                written.add(key)
            self.doc.keys[child] = _mark(key_node.start_mark)
            result[key] = self.build(value_node, child)
        return result

    def _key(self, key_node: yaml.Node, path: Path) -> str | None:
        try:
            key = self.loader.construct_object(key_node, deep=True)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError):
            raise _Refused(path, _unreadable(key_node)) from None
        if isinstance(key, str):
            return key
        self.doc.problems.append(
            YamlProblem(_mark(key_node.start_mark), path, "mapping keys must be strings")
        )
        return None

    def _duplicate(self, key_node: yaml.Node, child: Path) -> None:
        first = self.doc.keys.get(child)
        where = f" (first at line {first.line})" if first else ""
        self.doc.problems.append(
            YamlProblem(_mark(key_node.start_mark), child, f"duplicate key {child[-1]!r}{where}")
        )
