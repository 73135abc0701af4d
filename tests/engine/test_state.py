"""Execution records: the time format documents use."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from attune_actors.engine.state import iso


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_iso_matches_datetime_to_the_millisecond(ts: float) -> None:
    expected = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert iso(ts) == expected


def test_iso_rounds_like_datetime_at_second_boundaries() -> None:
    for ts in (0.0, 1.0005, 1795753543.9999996, 1795753543.9999995, 1e9 + 0.9999995):
        expected = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        assert iso(ts) == expected
    assert iso(None) is None
