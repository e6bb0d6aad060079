"""What API keys are hashed under, and the older secrets a stored key may still be under.

The current secret is ``NOA_KEY_SECRET`` when it is set; otherwise a random one NOA makes once
and keeps in the database (``noa_settings``), so every replica and node sharing the database
hashes alike, and rotating the master key changes nothing about the keys.

Before that secret was stored, NOA derived it from the master key (or, without one, kept a
random one in ``$NOA_HOME/key-secret``). Keys made then are marked by migration 3
(``legacy_hash``); they are still found under those secrets and re-hashed under the current
one when they are next used (``KeyStore.verify``). A secret that was current before
``NOA_KEY_SECRET`` was set is looked in too, so setting it later loses no key either.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass

from noa.access.keys import KeyHasher
from noa.storage.db import Database
from noa.storage.settings import setting, setting_once

logger = logging.getLogger("noa.keys")
SETTING = "api_key_secret"
MIN_BYTES = 16


def derived_from_master(master_key: str) -> bytes:
    """The secret keys were hashed under when only a master key was set (before migration 3)."""
    return hashlib.sha256(b"noa-api-key-hmac:" + master_key.encode("utf-8")).digest()


@dataclass(frozen=True)
class KeySecrets:
    """Resolves the hashers of a key store from the database it uses (``KeyStore`` calls it
    once, on first use: nothing connects at build time).

    ``explicit``: ``NOA_KEY_SECRET``, when set. ``legacy``: the secrets NOA derived by itself
    before it stored one, in the order to try. ``master_env``: the variable one of them comes
    from, named in the warning about keys still under it.
    """

    explicit: bytes | None = None
    legacy: tuple[bytes, ...] = ()
    master_env: str | None = None

    def __post_init__(self) -> None:
        if self.explicit is not None and len(self.explicit) < MIN_BYTES:
            raise ValueError(f"the API key secret must be at least {MIN_BYTES} bytes")

    async def __call__(self, db: Database) -> tuple[KeyHasher, tuple[KeyHasher, ...]]:
        """The hasher of new keys, and the ones older keys may be under."""
        stored: str | None
        if self.explicit is not None:
            current, stored = self.explicit, await setting(db, SETTING)
        else:
            stored = await setting_once(db, SETTING, secrets.token_hex(32))
            current = stored.encode("utf-8")
        older = [stored.encode("utf-8")] if stored is not None else []
        if self.legacy and await self._legacy_keys(db):
            older += self.legacy
        return KeyHasher(current), tuple(KeyHasher(s) for s in dict.fromkeys(older) if s != current)

    async def _legacy_keys(self, db: Database) -> int:
        """How many usable keys are still hashed the old way (and warn when the master key's
        rotation would invalidate them)."""
        row = await db.fetchrow(
            "SELECT count(*) AS n FROM noa_api_keys WHERE legacy_hash = 1 AND revoked_at IS NULL"
        )
        count = int(row["n"]) if row else 0
        if count and self.master_env is not None and self.explicit is None:
            logger.warning(
                "%d API keys are still hashed under a secret derived from %s (made before NOA"
                " stored its key secret); each moves to the stored secret when it is next used."
                " Until then, changing %s would invalidate them: see README, 'Rotating secrets'",
                count,
                self.master_env,
                self.master_env,
            )
        return count
