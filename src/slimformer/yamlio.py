"""Safe, bounded YAML loading for recipes and override values.

``yaml.safe_load`` builds only plain data, but it does unbounded work on hostile input: a "billion laughs"
document of a few hundred bytes (anchors whose aliases refer to anchors whose aliases ...) expands to
hundreds of millions of nodes, deep nesting ends in ``RecursionError``, and a duplicate mapping key silently
replaces the earlier value. :func:`load_yaml` keeps ``safe_load``'s tag set and its results, and adds limits
that are checked while the document is *composed* (before any Python object is built), so refusing a hostile
document costs time proportional to the part of the text read so far, never to its expansion.

Every refusal is a one-line :class:`~slimformer.errors.ConfigError` that starts with the ``source`` it was
given (a file path, or e.g. ``recipe.yaml: override 'seed=1'``) and says what was expected::

    recipe.yaml: line 12: more than 100 alias references (*name) (max_aliases; at *x); a recipe needs only a few
    recipe.yaml: line 9: duplicate key 'epochs' (first at line 7)
    recipe.yaml: not valid YAML (line 3: mapping values are not allowed here)

The default limits are far above what a recipe needs (the shipped recipes are 0.5-2 KB, nest 4 levels deep,
have ~100 nodes and no aliases) and far below what would take noticeable time or memory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from yaml.events import AliasEvent, MappingStartEvent, SequenceStartEvent
from yaml.nodes import MappingNode, Node, ScalarNode

from slimformer.errors import ConfigError, SlimformerError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_ALIASES",
    "DEFAULT_MAX_NODES",
    "load_yaml",
    "load_yaml_file",
]

#: Largest YAML text accepted, in UTF-8 bytes (a recipe is a few KB).
DEFAULT_MAX_BYTES = 1_000_000
#: Deepest nesting of mappings/lists accepted, counted after alias expansion (a recipe nests ~4 levels).
DEFAULT_MAX_DEPTH = 64
#: Most alias references (``*name``) accepted in one document.
DEFAULT_MAX_ALIASES = 100
#: Most nodes (scalars, lists, mappings) in the document once every alias is expanded.
DEFAULT_MAX_NODES = 100_000

_MERGE_TAG = "tag:yaml.org,2002:merge"


def _line(mark: Any) -> int:
    return int(mark.line) + 1 if mark is not None else 0


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _BoundedSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that counts aliases, nodes and depth while composing, and rejects duplicate keys.

    Composition (events -> node graph) is where an alias becomes a *reference* to an earlier node, so it is
    where an expansion bomb can be measured without being expanded: for every anchored node we record how
    many nodes it stands for and how deep it nests (both after expansion of the aliases inside it); an
    alias then adds those numbers. Everything is O(size of the text).
    """

    def __init__(self, text: str, source: str, *, max_depth: int, max_aliases: int, max_nodes: int) -> None:
        super().__init__(text)
        self._source = source
        self._max_depth = max_depth
        self._max_aliases = max_aliases
        self._max_nodes = max_nodes
        self._depth = 0  # mappings/lists enclosing the node being composed
        self._deepest = 0  # deepest nesting reached (expanded) since the innermost open anchor started
        self._aliases = 0
        self._nodes = 0  # nodes of the expanded document composed so far
        self._anchor_stats: dict[str, tuple[int, int]] = {}  # anchor -> (expanded node count, expanded height)
        self._open_anchors: set[str] = set()  # anchors whose node is still being composed
        self._checked_mappings: set[int] = set()  # id() of mapping nodes already checked for duplicate keys

    # -- errors ------------------------------------------------------------------------------------------
    def _fail(self, mark: Any, message: str) -> ConfigError:
        return ConfigError(f"{self._source}: line {_line(mark)}: {message}")

    def _add_nodes(self, count: int, mark: Any, via_alias: bool) -> None:
        self._nodes += count
        if self._nodes > self._max_nodes:
            how = " once aliases are expanded" if via_alias or self._aliases else ""
            raise self._fail(
                mark, f"document too large: more than {self._max_nodes} nodes{how} (max_nodes); a recipe has ~100"
            )

    def _check_depth(self, depth: int, mark: Any, via_alias: bool) -> None:
        if depth > self._max_depth:
            how = " once aliases are expanded" if via_alias else ""
            raise self._fail(mark, f"nesting deeper than {self._max_depth} levels{how} (max_depth)")

    # -- composition ---------------------------------------------------------------------------------------
    def compose_node(self, parent: Node | None, index: Any) -> Node:
        if self.check_event(AliasEvent):
            event = self.peek_event()
            anchor = event.anchor
            self._aliases += 1
            if self._aliases > self._max_aliases:
                raise self._fail(
                    event.start_mark,
                    f"more than {self._max_aliases} alias references (*name) (max_aliases; at *{anchor}); "
                    "a recipe needs only a few",
                )
            if anchor in self._open_anchors:
                raise self._fail(event.start_mark, f"alias *{anchor} inside its own anchor &{anchor}: recursive data")
            stats = self._anchor_stats.get(anchor)
            if stats is not None:  # an undefined alias is left to PyYAML's ComposerError
                count, height = stats
                self._add_nodes(count, event.start_mark, via_alias=True)
                self._deepest = max(self._deepest, self._depth + height)
                self._check_depth(self._depth + height, event.start_mark, via_alias=True)
            return super().compose_node(parent, index)

        event = self.peek_event()
        anchor = event.anchor
        collection = isinstance(event, (SequenceStartEvent, MappingStartEvent))
        nodes_before = self._nodes
        self._add_nodes(1, event.start_mark, via_alias=False)
        if collection:
            self._check_depth(self._depth + 1, event.start_mark, via_alias=False)
        outer_deepest = self._deepest
        if anchor is not None:
            self._open_anchors.add(anchor)
            self._deepest = self._depth  # measure this subtree's height from here
        if collection:
            self._depth += 1
            self._deepest = max(self._deepest, self._depth)
        node = super().compose_node(parent, index)
        if collection:
            self._depth -= 1
        if anchor is not None:
            self._open_anchors.discard(anchor)
            self._anchor_stats[anchor] = (self._nodes - nodes_before, self._deepest - self._depth)
            self._deepest = max(outer_deepest, self._deepest)
        return node

    # -- construction --------------------------------------------------------------------------------------
    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except SlimformerError:
            raise
        except (ValueError, OverflowError) as e:  # e.g. a 5,000-digit int, or the date 2020-02-30
            what = f" {_short(node.value)}" if isinstance(node, ScalarNode) else ""
            raise self._fail(node.start_mark, f"bad {node.tag.rsplit(':', 1)[-1]} value{what}: {e}")

    def flatten_mapping(self, node: MappingNode) -> None:
        # Check the keys written in this mapping before merge keys (``<<: *base``) are folded in: a key that
        # overrides a merged one is YAML's merge semantics, a key written twice is a mistake.
        if id(node) not in self._checked_mappings:
            self._checked_mappings.add(id(node))
            first: dict[Any, tuple[int, str]] = {}  # key -> (line, as written) of its first occurrence
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=True)
                written = key_node.value if isinstance(key_node, ScalarNode) else repr(key)
                try:
                    seen = first.get(key)
                except TypeError:  # unhashable key: PyYAML raises its own error below
                    continue
                if seen is not None:
                    line, text = seen
                    same = "" if text == written else f", written {_short(text)}"
                    raise self._fail(
                        key_node.start_mark, f"duplicate key {_short(written)} (first at line {line}{same})"
                    )
                first[key] = (_line(key_node.start_mark), written)
        super().flatten_mapping(node)

    def construct_undefined(self, node: Node) -> Any:
        raise self._fail(
            node.start_mark,
            f"tag {node.tag!r} is not allowed; expected plain YAML data "
            "(mappings, lists, strings, numbers, booleans, null, dates)",
        )


_BoundedSafeLoader.add_constructor(None, _BoundedSafeLoader.construct_undefined)


def _yaml_problem(e: yaml.YAMLError) -> str:
    if isinstance(e, yaml.reader.ReaderError) and isinstance(e.character, int):
        return f"{e.reason}: character #x{e.character:04x} at offset {e.position}"
    if isinstance(e, yaml.MarkedYAMLError) and e.problem:
        mark = e.problem_mark or e.context_mark
        line = _line(mark)
        text = e.problem
        if e.context:
            where = (
                f" at line {_line(e.context_mark)}"
                if e.context_mark is not None and _line(e.context_mark) != line
                else ""
            )
            text = f"{e.context}{where}, {text}"
        return f"line {line}: {text}" if mark is not None else text
    return str(e)


def load_yaml(
    text: str,
    source: str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_aliases: int = DEFAULT_MAX_ALIASES,
    max_nodes: int = DEFAULT_MAX_NODES,
) -> Any:
    """Parse one YAML document like ``yaml.safe_load``, with bounded work on hostile input.

    The result equals ``yaml.safe_load(text)`` for every document within the limits and without duplicate
    keys (same tags: no ``!!python/...`` or other application tags; an empty text gives ``None``). The text
    is a ``str``: callers that hold bytes decode them first (:func:`load_yaml_file` does, as strict UTF-8).

    Args:
        text: the YAML text.
        source: what the text is, for messages: a file path, or e.g. ``"recipe.yaml: override 'seed=1'"``.
        max_bytes: largest accepted size of ``text`` in UTF-8 bytes.
        max_depth: deepest accepted nesting of mappings/lists (a scalar at top level is depth 0, ``[1]`` is 1),
            counted with aliases expanded. Checked while composing, long before Python's recursion limit.
        max_aliases: most alias references (``*name``) accepted.
        max_nodes: most nodes (scalars, lists, mappings, and mapping keys) accepted in the document with
            every alias expanded: an alias counts as many nodes as its anchor stands for. This is what stops
            a "billion laughs" document, in time proportional to the text read, without expanding anything.

    Returns:
        The Python data: dicts, lists, str, int, float, bool, None, and the other ``safe_load`` types.

    Raises:
        ConfigError: a one-line message starting with ``source``, when the text is over ``max_bytes``, has
            more than ``max_aliases`` aliases, nests deeper than ``max_depth``, has more than ``max_nodes``
            nodes once expanded, has recursive aliases, repeats a key in a mapping (the key and its lines are
            named), uses a tag other than the standard ones, holds an unconvertible value (e.g. a
            5,000-digit integer or the date 2020-02-30), or is not valid YAML (``not valid YAML (line N:
            problem)``; this also covers more than one document in the text).
    """
    if len(text) > max_bytes:  # every character is at least one byte: refuse before encoding a huge text
        raise ConfigError(f"{source}: more than {max_bytes} bytes of YAML (max_bytes); a recipe is a few KB")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise ConfigError(f"{source}: {size} bytes of YAML, more than {max_bytes} (max_bytes); a recipe is a few KB")
    loader = None
    try:
        loader = _BoundedSafeLoader(text, source, max_depth=max_depth, max_aliases=max_aliases, max_nodes=max_nodes)
        return loader.get_single_data()
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML ({_yaml_problem(e)})") from None
    except RecursionError:  # only reachable with a max_depth far above the default
        raise ConfigError(f"{source}: nesting too deep for Python (lower max_depth={max_depth})") from None
    finally:
        if loader is not None:
            loader.dispose()


def load_yaml_file(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_aliases: int = DEFAULT_MAX_ALIASES,
    max_nodes: int = DEFAULT_MAX_NODES,
) -> Any:
    """Read a UTF-8 YAML file and parse it with :func:`load_yaml` (``source`` is the path).

    The size is checked with ``stat`` before reading, and at most ``max_bytes + 1`` bytes are ever read
    (a file that grows meanwhile, or a pipe, cannot make it read more).

    Args:
        path: the YAML file.
        max_bytes, max_depth, max_aliases, max_nodes: the limits of :func:`load_yaml`.

    Returns:
        The Python data, as :func:`load_yaml`.

    Raises:
        ConfigError: ``<path>: file not found``; the path is a directory or cannot be read; the file is over
            ``max_bytes``; it is not UTF-8 (the byte offset is named); or any error of :func:`load_yaml`.
    """
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise ConfigError(f"{p}: file not found") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read ({e.strerror or e})") from None
    if p.is_dir():
        raise ConfigError(f"{p}: is a directory, expected a YAML file")
    too_big = f"{p}: file is larger than {max_bytes} bytes (max_bytes); a recipe is a few KB"
    if st.st_size > max_bytes:
        raise ConfigError(too_big)
    try:
        with p.open("rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise ConfigError(f"{p}: cannot read ({e.strerror or e})") from None
    if len(data) > max_bytes:
        raise ConfigError(too_big)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})") from None
    return load_yaml(
        text, str(p), max_bytes=max_bytes, max_depth=max_depth, max_aliases=max_aliases, max_nodes=max_nodes
    )
