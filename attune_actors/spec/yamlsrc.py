"""YAML reading that remembers where every key and value came from.

PyYAML's composer knows each node's line and column; the plain loaders throw that away. Here mappings
become `YMap` (a dict that also knows its own location and each key's) and sequences `YList`, so the
loader and validator can point at `FILE:LINE:COLUMN` for anything they reject.

Limits (SPEC 12): a document longer than `YamlLimits.max_bytes` is refused before it is parsed, and
one that holds more than `max_values` values once its aliases are expanded is refused after composing
(which shares aliased nodes, so it is cheap) and before anything walks it: a 463-byte alias bomb
would otherwise expand to billions of values in every later walk (locations, validation, storage).
The limits in force are the `limits` argument, else those set with `use_yaml_limits` (the engine
sets `limits.yaml_bytes` / `limits.yaml_values` while it loads packs), else the defaults.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from attune_actors.errors import AttuneError, Location


@dataclass(frozen=True)
class YamlLimits:
    """How big one YAML document may be: its text, and its values once aliases are expanded."""

    max_bytes: int = 1024 * 1024
    max_values: int = 100_000


_DEFAULTS = YamlLimits()
_LIMITS = contextvars.ContextVar("yaml_limits", default=_DEFAULTS)


@contextlib.contextmanager
def use_yaml_limits(limits: YamlLimits) -> Iterator[None]:
    """Within the block (this thread or task), `load_yaml` without `limits=` applies `limits`."""
    token = _LIMITS.set(limits)
    try:
        yield
    finally:
        _LIMITS.reset(token)


def too_big(size: int, file: str, limits: YamlLimits | None = None) -> AttuneError | None:
    """The error for a YAML document of `size` bytes over `max_bytes`, or None if it is within."""
    limit = (limits or _LIMITS.get()).max_bytes
    if size <= limit:
        return None
    return AttuneError(
        f"the YAML document is {size} bytes, which exceeds limits.yaml_bytes ({limit})",
        location=Location(file, 1, 1),
    )


class YMap(dict[str, Any]):
    """A mapping from YAML with the location of itself and of each key."""

    location: Location
    key_locations: dict[Any, Location]

    def loc(self, key: Any = None) -> Location:
        """Where `key` was written, or the mapping itself when the key is absent."""
        if key is None:
            return self.location
        return self.key_locations.get(key, self.location)


class YList(list[Any]):
    """A sequence from YAML with the location of itself and of each item."""

    location: Location
    item_locations: list[Location]

    def loc(self, index: int | None = None) -> Location:
        if index is None or index >= len(self.item_locations):
            return self.location
        return self.item_locations[index]


def location_of(value: Any, default: Location) -> Location:
    """The location a YMap/YList carries, or `default` for scalars."""
    loc = getattr(value, "location", None)
    return loc if isinstance(loc, Location) else default


def _mark(file: str, mark: Any) -> Location:
    return Location(file, mark.line + 1, mark.column + 1)


_MERGE_TAG = "tag:yaml.org,2002:merge"
_VALUE_TAG = "tag:yaml.org,2002:value"


class _Loader(yaml.SafeLoader):
    file_name = "<string>"
    problems: list[AttuneError]

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        # PyYAML's scalar constructors fail with plain exceptions on values their tag refuses
        # (`!!bool maybe`, `!!int 0x`): turn them into located YAML errors.
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError) as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot build a {node.tag} value: {exc}", node.start_mark
            ) from None


def _construct_map(loader: _Loader, node: yaml.Node) -> YMap | None:
    where = _mark(loader.file_name, node.start_mark)
    if not isinstance(node, yaml.MappingNode):
        loader.problems.append(AttuneError(f"expected a mapping for tag {node.tag}", location=where))
        return None
    result = YMap()
    result.location = where
    result.key_locations = {}
    own: set[str] = set()  # keys written in this mapping (they override merged ones)
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE_TAG:
            _merge_into(loader, result, own, value_node)
            continue
        if key_node.tag == _VALUE_TAG:
            key_node.tag = "tag:yaml.org,2002:str"
        key = loader.construct_object(key_node, deep=True)
        where = _mark(loader.file_name, key_node.start_mark)
        if isinstance(key, (dict, list)):
            loader.problems.append(AttuneError("a mapping key must be a scalar", location=where))
            continue
        key = _key_text(key)
        if key in own:
            loader.problems.append(AttuneError(f"duplicate key '{key}'", location=where))
            continue
        own.add(key)
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_locations[key] = where
    return result


def _key_text(key: Any) -> str:
    """Mapping keys are strings, as in JSON: `true`, `null` and `1` keep the text YAML would print."""
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return str(key).lower()
    if key is None:
        return "null"
    return str(key)


def _merge_into(loader: _Loader, result: YMap, own: set[str], value_node: yaml.Node) -> None:
    """`<<: *anchor` or `<<: [*a, *b]`: keys of the merged mappings, earlier ones winning."""
    sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
    for source in reversed(sources):
        if not isinstance(source, yaml.MappingNode):
            loader.problems.append(
                AttuneError(
                    "a merge key (<<) needs a mapping or a list of mappings",
                    location=_mark(loader.file_name, source.start_mark),
                )
            )
            continue
        merged = loader.construct_object(source, deep=True)
        if not isinstance(merged, YMap):
            continue
        for key, value in merged.items():
            if key not in own:
                result[key] = value
                result.key_locations[key] = merged.loc(key)


def _construct_seq(loader: _Loader, node: yaml.Node) -> YList | None:
    if not isinstance(node, yaml.SequenceNode):
        loader.problems.append(
            AttuneError(
                f"expected a sequence for tag {node.tag}",
                location=_mark(loader.file_name, node.start_mark),
            )
        )
        return None
    result = YList()
    result.location = _mark(loader.file_name, node.start_mark)
    result.item_locations = []
    for child in node.value:
        result.append(loader.construct_object(child, deep=True))
        result.item_locations.append(_mark(loader.file_name, child.start_mark))
    return result


def _construct_text(loader: _Loader, node: yaml.ScalarNode) -> str:
    # Dates and timestamps stay the strings the user wrote: workflow values are JSON values.
    return str(loader.construct_scalar(node))


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _construct_text)
_Loader.add_constructor("tag:yaml.org,2002:binary", _construct_text)


def _construct_unsupported(loader: _Loader, node: yaml.Node) -> None:
    # !!set, !!omap and !!pairs build Python-only shapes; a workflow holds JSON values only.
    loader.problems.append(
        AttuneError(f"unsupported YAML tag {node.tag}", location=_mark(loader.file_name, node.start_mark))
    )


for _tag in ("set", "omap", "pairs"):
    _Loader.add_constructor(f"tag:yaml.org,2002:{_tag}", _construct_unsupported)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_seq)


def load_yaml(text: str, file: str, limits: YamlLimits | None = None) -> tuple[Any, list[AttuneError]]:
    """Parse one YAML document; returns (value, problems). Never raises for bad input.

    YAML syntax errors, duplicate keys and non-scalar keys come back as located problems; the value is
    None when the document could not be parsed at all, or is over the limits (see the module doc).
    """
    limits = limits or _LIMITS.get()
    # A character is at most 4 bytes in UTF-8: short texts need no encoding to be counted.
    size = len(text) if len(text) * 4 <= limits.max_bytes else len(text.encode("utf-8", "surrogatepass"))
    refused = too_big(size, file, limits)
    if refused is not None:
        return None, [refused]
    try:
        loader = _Loader(text)  # the reader refuses control characters right here
    except yaml.YAMLError as exc:
        return None, [_yaml_problem(exc, file, text)]
    loader.file_name = file
    loader.problems = []
    try:
        node = loader.get_single_node()
        if node is None:
            return None, []
        if _expanded_size(node, limits.max_values) > limits.max_values:
            return None, [
                AttuneError(
                    "the YAML document's aliases expand it to more than "
                    f"{limits.max_values} values, which exceeds limits.yaml_values ({limits.max_values})",
                    location=_mark(file, node.start_mark),
                )
            ]
        value = loader.construct_document(node)
    except yaml.YAMLError as exc:
        return None, [_yaml_problem(exc, file, text)]
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        # Scalars PyYAML cannot build and documents nested too deeply to compose.
        return None, [AttuneError(f"invalid YAML: {exc}", location=Location(file, 1, 1))]
    finally:
        loader.dispose()
    return value, loader.problems


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """How many values `root` holds with every alias expanded (counting stops above `limit`).

    Composed nodes share what an alias names, so each distinct node is visited once (iteratively:
    nesting depth is not bounded here) and its size is the sum of its children's.
    """
    sizes: dict[int, int] = {}
    busy: set[int] = set()  # on the current path: an alias to one of these makes a cycle
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            children = []
        if not children_done:
            if id(node) in sizes:
                continue
            busy.add(id(node))
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes and id(c) not in busy)
            continue
        busy.discard(id(node))
        # A recursive alias counts once here; constructing it reports the cycle.
        total = 1 + sum(sizes.get(id(c), 1) for c in children)
        sizes[id(node)] = min(total, limit + 1)
        if id(node) == id(root):
            break
    return sizes.get(id(root), 1)


def _yaml_problem(exc: yaml.YAMLError, file: str, text: str) -> AttuneError:
    """A PyYAML error as one located line."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = _mark(file, mark) if mark is not None else Location(file, 1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        return AttuneError(f"invalid YAML: {problem}", location=where)
    if isinstance(exc, yaml.reader.ReaderError):
        before = text[: max(exc.position, 0)]
        line = before.count("\n") + 1
        column = exc.position - (before.rfind("\n") + 1) + 1
        return AttuneError(
            f"invalid YAML: unacceptable character #x{exc.character:04x}"
            if isinstance(exc.character, int)
            else f"invalid YAML: {exc.reason}",
            location=Location(file, line, column),
        )
    return AttuneError(f"invalid YAML: {exc}", location=Location(file, 1, 1))


def plain(value: Any) -> Any:
    """A copy of `value` with YMap/YList turned into plain dict/list (for storage and JSON)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
