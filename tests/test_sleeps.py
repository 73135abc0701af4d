"""Tests wait for events or poll with a deadline; a sleep must say why it is not waiting for state.

Enforces the `# deliberate: reason` marker: every `asyncio.sleep(` or `time.sleep(` in a test
module carries it on the same line. Action code in test packs (folders named `*packs`) is exempt:
sleeping is what those actions are for.
"""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
SLEEP = re.compile(r"\b(?:asyncio|time)\.sleep\(")
MARKER = "# deliberate:"


def test_every_sleep_in_tests_is_marked_with_a_reason() -> None:
    unmarked = []
    for path in sorted(TESTS.rglob("*.py")):
        if any(part.endswith("packs") for part in path.relative_to(TESTS).parts[:-1]):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if SLEEP.search(code) and MARKER not in line:
                unmarked.append(f"{path.relative_to(TESTS.parent)}:{number}: {line.strip()}")
    assert not unmarked, "sleeps without a `# deliberate: reason` marker:\n" + "\n".join(unmarked)


def test_the_scan_sees_an_unmarked_sleep() -> None:
    # The scan must not pass vacuously: the pattern matches both spellings and skips comments.
    sleep = ".sleep("
    assert SLEEP.search(f"    await asyncio{sleep}0.1)")
    assert SLEEP.search(f"time{sleep}1)")
    assert not SLEEP.search(f"x = 1  # asyncio{sleep} in a comment".split("#", 1)[0])
