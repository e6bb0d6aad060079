"""The verified-key cache: bounded, least recently used first out, and unknown credentials kept
apart so that a flood of them never makes a busy key read the database again (manual clock)."""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from typing import Any

import pytest
from clocks import ManualClock

from noa.access.identity import Authenticator
from noa.access.key_cache import KeyCache, Lru
from noa.access.keys import ApiKey, KeyHasher, Limits
from noa.errors import AuthenticationError


class Keys:
    """A key store that knows the secrets it was given and counts its reads per secret."""

    def __init__(self, *secrets: str) -> None:
        self.hasher = KeyHasher(b"0123456789abcdef0123")
        self.known = {
            s: ApiKey(f"key_{i}", s[:12], None, None, (), None, Limits(), {}, 0.0)
            for i, s in enumerate(secrets)
        }
        self.reads: Counter[str] = Counter()

    async def digest(self, secret: str) -> str:
        return self.hasher.digest(secret)

    async def verify(self, secret: str) -> Any:
        self.reads[secret] += 1
        await asyncio.sleep(0)
        return self.known.get(secret)


def authenticator(keys: Keys, clock: ManualClock, **sizes: int) -> Authenticator:
    return Authenticator(keys=keys, required=True, cache_s=5, clock=clock, **sizes)  # type: ignore[arg-type]


async def refused(auth: Authenticator, secret: str) -> None:
    with pytest.raises(AuthenticationError, match="Incorrect API key"):
        await auth.authenticate(secret)


async def test_a_flood_of_unknown_credentials_never_evicts_a_busy_key() -> None:
    clock = ManualClock()
    busy = "sk-noa-busy-key-0123456789"
    keys = Keys(busy)
    auth = authenticator(keys, clock)
    assert (await auth.authenticate(busy)).id == "key_0"
    for i in range(100_100):  # more made-up secrets than the whole cache used to hold
        await refused(auth, f"sk-noa-{i:08d}")
        if i % 10_000 == 0:
            assert (await auth.authenticate(busy)).id == "key_0"
    assert (await auth.authenticate(busy)).id == "key_0"
    assert keys.reads[busy] == 1  # never read again: the flood did not push it out
    assert len(auth._cache.unknown) == 10_000  # the unknown ones are bounded on their own


async def test_unknown_credentials_are_remembered_in_a_small_lru_of_their_own() -> None:
    clock = ManualClock()
    keys = Keys("sk-noa-real-key-0123456789")
    auth = authenticator(keys, clock, max_unknown_keys=3)
    for secret in ("sk-noa-u1", "sk-noa-u2", "sk-noa-u3", "sk-noa-u1"):
        await refused(auth, secret)
    assert keys.reads["sk-noa-u1"] == 1  # answered from memory the second time
    await refused(auth, "sk-noa-u4")  # pushes out the least recently used: u2
    await refused(auth, "sk-noa-u2")
    await refused(auth, "sk-noa-u1")
    assert keys.reads["sk-noa-u2"] == 2 and keys.reads["sk-noa-u1"] == 1
    assert (await auth.authenticate("sk-noa-real-key-0123456789")).id == "key_0"
    assert len(auth._cache.known) == 1 and len(auth._cache.unknown) == 3


async def test_known_keys_are_a_bounded_lru() -> None:
    clock = ManualClock()
    a, b, c = (f"sk-noa-{name}-{secrets.token_hex(8)}" for name in "abc")
    keys = Keys(a, b, c)
    auth = authenticator(keys, clock, max_keys=2)
    await auth.authenticate(a)
    await auth.authenticate(b)
    await auth.authenticate(a)  # a is now the most recently used
    await auth.authenticate(c)  # b goes
    for secret in (a, c, b):
        await auth.authenticate(secret)
    assert (keys.reads[a], keys.reads[b], keys.reads[c]) == (1, 2, 1)
    assert len(auth._cache.known) == 2


async def test_invalidate_forgets_one_key_or_everything() -> None:
    clock = ManualClock()
    a, b = "sk-noa-a-0123456789abc", "sk-noa-b-0123456789abc"
    keys = Keys(a, b)
    auth = authenticator(keys, clock)
    await auth.authenticate(a)
    await auth.authenticate(b)
    await refused(auth, "sk-noa-unknown")
    auth.invalidate("key_0")
    await auth.authenticate(a)
    await auth.authenticate(b)
    await refused(auth, "sk-noa-unknown")
    assert (keys.reads[a], keys.reads[b], keys.reads["sk-noa-unknown"]) == (2, 1, 1)
    auth.invalidate()
    assert len(auth._cache) == 0


def test_lru_and_key_cache_move_an_answer_between_known_and_unknown() -> None:
    lru: Lru[str, int] = Lru(2)
    lru.put("x", 1)
    lru.put("y", 2)
    assert lru.get("x") == 1
    lru.put("z", 3)
    assert lru.get("y") is None and lru.evictions == 1 and len(lru) == 2
    with pytest.raises(ValueError):
        Lru(0)
    cache: KeyCache[str] = KeyCache(max_keys=2, max_unknown=2)
    cache.put("d", 1.0, None)
    assert cache.get("d") == (1.0, None)
    cache.put("d", 2.0, "a key")  # the key was created since: known now, no longer unknown
    assert cache.get("d") == (2.0, "a key") and len(cache.unknown) == 0
    cache.put("d", 3.0, None)
    assert cache.get("d") == (3.0, None) and len(cache.known) == 0
