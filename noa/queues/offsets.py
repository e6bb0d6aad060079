"""Which Kafka offsets may be committed: per partition, the offsets handed out and the ones
acknowledged, and the commit point that skips nothing.

Kafka remembers one committed offset per partition and consumer group: "everything before
this is done". Jobs finish (and are acknowledged) in any order, so the commit point of a
partition is the first offset handed out and not yet acknowledged (every offset before it was
acknowledged), or one past the last offset handed out when all of them were. A commit never
passes an unacknowledged offset, so a consumer that dies redelivers exactly what was not done
(and perhaps some that were: idempotent jobs make that harmless).

Offsets of a partition need not be consecutive (compacted topics, transaction markers): the
prefix is over the offsets handed out, in their order. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

P = TypeVar("P", bound=Hashable)


@dataclass
class _Partition:
    committed: int  # the last commit point recorded (the first offset handed out, at first)
    next: int  # one past the highest offset handed out
    pending: set[int] = field(default_factory=set)  # handed out, not acknowledged

    def point(self) -> int:
        return min(self.pending) if self.pending else self.next


class OffsetTracker(Generic[P]):
    """Offsets handed out and acknowledged, per partition ``P`` (a ``TopicPartition``)."""

    def __init__(self) -> None:
        self._parts: dict[P, _Partition] = {}

    def handed(self, partition: P, offset: int) -> None:
        """``offset`` of ``partition`` was handed out (offsets of a partition ascend)."""
        part = self._parts.get(partition)
        if part is None:
            self._parts[partition] = _Partition(offset, offset + 1, {offset})
            return
        if offset < part.next:
            raise ValueError(f"offset {offset} handed out after {part.next - 1} of {partition}")
        part.pending.add(offset)
        part.next = offset + 1

    def ack(self, partition: P, offset: int) -> bool:
        """``offset`` is done; False (and nothing changes) when it is not outstanding here
        (acknowledged already, never handed out, or its partition was forgotten)."""
        part = self._parts.get(partition)
        if part is None or offset not in part.pending:
            return False
        part.pending.discard(offset)
        return True

    def commit_points(self) -> dict[P, int]:
        """Per partition whose point advanced since it was last recorded ``committed``: the
        offset to commit (one past the longest acknowledged prefix of what was handed out)."""
        return {p: part.point() for p, part in self._parts.items() if part.point() > part.committed}

    def commit_point(self, partition: P) -> int | None:
        """``commit_points()`` for one partition: None when it has nothing new to commit."""
        part = self._parts.get(partition)
        if part is None or part.point() <= part.committed:
            return None
        return part.point()

    def committed(self, partition: P, offset: int) -> None:
        """The broker has ``offset`` as ``partition``'s commit point."""
        part = self._parts.get(partition)
        if part is not None and offset > part.committed:
            part.committed = offset

    def forget(self, partitions: Iterable[P]) -> None:
        """Drop these partitions (revoked in a rebalance): later acks for them are ignored,
        their uncommitted messages are the next owner's to receive again."""
        for partition in partitions:
            self._parts.pop(partition, None)

    def in_flight(self) -> int:
        """Messages handed out and not acknowledged, over all partitions."""
        return sum(len(part.pending) for part in self._parts.values())

    def partitions(self) -> list[P]:
        return list(self._parts)
