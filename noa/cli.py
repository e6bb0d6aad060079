"""The ``noa`` command: ``noa serve [--config FILE] [--host H] [--port P]``,
``noa check-config FILE``, ``noa keys create|list|show|revoke|rotate``."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
from collections.abc import Sequence

from noa import cli_keys
from noa.config import ConfigError, NoaConfig, load_config

logger = logging.getLogger("noa.cli")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_serve_config(config: NoaConfig, host: str | None, port: int | None) -> NoaConfig:
    """Apply --host/--port; without a master key, refuse to listen beyond loopback."""
    server = config.server.model_copy(
        update={k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    )
    if config.auth.master_key() is None:
        if not _is_loopback(server.host):
            raise ConfigError(
                f"refusing to listen on {server.host} without a master key: set "
                f"{config.auth.master_key_env} to enable auth, or listen on 127.0.0.1"
            )
        logger.warning(
            "auth is off: %s is not set, so NOA listens on %s only",
            config.auth.master_key_env,
            server.host,
        )
    return config.model_copy(update={"server": server})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="noa", description="NOA inference gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start a local Ray cluster and serve NOA")
    serve.add_argument("--config", help="NOA config file (or a Serve config with NOA's args)")
    serve.add_argument("--host", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP port (default 8000)")
    check = sub.add_parser("check-config", help="validate a config file and print it")
    check.add_argument("config")
    cli_keys.add_parser(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "check-config":
            print(load_config(args.config).model_dump_json(indent=2))
            return 0
        if args.command == "keys":
            return cli_keys.main(load_config(args.config) if args.config else NoaConfig(), args)
        config = load_config(args.config) if args.config else NoaConfig()
        config = resolve_serve_config(config, args.host, args.port)
    except (ConfigError, OSError) as e:
        print(f"noa: {e}", file=sys.stderr)
        return 2
    from deployments.local import serve_foreground  # imports ray only when serving

    return serve_foreground(config)


if __name__ == "__main__":
    sys.exit(main())
