"""Lets StackStorm's Orquesta 1.2.0 (its last release) import and run on Python 3.11.

    from bench.peers import orquesta_shim
    orquesta_shim.install()          # before the first `import orquesta`
    from orquesta import conducting

Orquesta itself needs no change; three things around it do, all patched at import time, in this
process only, and nothing in attune_actors sees them:

1. networkx 1.11 (orquesta pins networkx<2) does `from fractions import gcd`, removed in Python
   3.9: `fractions.gcd` is set to `math.gcd` (same result for the integers networkx passes).
2. `collections.Mapping`, `collections.MutableSequence`, ... (aliases of `collections.abc` removed
   in Python 3.10) are used by orquesta (`SequenceSpec(Spec, collections.MutableSequence)`, the
   `item()` function) and by networkx 1.11: the aliases are put back on `collections`.
3. `orquesta.utils.parameters` builds its inline-parameter regex (`action: core.echo message=...`)
   from alternatives two of which start with a global `(?i)` flag; joined into one pattern the flag
   ends up mid-pattern, which Python 3.11 rejects (`re.error: global flags not at the start of the
   expression`). The two alternatives are rewritten with the scoped form `(?i:...)`, which matches
   the same strings, and the joined pattern is rebuilt.

Orquesta 1.2.0 also pins jsonschema<3; it is installed with `pip install --no-deps` next to
jsonschema 4 (attune_actors needs >= 4.26). Orquesta only uses `jsonschema.Draft4Validator`, which
jsonschema 4 still provides. `python -m bench.peers.orquesta_shim` runs Orquesta's own unit tests
under the shim (docs/perf/peers.md has the outcome). Its `eventlet` requirement is never imported
by the conductor and is not installed.
"""

from __future__ import annotations

import collections
import collections.abc
import fractions
import math
import os
import sys
from importlib.metadata import version

_ABC_ALIASES = (
    "Callable",
    "Container",
    "Hashable",
    "ItemsView",
    "Iterable",
    "Iterator",
    "KeysView",
    "Mapping",
    "MappingView",
    "MutableMapping",
    "MutableSequence",
    "MutableSet",
    "Sequence",
    "Set",
    "Sized",
    "ValuesView",
)

_installed = False


def install() -> None:
    """Apply the three patches (idempotent), then import orquesta's patched module once."""
    global _installed
    if _installed:
        return
    if not hasattr(fractions, "gcd"):
        fractions.gcd = math.gcd  # type: ignore[attr-defined]
    for name in _ABC_ALIASES:
        if not hasattr(collections, name):
            setattr(collections, name, getattr(collections.abc, name))
    from orquesta.utils import parameters

    variations = [
        {r"(?i)true": r"(?i:true)", r"(?i)false": r"(?i:false)"}.get(v, v)
        for v in parameters.REGEX_INLINE_PARAM_VARIATIONS
    ]
    parameters.REGEX_TRUE = r"(?i:true)"
    parameters.REGEX_FALSE = r"(?i:false)"
    parameters.REGEX_INLINE_PARAM_VARIATIONS = variations
    parameters.REGEX_INLINE_PARAMS = r"([\w]+)=(%s)" % "|".join(variations)  # noqa: UP031 - as orquesta
    _installed = True


def selftest() -> int:
    """Run Orquesta's own unit tests (shipped in its wheel) under this shim; print a summary.

    The wheel leaves out the YAML fixtures some tests load: those tests error with
    FileNotFoundError and are counted apart. Returns the number of other failures and errors."""
    import unittest
    from pathlib import Path

    import orquesta

    install()
    top = Path(orquesta.__file__).resolve().parent.parent
    suite = unittest.defaultTestLoader.discover("orquesta.tests.unit", top_level_dir=str(top))
    result = unittest.TextTestRunner(stream=open(os.devnull, "w"), verbosity=0).run(suite)  # noqa: SIM115
    missing = [t for t, tb in result.errors if "FileNotFoundError" in tb and "fixtures" in tb]
    other = [(t, tb) for t, tb in (*result.errors, *result.failures) if t not in missing]
    passed = result.testsRun - len(result.errors) - len(result.failures)
    print(
        f"orquesta {version('orquesta')} unit tests under the shim (Python {sys.version.split()[0]}): "
        f"{result.testsRun} run, {passed} passed, {len(missing)} need fixture files the wheel does not "
        f"ship, {len(other)} other failures"
    )
    for test, tb in other:
        lines = tb.strip().splitlines()
        last = next((ln for ln in lines if ln and not ln[0].isspace() and "Error" in ln), lines[-1])
        print(f"  {test.id()}: {last[:160]}")
    return len(other)


if __name__ == "__main__":
    sys.exit(1 if selftest() else 0)
