"""The `llama-router` command line. Command-line values override the file."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from . import __version__
from .config import MIN_SECRET_LEN, Config, ConfigError, default_config_path, load_config

EPILOG = """\
examples:
  llama-router --config config.yaml          serve the models in a catalogue
  llama-router --port 9000 --models-max 2    override the file's settings

Then point any OpenAI client at http://127.0.0.1:8082/v1 and pick a model
by name; `curl http://127.0.0.1:8082/v1/models` lists them.
Default config file: %s
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llama-router",
        description="One port, many llama.cpp models: starts a llama-server per model on demand, "
                    "routes each request by its \"model\" field and swaps models as memory allows.",
        epilog=EPILOG % default_config_path(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-c", "--config", metavar="PATH", help=f"catalogue YAML file (default: {default_config_path()} if it exists)",
                   default=None)
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default 8082)")
    p.add_argument("--models-max", type=int, metavar="N", help="models loaded at once, 0 = no limit (default 1)")
    p.add_argument("--admin-token", metavar="TOKEN",
                   help="enable the /admin API with this token (prefer router.admin_token: ${ENV} in the "
                        "file keeps the token out of the process list)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="log verbosity; debug also shows every child's output (default info)")
    p.add_argument("--version", action="version", version=f"llama-router {__version__}")
    return p


def load_from_args(args: argparse.Namespace) -> Config:
    path = Path(args.config).expanduser() if args.config else default_config_path()
    if args.config or path.exists():
        config = load_config(path)
    else:
        config = Config(source="<defaults>")
    if args.models_max is not None and args.models_max < 0:
        raise ConfigError("--models-max", "models_max", "expected a number >= 0")
    if args.admin_token is not None and len(args.admin_token) < MIN_SECRET_LEN:
        raise ConfigError("--admin-token", "admin_token", f"expected a secret of at least {MIN_SECRET_LEN} characters")
    return config.with_router(host=args.host, port=args.port, models_max=args.models_max,
                              admin_token=args.admin_token)


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()),
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("watchfiles").setLevel(logging.WARNING)  # it logs every filtered-out change


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        config = load_from_args(args)
    except ConfigError as e:
        print(f"llama-router: configuration error: {e}", file=sys.stderr)
        return 2
    if not config.models:
        logging.getLogger("router").warning(
            "the catalogue %s lists no models; add some under `models:` (see config.example.yaml)", config.source)
    from .server import serve

    return asyncio.run(serve(config, loader=lambda: load_from_args(args)))


if __name__ == "__main__":
    sys.exit(main())
