"""The ``noa`` console script: the cores' subcommands (``noa/cli``) plus ``noa serve``, which
starts a local Ray cluster (``deployments/local.py``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from deployments.local import serve_foreground
from noa.cli.main import Command, resolve_serve_config
from noa.cli.main import main as cli_main
from noa.config import NoaConfig, load_config


def _arguments(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--config", help="NOA config file (or a Serve config with NOA's args)")
    serve.add_argument("--host", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP port (default 8000)")


def _serve(args: argparse.Namespace) -> int:
    config = load_config(args.config) if args.config else NoaConfig()
    return serve_foreground(resolve_serve_config(config, args.host, args.port))


SERVE = Command("serve", "start a local Ray cluster and serve NOA", _arguments, _serve)


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(argv, [SERVE])


if __name__ == "__main__":
    sys.exit(main())
