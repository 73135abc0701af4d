"""YAML reading that remembers where every key and value came from.

PyYAML's composer knows each node's line and column; the plain loaders throw that away. Here mappings
become `YMap` (a dict that also knows its own location and each key's) and sequences `YList`, so the
loader and validator can point at `FILE:LINE:COLUMN` for anything they reject.
"""

from __future__ import annotations

from typing import Any

import yaml

from attune_actors.errors import AttuneError, Location


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


class _Loader(yaml.SafeLoader):
    file_name = "<string>"
    problems: list[AttuneError]


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> YMap:
    loader.flatten_mapping(node)
    result = YMap()
    result.location = _mark(loader.file_name, node.start_mark)
    result.key_locations = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        where = _mark(loader.file_name, key_node.start_mark)
        if isinstance(key, (dict, list)):
            loader.problems.append(AttuneError("a mapping key must be a scalar", location=where))
            continue
        if not isinstance(key, str):
            key = str(key).lower() if isinstance(key, bool) else str(key)
        if key in result:
            loader.problems.append(AttuneError(f"duplicate key '{key}'", location=where))
            continue
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_locations[key] = where
    return result


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> YList:
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


def load_yaml(text: str, file: str) -> tuple[Any, list[AttuneError]]:
    """Parse one YAML document; returns (value, problems). Never raises for bad input.

    YAML syntax errors, duplicate keys and non-scalar keys come back as located problems; the value is
    None when the document could not be parsed at all.
    """
    loader = _Loader(text)
    loader.file_name = file
    loader.problems = []
    try:
        value = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = _mark(file, mark) if mark is not None else Location(file)
        problem = exc.problem or exc.context or "invalid YAML"
        return None, [AttuneError(f"invalid YAML: {problem}", location=where)]
    except yaml.YAMLError as exc:
        return None, [AttuneError(f"invalid YAML: {exc}", location=Location(file))]
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        # Scalars PyYAML cannot build (dates out of range, huge exponents) and alias bombs.
        return None, [AttuneError(f"invalid YAML: {exc}", location=Location(file))]
    finally:
        loader.dispose()
    return value, loader.problems


def plain(value: Any) -> Any:
    """A copy of `value` with YMap/YList turned into plain dict/list (for storage and JSON)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
