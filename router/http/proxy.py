"""Relay one HTTP request to a child and its reply back, streaming as it comes.

Server-sent events are written to the client chunk by chunk as the child
sends them; when the client goes away the handler is cancelled, the
upstream response is closed and llama-server stops generating.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
from aiohttp import web

from router.http.app_keys import REQUEST_ID as REQUEST_ID_KEY
from router.http.capture import CAPTURE
from router.http.errors import error_body, error_response
from router.http.outcome import CLIENT_LEFT
from router.http.sse import frame
from router.upstream.endpoint import endpoint
from router.upstream.pool import ConnectFailed, Disconnected, Reply, UpstreamError, UpstreamPool

log = logging.getLogger("router.proxy")

# Hop-by-hop headers (RFC 9110 7.6.1) and the ones aiohttp sets itself.
_DROP_REQUEST = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "host", "content-length", "authorization", "x-api-key",
    "x-admin-token", "accept-encoding", "x-request-id", "expect",
})
_DROP_RESPONSE = frozenset({
    "connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding",
    "server", "date", "access-control-allow-origin",
})
_UPSTREAM_ERRORS = (UpstreamError, TimeoutError, ConnectionError)
# The child went away (crash, kill): nothing of its reply can have reached the client yet
# when these happen before the reply is under way. A read timeout is not one of them.
_CHILD_LOST = (ConnectFailed, Disconnected, ConnectionResetError)


class UpstreamLost(Exception):
    """The child was lost before any byte of its reply reached the client: the request
    may be sent again to a restarted child (forward(..., replayable=True))."""
TAIL_BYTES = 4096  # the start and end of a reply kept for its token counts
END_GRACE_S = 0.5  # how long a reply whose client left may take to show it had ended
REQUEST_ID = "X-Request-Id"


class ModelRewriter:
    """Replace the child's model id with the name the client asked for.

    llama-server puts its own alias in every reply; clients expect the name
    (or alias) they sent. Works on whole lines so a chunk boundary never
    splits the pattern.
    """

    def __init__(self, child_id: str, requested: str):
        self.old = b'"model":' + json.dumps(child_id).encode()
        self.new = b'"model":' + json.dumps(requested).encode()
        self._pending = b""

    def feed(self, data: bytes) -> bytes:
        data = self._pending + data
        cut = data.rfind(b"\n") + 1
        self._pending = data[cut:]
        return data[:cut].replace(self.old, self.new)

    def flush(self) -> bytes:
        data, self._pending = self._pending, b""
        return data.replace(self.old, self.new)

    def whole(self, data: bytes) -> bytes:
        return data.replace(self.old, self.new)


def _request_headers(request: web.Request) -> dict[str, str]:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP_REQUEST}
    rid = request.get(REQUEST_ID_KEY)
    if rid:
        headers[REQUEST_ID] = rid  # the child's logs and the router's name the same request
    return headers


def _response_headers(up: Reply) -> dict[str, str]:
    return {k: v for k, v in up.headers.items() if k.lower() not in _DROP_RESPONSE}


async def forward(
    request: web.Request,
    client: UpstreamPool,
    base_url: str,
    path: str,
    body: bytes | None,
    *,
    connect_timeout: float,
    read_timeout: float,
    rewriter: ModelRewriter | None = None,
    into: web.StreamResponse | None = None,
    stats: dict[str, Any] | None = None,
    light: bool = False,
    replayable: bool = False,
    upstream_headers: Mapping[str, str] | None = None,
    reply_headers: Mapping[str, str] | None = None,
) -> web.StreamResponse:
    """`into`: an event stream already sent to the client (swap progress);
    the child's stream continues it, and a child error becomes an error event.
    `stats` receives "first_byte" (perf_counter at the first byte of the reply's
    body), "head" and "tail" (its first and last bytes, where usage and timings are;
    kept as they come, so a reply cut short still has what arrived), "streamed"
    (relayed as server-sent events) and, where the response's own status does not
    say what the client got, "status": CLIENT_LEFT when it left before the reply's
    last byte (the reply's status when it left after it: a 200 even if the
    handler is cancelled), the error told inside a stream that began as 200. A list under
    "reply" receives every chunk of the reply's body as it came (api/responses.py keeps replies).
    `client`: the router's UpstreamPool (router/upstream/pool.py; the cluster front has one per host).
    `light`: the request takes no slot and is idempotent: it goes over a kept-alive
    connection, and is sent once more if the child had closed that meanwhile.
    `replayable`: raise UpstreamLost instead of answering 502 when the child is lost
    before any byte of the reply was sent (the caller replays it on a restarted child).
    `base_url` may be a server the router does not start (`https://host/api`: TLS, and paths
    under its root); `upstream_headers` go with the request (that server's API key);
    `reply_headers` go with the reply (a fallback's X-Fallback-From, X-Fallback-Reason).
    A request being captured (router/http/capture.py) is told what was relayed."""
    resp: web.StreamResponse | None = into
    capture = request.get(CAPTURE)
    try:
        up = await _send(client, request, base_url, path, body, connect_timeout, read_timeout, light,
                         upstream_headers)
        if capture is not None:
            capture.sent(body, up.status, up.headers)
        async with up:
            headers = _response_headers(up)
            if reply_headers:
                headers.update(reply_headers)
            if request.get(REQUEST_ID_KEY):
                headers[REQUEST_ID] = request[REQUEST_ID_KEY]
            ctype = up.headers.get("Content-Type", "")
            if into is not None and (up.status != 200 or not ctype.startswith("text/event-stream")):
                if stats is not None:
                    stats["status"] = up.status  # told as an error event in a stream that began as 200
                await _write_error_event(into, up.status, await up.read())
                return into
            if into is None and not ctype.startswith("text/event-stream") and up.content_length is not None:
                data = await up.read()
                if up.status >= 400 and not data.strip():  # e.g. llama-server's multipart parser: say why
                    return error_response(up.status, f"the model server answered {up.status} {up.reason or ''} "
                                          "with an empty body", code=up.status, headers={
                                              k: v for k, v in headers.items() if k.lower() != "content-type"})
                if rewriter is not None and ctype.startswith("application/json"):
                    data = rewriter.whole(data)
                if stats is not None:
                    stats["first_byte"] = time.perf_counter()
                    stats["head"], stats["tail"] = data[:TAIL_BYTES], data[-TAIL_BYTES:]
                    if "reply" in stats:
                        stats["reply"].append(data)
                if capture is not None:
                    capture.reply(data)
                return web.Response(status=up.status, body=data, headers=headers)
            resp = into or web.StreamResponse(status=up.status, headers=headers)
            if not resp.prepared:
                await resp.prepare(request)
            head = tail = b""
            keep = stats.get("reply") if stats is not None else None  # the whole reply, for a caller that asked
            writing = relayed = False  # relayed: every byte of the child's reply went to the client
            try:
                if stats is not None:
                    stats["streamed"] = ctype.startswith("text/event-stream")
                async for chunk in up.iter_any():
                    if stats is not None:
                        if not tail:
                            stats.setdefault("first_byte", time.perf_counter())
                        if len(head) < TAIL_BYTES:
                            head = stats["head"] = (head + chunk)[:TAIL_BYTES]
                        tail = stats["tail"] = (tail + chunk)[-TAIL_BYTES:]
                        if keep is not None:
                            keep.append(chunk)
                    if capture is not None:
                        capture.reply(chunk)
                    writing = True
                    await _to_client(resp, rewriter.feed(chunk) if rewriter else chunk)
                    writing = False
                if rewriter:
                    rest = rewriter.flush()
                    if rest:
                        await _to_client(resp, rest)
                relayed = True
                await _to_client(resp, None)
            except asyncio.CancelledError:  # the client left (aiohttp cancels the handler)
                if stats is not None:
                    # A client may close as soon as it has read the last event (the OpenAI SDK does
                    # after [DONE]), before the child's end of reply reaches the router.
                    whole = relayed or (bool(tail) and not writing and await _nothing_more(up))
                    stats["status"] = resp.status if whole else CLIENT_LEFT
                up.close()  # make the child stop generating
                raise
            except ClientGone:
                up.close()  # the same, noticed on a write rather than by cancellation
                log.debug("client left %s mid-stream", path)
                if stats is not None and not relayed:
                    stats["status"] = CLIENT_LEFT
            return resp
    except _UPSTREAM_ERRORS as e:
        reason = f"{type(e).__name__}: {e}".rstrip(": ")
        if replayable and resp is None and isinstance(e, _CHILD_LOST):
            raise UpstreamLost(reason) from e
        if resp is None or not resp.prepared:
            return error_response(502, f"upstream model server failed: {reason}", "upstream_error")
        log.warning("stream to %s broke: %s", path, reason)
        if stats is not None:
            stats["status"] = 502  # the reply had begun as the child's 200
        err = error_body(502, f"upstream model server failed mid-stream: {reason}", "upstream_error")
        try:
            await resp.write(frame(err))
            await resp.write_eof()
        except (ConnectionError, RuntimeError):
            pass
        return resp


class ClientGone(Exception):
    """The client's connection closed while its reply was being written."""


async def _nothing_more(up: Reply) -> bool:
    """The client left while the child's reply was under way: had the child anything more
    to send? Its reply ending within END_GRACE_S with no more of its body says the client
    had it all (llama-server ends a stream right after its last event); a byte more, or no
    end in time, says the client left before the end."""
    try:
        async with asyncio.timeout(END_GRACE_S):
            async for chunk in up.iter_any():
                if chunk:
                    return False
        return True
    except (*_UPSTREAM_ERRORS, TimeoutError):
        return False


async def _to_client(resp: web.StreamResponse, data: bytes | None) -> None:
    """Write to the client (None: the end of the reply); its departure is not the
    child's failure (no 'stream broke')."""
    try:
        await (resp.write(data) if data is not None else resp.write_eof())
    except (ConnectionResetError, aiohttp.ClientConnectionResetError) as e:
        raise ClientGone() from e


async def _send(client: UpstreamPool, request: web.Request, base_url: str, path: str, body: bytes | None,
                connect_timeout: float, read_timeout: float, light: bool,
                upstream_headers: Mapping[str, str] | None) -> Reply:
    where = endpoint(base_url)
    query = request.rel_url.raw_query_string
    headers = _request_headers(request)
    if upstream_headers:
        headers.update(upstream_headers)
    return await client.request(request.method, where.host, where.port,
                                where.target(f"{path}?{query}" if query else path), headers, body,
                                connect_timeout=connect_timeout, read_timeout=read_timeout, keep_alive=light,
                                tls=where.tls)


async def _write_error_event(resp: web.StreamResponse, status: int, data: bytes) -> None:
    """A child's non-streaming error, told inside an event stream that already began."""
    try:
        err = json.loads(data)["error"]
        if not isinstance(err, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        err = {"message": data.decode("utf-8", "replace")[:500] or f"HTTP {status}", "type": "upstream_error"}
    err.setdefault("code", status)
    await resp.write(frame({"error": err}))
    await resp.write_eof()
