"""The `llama-router` command line. Command-line values override the file."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from dataclasses import replace
from pathlib import Path

from router import __version__
from router.catalogue.config import MIN_SECRET_LEN, Config, ConfigError, default_config_path
from router.catalogue.parse import load_config
from router.catalogue.sources import load_served

EPILOG = """\
examples:
  llama-router --import-dir ~/models         add every model found there to the catalogue, serve them
  llama-router --models-dir ~/models         serve a folder as it is (rescanned on /admin/rescan)
  llama-router -hf ggml-org/gemma-3-270m-it-GGUF:Q8_0   download a model and serve it
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
    p.add_argument("-c", "--config", metavar="PATH", default=None,
                   help=f"catalogue YAML file (default: {default_config_path()} if it exists)")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default 8082)")
    p.add_argument("--models-max", type=int, metavar="N", help="models loaded at once, 0 = no limit (default 1)")
    p.add_argument("--models-dir", metavar="DIR", action="append", default=[],
                   help="serve every model in DIR (llama.cpp --models-dir layout: name.gguf, or name/ with "
                        "shards and a projector); repeatable; found again on every rescan")
    p.add_argument("--import-dir", metavar="DIR", action="append", default=[],
                   help="find every GGUF model under DIR (recursively) and write it into the catalogue "
                        "file as a manual entry, then serve; safe to repeat")
    p.add_argument("-hf", "--hf", metavar="USER/REPO[:QUANT]", action="append", default=[],
                   help="download a GGUF model from Hugging Face into its cache (resumable) and add it "
                        "to the catalogue file, then serve")
    p.add_argument("--build-webui", action="store_true",
                   help="build llama.cpp's WebUI for the installed llama-server (npm; once per machine), "
                        "print its folder and exit")
    p.add_argument("--no-serve", action="store_true",
                   help="with --import-dir or -hf: update the catalogue and exit")
    p.add_argument("--admin-token", metavar="TOKEN",
                   help="enable the /admin API with this token (prefer router.admin_token: ${ENV} in the "
                        "file keeps the token out of the process list)")
    p.add_argument("--log-format", default="text", choices=["text", "json"],
                   help="json: one JSON object a line (time, level, logger, model, request_id, message)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="log verbosity; child output is logged at info, prefixed with the model name (default info)")
    p.add_argument("--version", action="version", version=f"llama-router {__version__}")
    return p


def config_path(args: argparse.Namespace) -> Path:
    return Path(args.config).expanduser() if args.config else default_config_path()


def load_from_args(args: argparse.Namespace) -> Config:
    path = config_path(args)
    config = load_config(path) if args.config or path.exists() else Config(source="<defaults>")
    if args.models_max is not None and args.models_max < 0:
        raise ConfigError("--models-max", "models_max", "expected a number >= 0")
    if args.admin_token is not None and len(args.admin_token) < MIN_SECRET_LEN:
        raise ConfigError("--admin-token", "admin_token", f"expected a secret of at least {MIN_SECRET_LEN} characters")
    dirs = tuple(str(Path(d).expanduser().absolute()) for d in getattr(args, "models_dir", []))
    if dirs:
        config = replace(config, sources=replace(config.sources, dirs=config.sources.dirs + dirs))
    return config.with_router(host=args.host, port=args.port, models_max=args.models_max,
                              admin_token=args.admin_token)


def load_catalogue(args: argparse.Namespace) -> Config:
    """The file, the command line, and what the sources hold now (start-up, reload,
    rescan, folder watch); new models of the import folders are written into the file."""
    config = load_served(lambda: load_from_args(args))
    startup = config.router.startup_model
    if startup is not None and config.resolve(startup) is None:
        raise ConfigError(config.source, "router.startup_model",
                          f"expected the name of a model in the catalogue, got {startup!r}")
    return config


def import_into_catalogue(args: argparse.Namespace) -> int:
    """--import-dir and -hf: write what they find into the catalogue file."""
    from router.catalogue.importer import CatalogueWriteError, import_models
    from router.discovery.huggingface import HFError, download_gguf
    from router.discovery.scan import scan_import_dir

    path = config_path(args)
    found = []
    for d in args.import_dir:
        result = scan_import_dir(d)
        for skipped, reason in result.skipped:
            print(f"skipped {skipped}: {reason}", file=sys.stderr)
        found += result.models
    for ref in args.hf:
        try:
            found.append(download_gguf(ref, progress=sys.stderr.isatty()))
        except HFError as e:
            print(f"llama-router: {e}", file=sys.stderr)
            return 1
    try:
        report = import_models(path, found, import_dirs=args.import_dir)
    except CatalogueWriteError as e:
        print(f"llama-router: {e}", file=sys.stderr)
        return 2
    for name in report.added:
        print(f"added {name}")
    for old, new in report.renamed.items():
        print(f"  ({old} was taken: added as {new})")
    print(f"{path}: {len(report.added)} model(s) added, {len(report.existing)} already there")
    return 0


def setup_logging(level: str, fmt: str = "text") -> None:
    logging.basicConfig(level=getattr(logging, level.upper()),
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if fmt == "json":
        from router.logformat import JSONFormatter

        for handler in logging.getLogger().handlers:
            handler.setFormatter(JSONFormatter())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("watchfiles").setLevel(logging.WARNING)  # it logs every filtered-out change


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    if args.build_webui:
        from router.ui.webui_build import WebUIBuildError, build_webui

        try:
            print(build_webui())
        except (WebUIBuildError, OSError) as e:
            print(f"llama-router: {e}", file=sys.stderr)
            return 1
        return 0
    if args.import_dir or args.hf:
        code = import_into_catalogue(args)
        if code or args.no_serve:
            return code
    try:
        config = load_catalogue(args)
    except ConfigError as e:
        print(f"llama-router: configuration error: {e}", file=sys.stderr)
        return 2
    if not config.models:
        logging.getLogger("router").warning(
            "the catalogue %s lists no models; add some under `models:` (see config.example.yaml)", config.source)
    from router.server import serve

    return asyncio.run(serve(config, loader=lambda: load_catalogue(args)))


if __name__ == "__main__":
    sys.exit(main())
