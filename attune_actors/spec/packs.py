"""Pack directories -> a `Catalog` of packs and actions (workflows included).

A path given to the loader is either a pack (a folder with `pack.yaml`) or a folder of packs. The
built-in `core` pack ships inside the package and is always loaded. Loading never stops at the first
problem: the catalog holds everything that loaded, and the problems list says what did not.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attune_actors.errors import AttuneError, Location, NotFoundError
from attune_actors.spec.model import BUILTIN_RUNNERS, ActionSpec, PackSpec, WorkflowSpec
from attune_actors.spec.params import parse_params
from attune_actors.spec.rules import parse_rule, parse_sensor
from attune_actors.spec.suggest import closest, unknown_key
from attune_actors.spec.workflow import parse_workflow
from attune_actors.spec.yamlsrc import YamlLimits, YMap, load_yaml, plain, too_big

CORE_PACK_PATH = Path(__file__).resolve().parent.parent / "packs" / "core"
PACK_KEYS = (
    "ref",
    "name",
    "label",
    "description",
    "version",
    "author",
    "email",
    "config_schema",
    "keywords",
    "dependencies",
)
ACTION_KEYS = (
    "name",
    "description",
    "runner_type",
    "entry_point",
    "parameters",
    "timeout",
    "additional_parameters",
    "enabled",
)


@dataclass
class Catalog:
    """Every loaded pack and action, by ref. Workflows put at run time are added here too."""

    packs: dict[str, PackSpec] = field(default_factory=dict)
    actions: dict[str, ActionSpec] = field(default_factory=dict)

    def action(self, ref: str) -> ActionSpec:
        """The action called `ref`; NotFoundError names the closest known ref."""
        found = self.actions.get(ref)
        if found is None:
            guess = closest(ref, self.actions)
            hint = f" (did you mean '{guess}'?)" if guess else ""
            raise NotFoundError(f"unknown action or workflow '{ref}'{hint}")
        return found

    def workflows(self, pack: str | None = None) -> list[ActionSpec]:
        return sorted(
            (a for a in self.actions.values() if a.is_workflow and (pack is None or a.pack == pack)),
            key=lambda a: a.ref,
        )

    def put(self, action: ActionSpec) -> None:
        self.actions[action.ref] = action

    def remove(self, ref: str) -> None:
        self.actions.pop(ref, None)


def pack_dirs(paths: Iterable[str | Path]) -> tuple[list[Path], list[AttuneError]]:
    """Expand each path to the pack folders it names (itself, or its sub-folders with pack.yaml)."""
    found: list[Path] = []
    problems: list[AttuneError] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            problems.append(AttuneError("no such pack folder", location=Location(str(path))))
        elif (path / "pack.yaml").is_file():
            found.append(path)
        else:
            subs = sorted(p for p in path.iterdir() if (p / "pack.yaml").is_file())
            if not subs:
                problems.append(
                    AttuneError(
                        "no pack here (no pack.yaml in it or its sub-folders)",
                        location=Location(str(path)),
                    )
                )
            found.extend(subs)
    return found, problems


def load_packs(
    paths: Iterable[str | Path], *, include_core: bool = True
) -> tuple[Catalog, list[AttuneError]]:
    """Load packs from `paths` (plus `core`); returns the catalog and every problem found."""
    dirs, problems = pack_dirs(paths)
    if include_core:
        dirs.insert(0, CORE_PACK_PATH)
    catalog = Catalog()
    seen: dict[str, Path] = {}
    for d in dirs:
        resolved = d.resolve()
        if resolved in seen.values():
            continue  # the same pack named twice (e.g. packs/core is a link to the built-in one)
        pack, pack_problems = load_pack(d)
        problems.extend(pack_problems)
        if pack is None:
            continue
        if pack.ref in catalog.packs:
            problems.append(
                AttuneError(
                    f"duplicate pack '{pack.ref}' (also at {seen[pack.ref]})",
                    location=pack.location or Location(str(d / "pack.yaml"), 1, 1),
                )
            )
            continue
        seen[pack.ref] = resolved
        catalog.packs[pack.ref] = pack
        catalog.actions.update(pack.actions)
    return catalog, problems


def read_yaml_text(path: Path, problems: list[AttuneError]) -> str | None:
    """A YAML file's text; None (and a problem) if it cannot be read or is over limits.yaml_bytes."""
    try:
        refused = too_big(path.stat().st_size, str(path))  # before reading a 1 GB file whole
        if refused is not None:
            problems.append(refused)
            return None
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(AttuneError(f"cannot read: {exc}", location=Location(str(path), 1, 1)))
        return None


def _read(path: Path, problems: list[AttuneError]) -> Any:
    text = read_yaml_text(path, problems)
    if text is None:
        return None
    value, found = load_yaml(text, str(path))
    problems.extend(found)
    return value


def load_pack(path: Path) -> tuple[PackSpec | None, list[AttuneError]]:
    """Load one pack folder."""
    problems: list[AttuneError] = []
    meta_file = path / "pack.yaml"
    meta = _read(meta_file, problems)
    if not isinstance(meta, dict):
        if not problems:
            problems.append(
                AttuneError("pack.yaml must be a mapping", location=Location(str(meta_file), 1, 1))
            )
        return None, problems
    top = Location(str(meta_file), 1, 1)
    for key in meta:
        if key not in PACK_KEYS:
            problems.append(
                AttuneError(unknown_key(key, PACK_KEYS, "pack.yaml"), location=_at(meta, key, top))
            )
    ref = meta.get("ref") or meta.get("name") or path.name
    if not isinstance(ref, str) or not ref.replace("_", "").replace("-", "").isalnum():
        problems.append(AttuneError(f"pack ref {ref!r} must be a name", location=_at(meta, "ref", top)))
        return None, problems
    schema = meta.get("config_schema")
    if schema is not None and not isinstance(schema, dict):
        problems.append(
            AttuneError(
                "'config_schema' must be a JSON Schema mapping",
                location=_at(meta, "config_schema", top),
            )
        )
        schema = None
    config = _load_config(path, plain(schema) if schema else None, problems, _at(meta, "config_schema", top))

    actions: dict[str, ActionSpec] = {}
    for file in sorted((path / "actions").glob("*.yaml")):
        action = _load_action(file, ref, path, problems)
        if action is None:
            continue
        if action.ref in actions:
            problems.append(
                AttuneError(
                    f"duplicate action '{action.ref}' (also defined in {_file_of(actions[action.ref])})",
                    location=action.location,
                )
            )
            continue
        actions[action.ref] = action
    for file in sorted((path / "workflows").glob("*.yaml")):
        workflow = load_workflow_file(file, ref, problems)
        if workflow is None:
            continue
        if workflow.ref in actions:
            other = actions[workflow.ref]
            kind = "workflow" if other.is_workflow else "action"
            problems.append(
                AttuneError(
                    f"duplicate ref '{workflow.ref}': already the {kind} in {_file_of(other)}",
                    location=workflow.locations.get("ref", Location(str(file), 1, 1)),
                )
            )
            continue
        actions[workflow.ref] = workflow_action(workflow, path)
    rules = tuple(
        parse_rule(_read(f, problems), str(f), ref, problems) for f in sorted((path / "rules").glob("*.yaml"))
    )
    sensors = tuple(
        parse_sensor(_read(f, problems), str(f), ref, str(path), problems)
        for f in sorted((path / "sensors").glob("*.yaml"))
    )
    return PackSpec(
        ref=ref,
        path=str(path),
        location=_at(meta, "ref", top),
        label=str(meta.get("label") or ""),
        description=str(meta.get("description") or ""),
        version=str(meta.get("version") or ""),
        config=config,
        config_schema=plain(schema) if schema else None,
        actions=actions,
        rules=tuple(r for r in rules if r is not None),
        sensors=tuple(s for s in sensors if s is not None),
    ), problems


def _file_of(action: ActionSpec) -> str:
    return action.location.file if action.location is not None else action.ref


def _load_config(
    path: Path, schema: dict[str, Any] | None, problems: list[AttuneError], schema_at: Location
) -> dict[str, Any]:
    file = path / "config.yaml"
    config: dict[str, Any] = {}
    raw: Any = None
    top = Location(str(file if file.is_file() else path / "pack.yaml"), 1, 1)
    if file.is_file():
        raw = _read(file, problems)
        if raw is not None and not isinstance(raw, dict):
            problems.append(AttuneError("config.yaml must be a mapping", location=top))
        elif raw is not None:
            config = plain(raw)
    if schema is None:
        return config
    # Defaults declared in the schema fill what config.yaml leaves out.
    properties = schema.get("properties")
    for key, prop in (properties if isinstance(properties, dict) else {}).items():
        if isinstance(prop, dict) and "default" in prop and key not in config:
            config[key] = prop["default"]
    import jsonschema  # imported here: ~50 ms at start-up, needed only for a config schema

    try:
        validator_cls = jsonschema.validators.validator_for(schema)
        validator_cls.check_schema(schema)
        errors = sorted(validator_cls(schema).iter_errors(config), key=lambda e: [str(p) for p in e.path])
        for err in errors:
            where = "/".join(str(p) for p in err.path) or "(root)"
            at = top
            if err.path and isinstance(raw, YMap):
                at = raw.loc(str(err.path[0]))
            elif err.validator == "additionalProperties" and isinstance(raw, YMap):
                # Point at the first key the schema does not allow.
                known = properties if isinstance(properties, dict) else {}
                extra = next((k for k in raw if k not in known), None)
                at = raw.loc(extra) if extra is not None else top
            problems.append(AttuneError(f"pack config {where}: {err.message}", location=at))
    except jsonschema.SchemaError as exc:
        problems.append(AttuneError(f"invalid config_schema: {exc.message}", location=schema_at))
    return config


def _load_action(file: Path, pack: str, pack_path: Path, problems: list[AttuneError]) -> ActionSpec | None:
    data = _read(file, problems)
    top = Location(str(file), 1, 1)
    if not isinstance(data, dict):
        if data is not None or not problems:
            problems.append(AttuneError("action metadata must be a mapping", location=top))
        return None
    for key in data:
        if key not in ACTION_KEYS:
            problems.append(
                AttuneError(unknown_key(key, ACTION_KEYS, "action"), location=_at(data, key, top))
            )
    name = data.get("name", file.stem)
    if not isinstance(name, str) or not name.isidentifier():
        problems.append(
            AttuneError(f"action name {name!r} must be an identifier", location=_at(data, "name", top))
        )
        return None
    runner = data.get("runner_type")
    if runner not in BUILTIN_RUNNERS or runner == "workflow":
        valid = tuple(r for r in BUILTIN_RUNNERS if r != "workflow")
        problems.append(
            AttuneError(
                f"action '{pack}.{name}': unknown runner_type {runner!r} (one of {', '.join(valid)})",
                location=_at(data, "runner_type", top),
            )
        )
        return None
    entry = data.get("entry_point")
    if runner == "python":
        if not isinstance(entry, str) or not entry:
            problems.append(
                AttuneError(f"action '{pack}.{name}': python actions need 'entry_point'", location=top)
            )
        else:
            problems.extend(
                _check_entry_point(pack_path, entry, f"{pack}.{name}", _at(data, "entry_point", top))
            )
    timeout = data.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0
    ):
        problems.append(
            AttuneError(
                f"action '{pack}.{name}': 'timeout' must be a number of seconds",
                location=_at(data, "timeout", top),
            )
        )
        timeout = None
    return ActionSpec(
        ref=f"{pack}.{name}",
        pack=pack,
        name=name,
        runner_type=runner,
        entry_point=entry if isinstance(entry, str) else None,
        parameters=parse_params(data.get("parameters"), _at(data, "parameters", top), problems),
        additional_parameters=data.get("additional_parameters") is True,
        timeout=timeout,
        description=str(data.get("description") or ""),
        pack_path=str(pack_path),
        location=top,
    )


def _check_entry_point(pack_path: Path, entry: str, ref: str, where: Location) -> list[AttuneError]:
    """A python entry point: a file inside `actions/` that parses and binds `run` at module level.

    The file is parsed, never imported: validation runs no user code.
    """
    actions = pack_path / "actions"
    file = actions / entry
    try:
        inside = file.resolve().is_relative_to(actions.resolve())
    except (OSError, ValueError):
        inside = False
    if not inside:
        return [AttuneError(f"action '{ref}': entry point '{entry}' is outside {actions}", location=where)]
    if not file.is_file():
        return [AttuneError(f"action '{ref}': entry point '{entry}' not found in {actions}", location=where)]
    try:
        tree = ast.parse(file.read_bytes(), filename=str(file))
    except SyntaxError as exc:
        at = Location(str(file), exc.lineno or 1, exc.offset or 1)
        return [AttuneError(f"action '{ref}': syntax error in entry point: {exc.msg}", location=at)]
    except (OSError, ValueError) as exc:
        return [
            AttuneError(f"action '{ref}': cannot read entry point: {exc}", location=Location(str(file), 1, 1))
        ]
    if "run" not in _module_names(tree):
        return [
            AttuneError(f"action '{ref}': entry point '{entry}' defines no function 'run'", location=where)
        ]
    return []


def _module_names(tree: ast.Module) -> set[str]:
    """Names a module binds at its top level (also inside top-level if/try blocks)."""
    names: set[str] = set()
    stack: list[ast.stmt] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            for field in ("body", "orelse", "finalbody", "handlers"):
                for child in getattr(node, field, []):
                    stack.extend(child.body if isinstance(child, ast.ExceptHandler) else [child])
    return names


def load_workflow_file(file: Path, pack: str, problems: list[AttuneError]) -> WorkflowSpec | None:
    text = read_yaml_text(file, problems)
    if text is None:
        return None
    return load_workflow_text(
        text, pack=pack, file=str(file), default_ref=f"{pack}.{file.stem}", problems=problems
    )


def load_workflow_text(
    text: str,
    *,
    pack: str,
    file: str,
    default_ref: str,
    problems: list[AttuneError],
    limits: YamlLimits | None = None,
) -> WorkflowSpec | None:
    data, found = load_yaml(text, file, limits)
    problems.extend(found)
    if data is None and found:
        return None
    spec, found = parse_workflow(data, file=file, pack=pack, default_ref=default_ref, source=text)
    problems.extend(found)
    return spec


def workflow_action(spec: WorkflowSpec, pack_path: Path | str) -> ActionSpec:
    """The action face of a workflow: `<pack>.<name>`, its parameters, runner 'workflow'."""
    return ActionSpec(
        ref=spec.ref,
        pack=spec.pack,
        name=spec.ref.split(".", 1)[1],
        runner_type="workflow",
        parameters=spec.parameters,
        timeout=spec.timeout,
        description=spec.description,
        pack_path=str(pack_path),
        workflow=spec,
        location=Location(spec.file, 1, 1),
    )


def _at(data: Any, key: str, fallback: Location) -> Location:
    return data.loc(key) if isinstance(data, YMap) and key in data else fallback
