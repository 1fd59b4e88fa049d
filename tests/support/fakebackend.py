"""A stand-in backend for fault injection: a tiny aiohttp app that answers like
llama-server's /health and /v1/chat/completions, and misbehaves on request.

Run as `python -m tests.support.fakebackend --port P [--fail-bind-once FILE]
[--slow-health S] [--exit-after-start]`. Only for faults a real llama-server
cannot be made to show on cue; features are proven against the real one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from aiohttp import web


def build_app(slow_health: float) -> web.Application:
    app = web.Application()
    loop_start = {"t": None}

    async def health(request: web.Request) -> web.Response:
        loop = asyncio.get_running_loop()
        if loop_start["t"] is None:
            loop_start["t"] = loop.time()
        if loop.time() - loop_start["t"] < slow_health:
            return web.json_response({"error": {"code": 503, "message": "Loading model"}}, status=503)
        return web.json_response({"status": "ok"})

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        n = int(body.get("max_tokens", 4))
        if not body.get("stream"):
            return web.json_response({"model": body.get("model"), "object": "chat.completion",
                                      "choices": [{"index": 0, "message": {"role": "assistant", "content": "x" * n},
                                                   "finish_reason": "length"}]})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for _ in range(n):
            chunk = {"object": "chat.completion.chunk", "model": body.get("model"),
                     "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}]}
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            await asyncio.sleep(float(body.get("delay", 0)))
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": 1, "completion_tokens": n, "total_tokens": n + 1}
            await resp.write(b"data: " + json.dumps({"object": "chat.completion.chunk", "model": body.get("model"),
                                                     "choices": [], "usage": usage}).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await asyncio.sleep(float(body.get("end_delay", 0)))  # the reply's end (its last chunk) comes later
        return resp

    app.router.add_get("/health", health)
    app.router.add_post("/v1/chat/completions", chat)
    return app


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--fail-bind-once", metavar="FILE",
                   help="first run: print llama-server's bind error and exit 1, creating FILE")
    p.add_argument("--slow-health", type=float, default=0.0, help="answer 503 on /health for S seconds")
    p.add_argument("--exit-after-start", action="store_true", help="exit 3 right away (a crash while loading)")
    a = p.parse_args()
    if a.exit_after_start:
        print("fake: loading failed on purpose", file=sys.stderr, flush=True)
        sys.exit(3)
    if a.fail_bind_once and not os.path.exists(a.fail_bind_once):
        open(a.fail_bind_once, "w").close()
        print(f"E srv start: couldn't bind HTTP server socket, hostname: 127.0.0.1, port: {a.port}",
              file=sys.stderr, flush=True)
        sys.exit(1)
    web.run_app(build_app(a.slow_health), host="127.0.0.1", port=a.port, print=None)


if __name__ == "__main__":
    main()
