"""The catalogue through the admin API: `GET /admin/config` shows the catalogue
as served (file, command line and discovered models), secrets hidden;
`PUT /admin/config` replaces the file and applies it like a reload.

A new catalogue is checked in full before a byte is written (parse_config:
the same errors a reload gives), written atomically, and reloaded; if the
reload still refuses it (a start-up model that names nothing, say), the old
text is put back, so a refused PUT leaves the file as it was.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from aiohttp import web

from router.catalogue.config import RUNTIME_FIELDS, Config, ConfigError, ModelSpec
from router.catalogue.importer import CatalogueWriteError, write_catalogue
from router.catalogue.parse import parse_config
from router.catalogue.yamlio import YAMLReadError, read_yaml
from router.core.reload import Reloader, reload_models
from router.http.access import ADMIN, Models, declare
from router.http.app_keys import MANAGER, RELOADER
from router.http.errors import HTTPError
from router.http.request import parse_json_object, read_body

REDACTED = "<redacted>"
# Environment variables and command-line flags whose values are secrets.
SECRET_RE = re.compile(r"key|token|secret|passw|credential|auth", re.IGNORECASE)
YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain"})


def redact_args(args: Any) -> list[str]:
    """A command line with the value of every secret-looking flag hidden
    (`--api-key X`, `--hf-token=X`)."""
    out: list[str] = []
    hide_next = False
    for arg in args:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        flag, eq, _ = arg.partition("=")
        if arg.startswith("-") and SECRET_RE.search(flag):
            if eq:
                out.append(f"{flag}={REDACTED}")
                continue
            hide_next = True
        out.append(arg)
    return out


def _model_view(spec: ModelSpec) -> dict[str, Any]:
    view = asdict(spec)
    view["name"] = view.pop("display_name")  # the file's key (config.py); the model's own name is the entry's
    view["env"] = {k: REDACTED if SECRET_RE.search(k) else v for k, v in spec.env}
    view["args"] = redact_args(spec.args)
    if spec.spawn is not None:
        view["spawn"]["command"] = redact_args(spec.spawn.command)
    if spec.api_key:  # an external server's key
        view["api_key"] = REDACTED
    view["stop_command"] = redact_args(spec.stop_command)
    return view


def config_view(config: Config) -> dict[str, Any]:
    """The catalogue as served, as JSON: every setting with its effective value,
    the admin token, API keys and secret-looking env values and flags hidden."""
    out: dict[str, Any] = {"source": config.source}
    for f in fields(config):
        if f.name in RUNTIME_FIELDS or f.name in ("models", "peers"):
            continue
        value = getattr(config, f.name)
        out[f.name] = asdict(value) if hasattr(value, "__dataclass_fields__") else value
    router = out["router"]
    router["admin_token"] = REDACTED if config.router.admin_token else None
    router["api_keys"] = [REDACTED] * len(config.router.api_keys)
    for key in ("command", "args"):
        if key in out["spawn"]:
            out["spawn"][key] = redact_args(out["spawn"][key])
    out["models"] = {name: _model_view(spec) for name, spec in config.models.items()}
    out["peers"] = {name: {**asdict(peer), "api_key": REDACTED if peer.api_key else None}
                    for name, peer in config.peers.items()}
    out["missing"] = sorted(config.missing)
    return out


def _holds_redacted(data: Any) -> bool:
    if isinstance(data, dict):
        return any(_holds_redacted(v) for v in data.values())
    if isinstance(data, list):
        return any(_holds_redacted(v) for v in data)
    return isinstance(data, str) and REDACTED in data


async def _new_catalogue(request: web.Request, path: Path) -> str | dict[str, Any]:
    """The body as what to write: YAML text as sent, or a JSON object; checked in full."""
    body = await read_body(request)
    if not body.strip():
        raise HTTPError(400, "empty body: send the whole catalogue as YAML or JSON", code="invalid_config")
    content: str | dict[str, Any]
    if request.content_type in YAML_TYPES:
        try:
            content = body.decode("utf-8")
            data = read_yaml(content)
        except UnicodeDecodeError as e:
            raise HTTPError(400, f"the body is not UTF-8 text (byte {e.start})", code="invalid_config") from None
        except YAMLReadError as e:
            raise HTTPError(400, str(ConfigError(str(path), e.where, f"invalid YAML: {e.problem}")),
                            code="invalid_config") from None
    elif request.content_type == "application/json":
        content = data = parse_json_object(body)
    else:
        raise HTTPError(415, "send the catalogue as YAML (Content-Type: application/yaml or text/yaml) or as "
                        "JSON (application/json)", code="unsupported_media_type")
    if _holds_redacted(data):
        raise HTTPError(400, f"the catalogue holds {REDACTED} where a secret belongs: GET /admin/config hides "
                        "secrets, send the real values", code="invalid_config")
    try:
        parse_config(data, str(path))
    except ConfigError as e:
        raise HTTPError(400, str(e), code="invalid_config") from None
    return content


@declare(ADMIN, Models.EVERY)
async def handle_get_config(request: web.Request) -> web.Response:
    return web.json_response(config_view(request.config_dict[MANAGER].config))


@declare(ADMIN, Models.EVERY)  # changes the catalogue
async def handle_put_config(request: web.Request) -> web.Response:
    reloader = request.config_dict[RELOADER]
    path = reloader.path
    if path is None or reloader.loader is None:
        raise HTTPError(409, "the router was started without a catalogue file", code="no_catalogue_file")
    content = await _new_catalogue(request, path)
    # Shielded: a client that leaves must not leave a written file unapplied or not put back.
    return web.json_response(await asyncio.shield(_replace(reloader, path, content)))


async def _replace(reloader: Reloader, path: Path, content: str | dict[str, Any]) -> dict[str, Any]:
    old = await asyncio.to_thread(lambda: path.read_text(encoding="utf-8") if path.exists() else None)
    try:
        await asyncio.to_thread(write_catalogue, path, content)
    except CatalogueWriteError as e:
        raise HTTPError(500, str(e), code="catalogue_write") from None
    res = await reload_models(reloader, "PUT /admin/config")
    if not res.ok:
        await asyncio.to_thread(write_catalogue, path, old) if old is not None else path.unlink(missing_ok=True)
        raise HTTPError(400, res.error or "the reload refused the catalogue", code="invalid_config")
    return res.to_json()


def add_config_routes(app: web.Application) -> None:
    """GET and PUT /admin/config, into the /admin sub-application."""
    app.router.add_get("/config", handle_get_config)
    app.router.add_put("/config", handle_put_config)
