"""One replica's memory of verified keys: what the database said about a presented secret's
digest, and when it said it.

Two bounded LRUs: one for digests the database knows (a key, active or refused), one, smaller,
for digests it does not know. A flood of made-up credentials then only pushes other made-up
credentials out, never a real key: a busy key keeps being served from memory however many
unknown secrets are tried next to it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")
A = TypeVar("A")


class Lru(Generic[K, V]):
    """A mapping of at most ``max_entries`` entries; the least recently used goes first."""

    def __init__(self, max_entries: int) -> None:
        if max_entries <= 0:
            raise ValueError("max_entries must be positive")
        self._max = max_entries
        self._data: OrderedDict[K, V] = OrderedDict()
        self.evictions = 0

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self._max:
            self._data.popitem(last=False)
            self.evictions += 1

    def pop(self, key: K) -> V | None:
        return self._data.pop(key, None)

    def items(self) -> Iterator[tuple[K, V]]:
        return iter(list(self._data.items()))

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


class KeyCache(Generic[A]):
    """digest -> (read at, the database's answer); an answer of None is "no such key"."""

    def __init__(self, max_keys: int = 100_000, max_unknown: int = 10_000) -> None:
        self.known: Lru[str, tuple[float, A]] = Lru(max_keys)
        self.unknown: Lru[str, float] = Lru(max_unknown)

    def get(self, digest: str) -> tuple[float, A | None] | None:
        known = self.known.get(digest)
        if known is not None:
            return known
        read_at = self.unknown.get(digest)
        return None if read_at is None else (read_at, None)

    def put(self, digest: str, read_at: float, answer: A | None) -> None:
        if answer is None:
            self.known.pop(digest)
            self.unknown.put(digest, read_at)
        else:
            self.unknown.pop(digest)
            self.known.put(digest, (read_at, answer))

    def forget(self, which: Callable[[A], bool] | None = None) -> None:
        """Forget the known answers ``which`` selects (every answer, unknown ones too, when
        None)."""
        if which is None:
            self.known.clear()
            self.unknown.clear()
            return
        for digest, (_, answer) in self.known.items():
            if which(answer):
                self.known.pop(digest)

    def __len__(self) -> int:
        return len(self.known) + len(self.unknown)
