"""The Kafka commit points (``noa.queues.offsets``): whatever order the acknowledgements come
in, a commit covers only an acknowledged prefix of what was handed out, never passes an
unacknowledged offset, and covers everything once everything is acknowledged."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from noa.queues.offsets import OffsetTracker


@st.composite
def handed_and_acks(draw: st.DrawFn) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Offsets handed out on two partitions (ascending, with gaps) and some of them acked, in
    any order."""
    handed: list[tuple[int, int]] = []
    for partition in (0, 1):
        offset = draw(st.integers(0, 1000))
        for gap in draw(st.lists(st.integers(1, 3), max_size=20)):
            handed.append((partition, offset))
            offset += gap
    acks = draw(st.permutations(handed))
    return handed, acks[: draw(st.integers(0, len(acks)))]


def check(
    tracker: OffsetTracker[int],
    handed: list[tuple[int, int]],
    acked: set[tuple[int, int]],
    committed: dict[int, int],
) -> None:
    for partition, point in committed.items():
        mine = [o for p, o in handed if p == partition]
        # everything before the point was acknowledged...
        assert all((partition, o) in acked for o in mine if o < point)
        # ...and the point is the first offset not acknowledged (or one past the last)
        waiting = [o for o in mine if (partition, o) not in acked]
        assert point == (min(waiting) if waiting else max(mine) + 1)


@given(handed_and_acks())
def test_commits_only_an_acknowledged_prefix(
    case: tuple[list[tuple[int, int]], list[tuple[int, int]]],
) -> None:
    handed, acks = case
    tracker: OffsetTracker[int] = OffsetTracker()
    for partition, offset in handed:
        tracker.handed(partition, offset)
    first = {p: min(o for q, o in handed if q == p) for p, _ in handed}
    committed = dict(first)
    acked: set[tuple[int, int]] = set()
    for partition, offset in acks:
        assert tracker.ack(partition, offset)
        assert not tracker.ack(partition, offset)  # twice: nothing more
        acked.add((partition, offset))
        points = tracker.commit_points()
        for p, point in points.items():
            assert point > committed[p]  # only advances
            tracker.committed(p, point)
            committed[p] = point
        check(tracker, handed, acked, committed)
        assert tracker.commit_points() == {}
    assert tracker.in_flight() == len(handed) - len(acked)
    if len(acked) == len(handed):  # everything acknowledged: everything committed
        for p in first:
            assert committed[p] == max(o for q, o in handed if q == p) + 1


@given(st.lists(st.booleans(), min_size=1, max_size=30))
def test_never_past_an_unacknowledged_offset(acked: list[bool]) -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    for offset in range(len(acked)):
        tracker.handed("p", offset)
    for offset, done in reversed(list(enumerate(acked))):
        if done:
            tracker.ack("p", offset)
    point = tracker.commit_point("p")
    first_waiting = next((o for o, done in enumerate(acked) if not done), len(acked))
    assert point == (first_waiting if first_waiting > 0 else None)


def test_partitions_are_independent_and_forgotten() -> None:
    tracker: OffsetTracker[int] = OffsetTracker()
    for offset in (5, 6, 7):
        tracker.handed(0, offset)
        tracker.handed(1, offset)
    tracker.ack(0, 6)
    tracker.ack(1, 5)
    assert tracker.commit_points() == {1: 6}
    tracker.committed(1, 6)
    tracker.ack(0, 5)
    assert tracker.commit_points() == {0: 7}
    tracker.forget([0])
    assert not tracker.ack(0, 7)  # revoked: acknowledgements ignored
    assert tracker.commit_point(0) is None
    assert tracker.in_flight() == 2  # partition 1's 6 and 7
    with pytest.raises(ValueError):
        tracker.handed(1, 6)  # offsets of a partition only ascend
