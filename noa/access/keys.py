"""API keys and teams, stored in the database.

A key's secret (``sk-noa-`` + 43 random URL-safe characters: 256 random bits) is shown once,
when it is created or rotated. The database keeps only its HMAC-SHA256 under the server's key
secret and its first 12 characters, the visible prefix that identifies it in lists and logs.
Verification looks the digest up and compares it in constant time. The key secret is
``NOA_KEY_SECRET``, or one NOA made and keeps in the database (``noa/access/key_secret.py``):
set ``NOA_KEY_SECRET`` to keep it out of a copy of the database too.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from noa.access.records import check_record, stored_metadata
from noa.storage.db import Database, Row

Clock = Callable[[], float]
Period = Literal["day", "week", "month", "total"]
SECRET_PREFIX = "sk-noa-"
VISIBLE = 12  # characters of the secret kept in clear: "sk-noa-AbCdE"
SCOPES = frozenset({"admin"})


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


class KeyHasher:
    """HMAC-SHA256 of a secret under the server's key secret."""

    def __init__(self, server_secret: bytes) -> None:
        if len(server_secret) < 16:
            raise ValueError("the key-hashing secret must be at least 16 bytes")
        self._secret = server_secret

    def digest(self, secret: str) -> str:
        return hmac.new(self._secret, secret.encode("utf-8"), hashlib.sha256).hexdigest()


Hashers = tuple[KeyHasher, tuple[KeyHasher, ...]]  # new keys' hasher; older keys' ones
# resolves a store's hashers from its database (noa/access/key_secret.py: KeySecrets)
HasherSource = Callable[[Database], Awaitable[Hashers]]


@dataclass(frozen=True)
class Limits:
    """Requests and tokens per minute, and a USD budget per period; None: unlimited."""

    rpm: int | None = None
    tpm: int | None = None
    budget_usd: float | None = None
    budget_period: Period | None = None

    def any(self) -> bool:
        return self.rpm is not None or self.tpm is not None or self.budget_usd is not None


@dataclass(frozen=True)
class ApiKey:
    id: str
    prefix: str
    name: str | None
    team: str | None
    scopes: tuple[str, ...]
    models: tuple[str, ...] | None  # None: every model
    limits: Limits
    metadata: dict[str, Any]
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    rotated_from: str | None = None

    def state(self, now: float) -> Literal["active", "revoked", "expired"]:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"

    def public(self, now: float | None = None) -> dict[str, Any]:
        """What the admin API shows (never the secret nor its digest)."""
        body = asdict(self)
        body["scopes"] = list(self.scopes)
        body["models"] = None if self.models is None else list(self.models)
        body.update(body.pop("limits"))
        if now is not None:
            body["state"] = self.state(now)
        return body


@dataclass(frozen=True)
class Team:
    id: str
    limits: Limits
    models: tuple[str, ...] | None
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0

    def public(self) -> dict[str, Any]:
        body = asdict(self)
        body["models"] = None if self.models is None else list(self.models)
        body.update(body.pop("limits"))
        return body


def _json_list(value: str | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(json.loads(value))


def _limits(row: Row) -> Limits:
    return Limits(row["rpm"], row["tpm"], row["budget_usd"], row["budget_period"])


def _key(row: Row) -> ApiKey:
    return ApiKey(
        id=row["id"],
        prefix=row["prefix"],
        name=row["name"],
        team=row["team"],
        scopes=_json_list(row["scopes"]) or (),
        models=_json_list(row["models"]),
        limits=_limits(row),
        metadata=stored_metadata(row),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        rotated_from=row["rotated_from"],
    )


KEY_COLUMNS = (
    "id, prefix, name, team, scopes, models, rpm, tpm, budget_usd, budget_period, metadata,"
    " created_at, expires_at, revoked_at, rotated_from"
)


class KeyStore:
    """Create, find, list, revoke and rotate keys; verify a presented secret."""

    def __init__(
        self, db: Database, hasher: KeyHasher | HasherSource, clock: Clock = time.time
    ) -> None:
        self.db = db
        self.clock = clock
        self._source = hasher
        self._hashers: Hashers | None = (hasher, ()) if isinstance(hasher, KeyHasher) else None

    async def hashers(self) -> Hashers:
        """The hasher of new keys, and those older keys may still be under: resolved on first
        use (the secret may live in the database, which connects on first use too)."""
        if self._hashers is None:
            assert not isinstance(self._source, KeyHasher)
            self._hashers = await self._source(self.db)
        return self._hashers

    async def digest(self, secret: str) -> str:
        """What ``secret`` is stored as."""
        return (await self.hashers())[0].digest(secret)

    async def create(
        self,
        *,
        name: str | None = None,
        team: str | None = None,
        scopes: Sequence[str] = (),
        models: Sequence[str] | None = None,
        limits: Limits = Limits(),
        metadata: Mapping[str, Any] | None = None,
        expires_at: float | None = None,
        rotated_from: str | None = None,
    ) -> tuple[str, ApiKey]:
        """A new key: (its secret, shown only now; its record)."""
        unknown = set(scopes) - SCOPES
        if unknown:
            raise ValueError(f"unknown scopes: {sorted(unknown)}")
        check_record({"name": name, "team": team}, models, limits, metadata)
        secret = new_secret()
        key = ApiKey(
            id=f"key_{uuid.uuid4().hex[:20]}",
            prefix=secret[:VISIBLE],
            name=name,
            team=team,
            scopes=tuple(scopes),
            models=None if models is None else tuple(models),
            limits=limits,
            metadata=dict(metadata or {}),
            created_at=self.clock(),
            expires_at=expires_at,
            rotated_from=rotated_from,
        )
        await self.db.execute(
            f"INSERT INTO noa_api_keys ({KEY_COLUMNS}, hash) VALUES"
            " ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
            key.id,
            key.prefix,
            key.name,
            key.team,
            json.dumps(list(key.scopes)),
            None if key.models is None else json.dumps(list(key.models)),
            limits.rpm,
            limits.tpm,
            limits.budget_usd,
            limits.budget_period,
            json.dumps(key.metadata),
            key.created_at,
            key.expires_at,
            None,
            rotated_from,
            await self.digest(secret),
        )
        return secret, key

    async def get(self, key_id: str) -> ApiKey | None:
        row = await self.db.fetchrow(
            f"SELECT {KEY_COLUMNS} FROM noa_api_keys WHERE id = $1", key_id
        )
        return None if row is None else _key(row)

    async def list(self, team: str | None = None, include_revoked: bool = False) -> list[ApiKey]:
        sql = f"SELECT {KEY_COLUMNS} FROM noa_api_keys WHERE ($1::text IS NULL OR team = $1)"
        if self.db.dialect == "sqlite":
            sql = sql.replace("$1::text", "$1")
        if not include_revoked:
            sql += " AND revoked_at IS NULL"
        rows = await self.db.fetch(sql + " ORDER BY created_at, id", team)
        return [_key(r) for r in rows]

    async def verify(self, secret: str) -> ApiKey | None:
        """The key whose secret this is (whatever its state), or None."""
        if not secret.startswith(SECRET_PREFIX):
            return None
        current, older = await self.hashers()
        digest = current.digest(secret)
        row = await self._by_hash(digest)
        if row is None:
            row = await self._rehash(secret, digest, older)
        elif row["legacy_hash"]:  # made before the stored secret, under the current one
            await self.db.execute(
                "UPDATE noa_api_keys SET legacy_hash = 0 WHERE id = $1", row["id"]
            )
        if row is None:
            return None
        return _key(row)

    async def _by_hash(self, digest: str) -> Row | None:
        row = await self.db.fetchrow(
            f"SELECT {KEY_COLUMNS}, hash, legacy_hash FROM noa_api_keys WHERE hash = $1", digest
        )
        if row is None or not hmac.compare_digest(row["hash"], digest):
            return None
        return row

    async def _rehash(self, secret: str, digest: str, older: Sequence[KeyHasher]) -> Row | None:
        """A key stored under an older secret: found, and stored under the current one from
        now on (so the older secret may go)."""
        for hasher in older:
            old = hasher.digest(secret)
            row = await self._by_hash(old)
            if row is not None:
                await self.db.execute(
                    "UPDATE noa_api_keys SET hash = $1, legacy_hash = 0"
                    " WHERE id = $2 AND hash = $3",
                    digest,
                    row["id"],
                    old,
                )
                return row
        return None

    async def revoke(self, key_id: str) -> ApiKey | None:
        """Revoke (idempotent): the key's record after, or None if there is no such key."""
        await self.db.execute(
            "UPDATE noa_api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
            self.clock(),
            key_id,
        )
        return await self.get(key_id)

    async def rotate(self, key_id: str) -> tuple[str, ApiKey] | None:
        """A new secret with the same settings; the old key is revoked in the same transaction."""
        current, _ = await self.hashers()  # first: resolving it may read the database
        async with self.db.transaction() as tx:
            store = KeyStore(tx, current, self.clock)
            old = await store.get(key_id)
            if old is None or old.revoked_at is not None:
                return None
            created = await store.create(
                name=old.name,
                team=old.team,
                scopes=old.scopes,
                models=old.models,
                limits=old.limits,
                metadata=old.metadata,
                expires_at=old.expires_at,
                rotated_from=old.id,
            )
            await store.revoke(old.id)
            return created


TEAM_COLUMNS = "id, rpm, tpm, budget_usd, budget_period, models, metadata, created_at"


def _team(row: Row) -> Team:
    return Team(
        id=row["id"],
        limits=_limits(row),
        models=_json_list(row["models"]),
        metadata=stored_metadata(row),
        created_at=row["created_at"],
    )


class TeamStore:
    """Teams: limits, budget and allowed models shared by the keys that name them."""

    def __init__(self, db: Database, clock: Clock = time.time) -> None:
        self.db = db
        self.clock = clock

    async def put(
        self,
        team_id: str,
        limits: Limits = Limits(),
        models: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Team:
        """Create the team, or replace its settings."""
        check_record({"team": team_id}, models, limits, metadata)
        existing = await self.get(team_id)
        team = Team(
            team_id,
            limits,
            None if models is None else tuple(models),
            dict(metadata or {}),
            existing.created_at if existing else self.clock(),
        )
        args = (
            limits.rpm,
            limits.tpm,
            limits.budget_usd,
            limits.budget_period,
            None if team.models is None else json.dumps(list(team.models)),
            json.dumps(team.metadata),
        )
        if existing is None:
            await self.db.execute(
                f"INSERT INTO noa_teams ({TEAM_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                team_id,
                *args,
                team.created_at,
            )
        else:
            await self.db.execute(
                "UPDATE noa_teams SET rpm = $1, tpm = $2, budget_usd = $3, budget_period = $4,"
                " models = $5, metadata = $6 WHERE id = $7",
                *args,
                team_id,
            )
        return team

    async def get(self, team_id: str) -> Team | None:
        row = await self.db.fetchrow(f"SELECT {TEAM_COLUMNS} FROM noa_teams WHERE id = $1", team_id)
        return None if row is None else _team(row)

    async def list(self) -> list[Team]:
        return [_team(r) for r in await self.db.fetch(f"SELECT {TEAM_COLUMNS} FROM noa_teams")]

    async def delete(self, team_id: str) -> bool:
        found = await self.get(team_id)
        if found is not None:
            await self.db.execute("DELETE FROM noa_teams WHERE id = $1", team_id)
        return found is not None
