"""``noa keys create|list|show|revoke|rotate``: API keys in the configured database.

The CLI writes the database directly (the one in ``$NOA_DATABASE_URL``, else the SQLite file
under ``$NOA_HOME``), hashing with the same secret as the server. Running gateways read a
changed key within ``auth.key_cache_s``; revocations through the admin API reach them at once.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import time

from noa.access.keys import KeyStore, Limits, Period
from noa.build import access
from noa.config import NoaConfig

HELP = "create, list, show, revoke and rotate API keys"


def add_arguments(keys: argparse.ArgumentParser) -> None:
    keys.add_argument("--config", help="NOA config file (for the database and key secret)")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a key and print its secret (once)")
    create.add_argument("--name")
    create.add_argument("--team")
    create.add_argument("--admin", action="store_true", help="may use the admin API")
    create.add_argument("--models", help="comma-separated models allowed (default: all)")
    create.add_argument("--rpm", type=int, help="requests per minute")
    create.add_argument("--tpm", type=int, help="tokens per minute")
    create.add_argument("--budget-usd", type=float, help="USD per budget period")
    create.add_argument("--budget-period", choices=["day", "week", "month", "total"])
    create.add_argument("--expires-in-days", type=float)
    create.add_argument("--metadata", help="a JSON object")
    listing = actions.add_parser("list", help="list keys (no secrets)")
    listing.add_argument("--team")
    listing.add_argument("--all", action="store_true", help="include revoked keys")
    for name in ("show", "revoke", "rotate"):
        action = actions.add_parser(name, help=f"{name} a key by its id")
        action.add_argument("key_id")


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return f"{datetime.datetime.fromtimestamp(ts, datetime.UTC):%Y-%m-%d %H:%M}"


async def run(config: NoaConfig, args: argparse.Namespace) -> int:
    db = access.database(config)
    keys = KeyStore(db, access.key_secrets(config))
    try:
        now = time.time()
        if args.action == "create":
            period: Period | None = args.budget_period or (
                "month" if args.budget_usd is not None else None
            )
            secret, key = await keys.create(
                name=args.name,
                team=args.team,
                scopes=["admin"] if args.admin else [],
                models=args.models.split(",") if args.models else None,
                limits=Limits(args.rpm, args.tpm, args.budget_usd, period),
                metadata=json.loads(args.metadata) if args.metadata else None,
                expires_at=now + args.expires_in_days * 86_400 if args.expires_in_days else None,
            )
            print(json.dumps({"key": secret, **key.public(now)}, indent=2))
            print("Store the key now: it is not shown again.")
            return 0
        if args.action == "list":
            for key in await keys.list(team=args.team, include_revoked=args.all):
                limits = ", ".join(f"{k}={v}" for k, v in vars(key.limits).items() if v is not None)
                print(
                    f"{key.id}  {key.prefix}…  {key.state(now):8}  team={key.team or '-'}  "
                    f"name={key.name or '-'}  created={_when(key.created_at)}  "
                    f"expires={_when(key.expires_at)}  {limits}"
                )
            return 0
        if args.action == "show":
            found = await keys.get(args.key_id)
            if found is None:
                print(f"noa: no key {args.key_id}")
                return 1
            print(json.dumps(found.public(now), indent=2))
            return 0
        if args.action == "revoke":
            revoked = await keys.revoke(args.key_id)
            if revoked is None:
                print(f"noa: no key {args.key_id}")
                return 1
            print(f"revoked {revoked.id} ({revoked.prefix}…)")
            return 0
        rotated = await keys.rotate(args.key_id)
        if rotated is None:
            print(f"noa: no active key {args.key_id}")
            return 1
        secret, key = rotated
        print(json.dumps({"key": secret, **key.public(now)}, indent=2))
        print(f"{args.key_id} is revoked. Store the new key now: it is not shown again.")
        return 0
    finally:
        await db.close()


def main(config: NoaConfig, args: argparse.Namespace) -> int:
    return asyncio.run(run(config, args))
