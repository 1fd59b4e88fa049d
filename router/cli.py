"""The `llama-router` command line. Command-line values override the file.

Longer than 300 lines because most of it is the options' help, which belongs next to them."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from router import __version__
from router.catalogue.config import MIN_SECRET_LEN, Config, ConfigError, RouterSettings, default_config_path
from router.catalogue.parse import load_config
from router.catalogue.router_mode import read_api_keys, remote_preset, split_command_line
from router.catalogue.sources import load_served
from router.catalogue.tls import check_tls
from router.cluster.main import run as serve_cluster  # imports Ray only when called
from router.logformat import log_as

if TYPE_CHECKING:
    from router.catalogue.server_args import ServerArgs

EPILOG = """\
examples:
  llama-router --import-dir ~/models         add every model found there to the catalogue, serve them
  llama-router --models-dir ~/models         serve a folder as it is (rescanned on /admin/rescan)
  llama-router -hf ggml-org/gemma-3-270m-it-GGUF:Q8_0   download a model and serve it
  llama-router --config config.yaml          serve the models in a catalogue
  llama-router --port 9000 --models-max 2    override the file's settings
  llama-router --models-preset models.ini -ngl 99 -c 8192 --api-key KEY
                                             llama.cpp's router-mode command line: any llama-server
                                             argument becomes a default of every child
  llama-router --import-llama-swap config.yaml   turn a llama-swap config into a catalogue

Then point any OpenAI client at http://127.0.0.1:8082/v1 and pick a model
by name; `curl http://127.0.0.1:8082/v1/models` lists them.
Default config file: %s
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llama-router", allow_abbrev=False,
        description="One port, many llama.cpp models: starts a llama-server per model on demand, "
                    "routes each request by its \"model\" field and swaps models as memory allows.",
        epilog=EPILOG % default_config_path(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", metavar="PATH", default=None,
                   help=f"catalogue YAML file (default: {default_config_path()} if it exists); `-c` is "
                        "llama-server's context size, as in llama.cpp (`-c FILE.yaml` still reads a catalogue)")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default 8082)")
    p.add_argument("--ollama-port", type=int, metavar="PORT",
                   help="also serve on PORT, where Ollama clients look (11434): docs/ollama.md")
    p.add_argument("--models-max", type=int, metavar="N", help="models loaded at once, 0 = no limit (default 1)")
    p.add_argument("--models-dir", metavar="DIR", action="append", default=[],
                   help="serve every model in DIR (llama.cpp --models-dir layout: name.gguf, or name/ with "
                        "shards and a projector); repeatable; found again on every rescan")
    p.add_argument("--import-dir", metavar="DIR", action="append", default=[],
                   help="find every GGUF model under DIR (recursively) and write it into the catalogue "
                        "file as a manual entry, then serve; safe to repeat")
    p.add_argument("-hf", "-hfr", "--hf-repo", "--hf", metavar="USER/REPO[:QUANT]", action="append", default=[],
                   dest="hf", help="download a GGUF model from Hugging Face into its cache (resumable) and add it "
                   "to the catalogue file, then serve; a repo holding a preset.ini is llama.cpp's remote "
                   "preset: served as --models-preset, nothing written")
    llama = p.add_argument_group(
        "llama.cpp router mode", "the options of `llama-server` in router mode, with the same meaning; any other "
        "llama-server argument (-ngl 99, -c 8192, --jinja...) becomes a default of every child, over the "
        "catalogue's and a preset's (llama.cpp's precedence)")
    llama.add_argument("--models-preset", metavar="FILE.ini",
                       help="llama.cpp's model presets: [*] defaults and a section per model (docs/migration.md)")
    llama.add_argument("--models-autoload", action=argparse.BooleanOptionalAction, default=None,
                       help="load a model a request names when it is not running (default); with "
                            "--no-models-autoload only ?autoload=true does")
    llama.add_argument("--api-key", metavar="KEY", action="append", default=[],
                       help="require this key (Authorization: Bearer KEY); a comma-separated list or repeated")
    llama.add_argument("--api-key-file", metavar="FILE", help="read API keys from FILE, one a line")
    llama.add_argument("--sleep-idle-seconds", metavar="N", type=float,
                       help="unload a model idle for N seconds (router.ttl)")
    p.add_argument("--import-llama-swap", metavar="PATH",
                   help="write the catalogue (--config PATH, else the default file) from a llama-swap "
                        "config.yaml and print what could not be carried over, then exit")
    p.add_argument("--import-preset", metavar="FILE.ini",
                   help="write the catalogue from a llama.cpp --models-preset INI file, then exit")
    p.add_argument("--build-webui", action="store_true",
                   help="build llama.cpp's WebUI for the installed llama-server (npm; once per machine), "
                        "print its folder and exit")
    p.add_argument("--no-serve", action="store_true",
                   help="with --import-dir or -hf: update the catalogue and exit")
    p.add_argument("--admin-token", metavar="TOKEN",
                   help="enable the /admin API with this token (prefer router.admin_token: ${ENV} in the "
                        "file keeps the token out of the process list)")
    p.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this certificate chain (PEM; with --tls-key)")
    p.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM, not encrypted)")
    p.add_argument("--cluster", metavar="ADDR", help="serve a Ray cluster's hosts (auto, HOST:PORT): docs/cluster.md")
    p.add_argument("--log-format", choices=["text", "json"],
                   help="json: one JSON object a line (time, level, logger, model, request_id, message); "
                        "default router.log_format, else text")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                   help="log verbosity; child output is logged at info, prefixed with the model name "
                        "(default router.log_level, else info)")
    p.add_argument("--log-file", metavar="PATH",
                   help="write the log to PATH (appended) instead of stderr (default router.log_file)")
    p.add_argument("--version", action="version", version=f"llama-router {__version__}")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """llama-router's options, and every llama-server argument (args.child_args)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    own = {o for a in parser._actions for o in a.option_strings}
    takes = {o for a in parser._actions if a.nargs != 0 for o in a.option_strings}
    needs_table = any(t.startswith("-") and t.partition("=")[0] not in own for t in argv)
    try:
        mine, child = split_command_line(argv, own, takes, _server_table() if needs_table else None)
    except ConfigError as e:
        parser.error(f"{e.key}: {str(e).split(': ', 2)[-1]}")
    args = parser.parse_args(mine)
    args.child_args = tuple(child)
    return args


def _server_table() -> ServerArgs | None:
    """llama-server's argument table, from the binary children run (None: not installed)."""
    from router.backend.launch import find_llama_server
    from router.catalogue.server_args import ServerArgsError, server_args

    binary = find_llama_server()
    if binary is None:
        return None
    try:
        return server_args(binary)
    except ServerArgsError as e:
        logging.getLogger("router").warning("cannot read llama-server's arguments: %s", e)
        return None


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
    keys = read_api_keys(getattr(args, "api_key", []), getattr(args, "api_key_file", None))
    for k in keys:
        if len(k) < MIN_SECRET_LEN or any(c.isspace() for c in k):
            raise ConfigError("--api-key", "api_keys", f"expected keys of at least {MIN_SECRET_LEN} characters "
                              "without spaces")
    sleep = getattr(args, "sleep_idle_seconds", None)
    if sleep is not None and sleep < 0:
        raise ConfigError("--sleep-idle-seconds", "ttl", "expected a number of seconds >= 0")
    config = replace(config, cli_args=tuple(getattr(args, "child_args", ())))
    tls_cert, tls_key = getattr(args, "tls_cert", None), getattr(args, "tls_key", None)
    if tls_cert or tls_key:  # the command line gives both or neither, and replaces the file's pair
        tls_cert, tls_key = (str(Path(f).expanduser().absolute()) if f else None for f in (tls_cert, tls_key))
        check_tls(tls_cert, tls_key, "<command line>", ("--tls-cert", "--tls-key"))
        config = config.with_router(tls_cert=tls_cert, tls_key=tls_key)
    return config.with_router(host=args.host, port=args.port, models_max=args.models_max,
                              admin_token=args.admin_token, api_keys=config.router.api_keys + keys or None,
                              ttl=sleep, models_autoload=getattr(args, "models_autoload", None),
                              ollama_port=getattr(args, "ollama_port", None))


def load_catalogue(args: argparse.Namespace) -> Config:
    """The file, the command line, and what the sources hold now (start-up, reload,
    rescan, folder watch); new models of the import folders are written into the file."""
    config = load_served(lambda: load_from_args(args))
    if getattr(args, "models_preset", None):
        table = _server_table()
        if table is None:
            raise ConfigError(args.models_preset, "--models-preset", "needs llama-server (to read its arguments)")
        from router.catalogue.preset import read_preset
        from router.catalogue.router_mode import apply_preset

        preset = read_preset(args.models_preset, table)
        for line in preset.report:
            logging.getLogger("router").info("%s: %s", args.models_preset, line)
        config = apply_preset(config, preset, args.models_preset, table)
    startup = config.router.startup_model
    if startup is not None and config.resolve(startup) is None:
        raise ConfigError(config.source, "router.startup_model",
                          f"expected the name of a model in the catalogue, got {startup!r}")
    for name in config.router.preload:
        if config.resolve(name) is None:
            raise ConfigError(config.source, "router.preload", f"expected names of models in the catalogue, "
                              f"got {name!r}")
    return config


def import_catalogue(args: argparse.Namespace) -> int:
    """--import-llama-swap and --import-preset: write a catalogue from another router's file."""
    from router.catalogue.importer import CatalogueWriteError

    dest = config_path(args)
    try:
        if args.import_llama_swap:
            from router.catalogue.llama_swap import import_llama_swap

            conversion = import_llama_swap(args.import_llama_swap, dest)
            report = conversion.report
            for line in conversion.warnings:
                print(f"warning: {line}", file=sys.stderr)
        else:
            table = _server_table()
            if table is None:
                print("llama-router: --import-preset needs llama-server (to read its arguments)", file=sys.stderr)
                return 1
            from router.catalogue.preset import import_preset

            _, report = import_preset(args.import_preset, dest, table)
    except (ConfigError, CatalogueWriteError) as e:
        print(f"llama-router: {e}", file=sys.stderr)
        return 2
    for line in report:
        print(f"  {line}")
    print(f"{dest}: written from {args.import_llama_swap or args.import_preset}"
          f"{f'; {len(report)} key(s) not carried over, listed above' if report else ''}")
    return 0


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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not log_as(args.log_level, args.log_format, args.log_file, RouterSettings()):
        return 2
    if args.build_webui:
        from router.ui.webui_build import WebUIBuildError, build_webui

        try:
            print(build_webui())
        except (WebUIBuildError, OSError) as e:
            print(f"llama-router: {e}", file=sys.stderr)
            return 1
        return 0
    if args.import_llama_swap or args.import_preset:
        return import_catalogue(args)
    if args.hf:
        try:  # a repo with a preset.ini is the models preset (llama.cpp's remote preset), not a model
            models, args.models_preset = remote_preset(args.hf, args.models_preset, args.child_args)
        except ConfigError as e:
            print(f"llama-router: {e}", file=sys.stderr)
            return 2
        if args.no_serve and not (models or args.import_dir):
            return 0  # the preset is in the cache
        args.hf = models
    if args.import_dir or args.hf:
        code = import_into_catalogue(args)
        if code or args.no_serve:
            return code
    try:
        config = load_catalogue(args)
    except ConfigError as e:
        print(f"llama-router: configuration error: {e}", file=sys.stderr)
        return 2
    if not log_as(args.log_level, args.log_format, args.log_file, config.router):
        return 2
    if not config.models:
        logging.getLogger("router").warning(
            "the catalogue %s lists no models; add some under `models:` (see config.example.yaml)", config.source)
    if args.cluster:
        return serve_cluster(config, args.cluster, loader=lambda: load_catalogue(args))
    from router.server import run

    return run(config, loader=lambda: load_catalogue(args))


if __name__ == "__main__":
    sys.exit(main())
