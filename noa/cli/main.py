"""The cores' ``noa`` subcommands: ``noa check-config FILE``, ``noa keys create|list|show|
revoke|rotate``; ``noa serve`` joins them from ``deployments/cli.py`` (the one that starts Ray)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from noa.cli import keys as cli_keys
from noa.config import ConfigError, NoaConfig, load_config
from noa.config.guards import check_public_listen

logger = logging.getLogger("noa.cli")


def resolve_serve_config(config: NoaConfig, host: str | None, port: int | None) -> NoaConfig:
    """Apply --host/--port; with auth off, refuse to listen beyond loopback (unless the
    operator opted in: ``auth.allow_unauthenticated_public``)."""
    server = config.server.model_copy(
        update={k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    )
    check_public_listen(config, server.host)
    if not config.auth.is_on():
        logger.warning(
            "auth is off: %s is not set, so NOA answers anyone who can reach %s",
            config.auth.master_key_env,
            server.host,
        )
    return config.model_copy(update={"server": server})


@dataclass(frozen=True)
class Command:
    """One ``noa`` subcommand: its arguments and what it runs (an exit status)."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _check_config(args: argparse.Namespace) -> int:
    print(load_config(args.config).model_dump_json(indent=2))
    return 0


def _keys(args: argparse.Namespace) -> int:
    return cli_keys.main(load_config(args.config) if args.config else NoaConfig(), args)


def _config_file(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config")


CHECK_CONFIG = Command(
    "check-config", "validate a config file and print it", _config_file, _check_config
)
KEYS = Command("keys", cli_keys.HELP, cli_keys.add_arguments, _keys)


def main(argv: Sequence[str] | None = None, commands: Sequence[Command] = ()) -> int:
    """``noa`` with ``commands`` (``serve``, from ``deployments/cli.py``) and the cores' own."""
    parser = argparse.ArgumentParser(prog="noa", description="NOA inference gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    known = {c.name: c for c in (*commands, CHECK_CONFIG, KEYS)}
    for command in known.values():
        command.arguments(sub.add_parser(command.name, help=command.help))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return known[args.command].run(args)
    except (ConfigError, OSError) as e:
        print(f"noa: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
