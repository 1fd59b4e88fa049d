"""Ollama's chat, generate and embed bodies, translated to the llama-server
endpoints that do the work, and the replies translated back. Pure: no I/O, so
tests/unit/api/test_ollama_translate.py checks every mapping without a server.

- /api/chat -> /v1/chat/completions (the model's chat template, tools, images);
- /api/generate -> /v1/chat/completions as one user turn (plus `system`), or
  llama-server's native /completion with `raw: true`, or /infill with `suffix`;
- /api/embed and /api/embeddings -> /v1/embeddings.

Ollama streams by default (`stream` absent is true) as NDJSON, one object a line,
the last with `done: true` and the durations in nanoseconds, which come from
llama-server's `timings`. Options that set how a model is launched (num_ctx,
num_gpu, num_thread...) are not sampling parameters: `launch_options` hands them
to the route (api/ollama.py), which decides what they do.
"""

from __future__ import annotations

import base64
import json
import math
import time
from typing import Any

from router.http.errors import HTTPError

CHAT_PATH, COMPLETION_PATH, INFILL_PATH, EMBED_PATH = "/v1/chat/completions", "/completion", "/infill", "/v1/embeddings"
# Ollama option -> llama-server body key (the OpenAI endpoints read llama-server's own keys too).
SAMPLING = {
    "temperature": "temperature", "top_k": "top_k", "top_p": "top_p", "min_p": "min_p", "typical_p": "typical_p",
    "seed": "seed", "repeat_penalty": "repeat_penalty", "repeat_last_n": "repeat_last_n",
    "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty", "mirostat": "mirostat",
    "mirostat_tau": "mirostat_tau", "mirostat_eta": "mirostat_eta", "num_keep": "n_keep",
}
# Options about the model's launch (llama-server's command line), not one request.
LAUNCH = frozenset({"num_ctx", "num_batch", "num_gpu", "main_gpu", "use_mmap", "use_mlock", "num_thread", "numa",
                    "low_vram", "f16_kv", "vocab_only", "logits_all", "embedding_only", "rope_frequency_base",
                    "rope_frequency_scale", "num_gqa"})
THINK_LEVELS = frozenset({"low", "medium", "high", "max"})
ROLES = frozenset({"system", "user", "assistant", "tool"})
_CAP_KEY = {CHAT_PATH: "max_tokens", COMPLETION_PATH: "n_predict", INFILL_PATH: "n_predict"}
_IMAGE_TYPES = ((b"\x89PNG", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif"),
                (b"RIFF", "image/webp"), (b"BM", "image/bmp"))


def bad(message: str) -> HTTPError:
    return HTTPError(400, message, code="invalid_request")


_second: list[Any] = [None, ""]  # the last whole second formatted, and its text


def now_iso() -> str:
    """Ollama's `created_at`, RFC 3339 in UTC with microseconds: one per streamed object, so
    the date and time of day are formatted once a second."""
    t = time.time()
    s = int(t)
    if s != _second[0]:
        _second[:] = [s, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s))]
    return f"{_second[1]}.{int((t - s) * 1e6):06d}Z"


def wants_stream(body: dict[str, Any]) -> bool:
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad("'stream' must be true or false")
    return stream is not False


def _text(body: dict[str, Any], key: str, where: str = "") -> str:
    value = body.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise bad(f"'{where}{key}' must be a string")
    return value


def _number(name: str, value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad(f"option '{name}' must be a number")
    return value


def options(body: dict[str, Any], cap_key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The request's `options`: (llama-server sampling keys, the launch options it set).
    Unknown options are ignored, as Ollama does; a known one of the wrong type is a 400."""
    opts = body.get("options")
    if opts is None:
        return {}, {}
    if not isinstance(opts, dict):
        raise bad("'options' must be an object")
    params: dict[str, Any] = {}
    for name, value in opts.items():
        if value is None:
            continue
        if name in SAMPLING:
            params[SAMPLING[name]] = _number(name, value)
        elif name == "num_predict":
            n = _number(name, value)
            params[cap_key] = -1 if n < 0 else int(n)  # Ollama's -1 (no limit) and -2 (fill the context)
        elif name == "stop":
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
                raise bad("option 'stop' must be a string or a list of strings")
            params["stop"] = value
    return params, {k: v for k, v in opts.items() if k in LAUNCH and v is not None}


def response_format(fmt: Any) -> dict[str, Any] | None:
    """`format`: "json" or a JSON schema, as an OpenAI `response_format`."""
    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return {"type": "json_object"}
    if isinstance(fmt, dict):
        return {"type": "json_schema", "json_schema": {"name": "format", "schema": fmt}}
    raise bad("'format' must be \"json\" or a JSON schema (an object)")


def think_params(think: Any) -> dict[str, Any]:
    """`think`: true/false, or a level, as the chat template's variables (Qwen 3's
    enable_thinking, gpt-oss's reasoning_effort); absent: the model's default."""
    if think is None:
        return {}
    if isinstance(think, bool):
        return {"chat_template_kwargs": {"enable_thinking": think}}
    if isinstance(think, str) and think in THINK_LEVELS:
        level = "high" if think == "max" else think
        return {"chat_template_kwargs": {"enable_thinking": True, "reasoning_effort": level}}
    raise bad("'think' must be true, false, \"low\", \"medium\", \"high\" or \"max\"")


def data_uri(image: Any) -> str:
    """An Ollama image (base64, no prefix) as the data URI llama-server reads."""
    if not isinstance(image, str) or not image:
        raise bad("every image must be a base64 string")
    if image.startswith("data:"):
        return image
    try:
        head = base64.b64decode(image[:16] + "=" * (-len(image[:16]) % 4), validate=False)
    except ValueError:
        raise bad("an image is not valid base64") from None
    mime = next((m for magic, m in _IMAGE_TYPES if head.startswith(magic)), "image/png")
    return f"data:{mime};base64,{image}"


def _images(value: Any, vision: bool, model: str) -> list[str]:
    if value is None or value == []:
        return []
    if not isinstance(value, list):
        raise bad("'images' must be a list of base64 strings")
    if not vision:
        raise bad(f"model '{model}' does not support images: it has no projector (mmproj)")
    return [data_uri(i) for i in value]


def _with_images(content: str, images: list[str]) -> str | list[dict[str, Any]]:
    if not images:
        return content
    parts: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": u}} for u in images]
    return [*parts, {"type": "text", "text": content}] if content else parts


def _tool_calls(calls: Any, ids: list[tuple[str, str]], turn: int) -> list[dict[str, Any]]:
    """Ollama's tool calls (arguments an object) as OpenAI's (arguments a JSON string, an id)."""
    if not isinstance(calls, list):
        raise bad("'tool_calls' must be a list")
    out = []
    for i, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise bad("every tool call needs a function with a name")
        args = fn.get("arguments", {})
        call_id = call.get("id") if isinstance(call.get("id"), str) and call.get("id") else f"call_{turn}_{i}"
        ids.append((call_id, fn["name"]))
        out.append({"id": call_id, "type": "function", "function": {
            "name": fn["name"], "arguments": args if isinstance(args, str) else json.dumps(args)}})
    return out


def chat_messages(messages: Any, vision: bool, model: str) -> list[dict[str, Any]]:
    """Ollama's messages as OpenAI's: images as content parts, `thinking` as
    reasoning_content, tool calls with ids, and each `tool` message answering the
    oldest open call of its tool_name (or the oldest open call)."""
    if not isinstance(messages, list):
        raise bad("'messages' must be a list of messages")
    out: list[dict[str, Any]] = []
    open_calls: list[tuple[str, str]] = []
    for turn, m in enumerate(messages):
        if not isinstance(m, dict):
            raise bad("every message must be an object")
        role = m.get("role")
        if role not in ROLES:
            raise bad("every message needs a role: system, user, assistant or tool")
        msg: dict[str, Any] = {"role": role,
                               "content": _with_images(_text(m, "content", "message."), _images(
                                   m.get("images"), vision, model))}
        thinking = _text(m, "thinking", "message.")
        if thinking and role == "assistant":
            msg["reasoning_content"] = thinking
        if m.get("tool_calls"):
            msg["tool_calls"] = _tool_calls(m["tool_calls"], open_calls, turn)
        if role == "tool":
            name = _text(m, "tool_name", "message.")
            call_id = _text(m, "tool_call_id", "message.")
            match = next((c for c in open_calls if c[0] == call_id or (not call_id and (not name or c[1] == name))),
                         None)
            if match is not None:
                open_calls.remove(match)
                call_id = call_id or match[0]
            if call_id:
                msg["tool_call_id"] = call_id
            if name:
                msg["name"] = name
        out.append(msg)
    return out


def _common(body: dict[str, Any], path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    params, launch = options(body, _CAP_KEY[path])
    fmt = response_format(body.get("format"))
    if fmt is not None:
        if path == CHAT_PATH:
            params["response_format"] = fmt
        else:  # llama-server's native endpoints take the schema itself
            params["json_schema"] = fmt["json_schema"]["schema"] if fmt["type"] == "json_schema" else {}
    params.update(think_params(body.get("think")))
    return params, launch


def chat_request(body: dict[str, Any], vision: bool, model: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """An /api/chat body with messages: (the /v1/chat/completions body, the launch options)."""
    params, launch = _common(body, CHAT_PATH)
    out: dict[str, Any] = {"messages": chat_messages(body.get("messages"), vision, model), **params}
    tools = body.get("tools")
    if tools:
        if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
            raise bad("'tools' must be a list of tools")
        out["tools"] = tools
    return out, launch


def generate_request(body: dict[str, Any], vision: bool, model: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """An /api/generate body with a prompt: (the child's path, its body, the launch options)."""
    prompt, suffix, system = _text(body, "prompt"), _text(body, "suffix"), _text(body, "system")
    if _text(body, "template"):
        raise bad("'template' is not supported: llama-server applies the model's own chat template "
                  "(send raw: true with a prompt you formatted yourself)")
    raw = body.get("raw")
    if raw is not None and not isinstance(raw, bool):
        raise bad("'raw' must be true or false")
    images = _images(body.get("images"), vision, model)
    if suffix:
        if images:
            raise bad("'images' cannot go with 'suffix' (fill-in-the-middle)")
        params, launch = _common(body, INFILL_PATH)
        return INFILL_PATH, {"input_prefix": prompt, "input_suffix": suffix, "prompt": "", **params}, launch
    if raw:
        if images or system:
            raise bad("raw mode takes the prompt as it is: no 'images' or 'system'")
        params, launch = _common(body, COMPLETION_PATH)
        return COMPLETION_PATH, {"prompt": prompt, **params}, launch
    params, launch = _common(body, CHAT_PATH)
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": _with_images(prompt, images)})
    return CHAT_PATH, {"messages": messages, **params}, launch


def embed_inputs(body: dict[str, Any], legacy: bool) -> list[str]:
    """/api/embed's `input` (a string or a list of them), or /api/embeddings' `prompt`."""
    if legacy:
        prompt = _text(body, "prompt")
        return [prompt] if prompt else []
    value = body.get("input")
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise bad("'input' must be a string or a list of strings")


def dimensions(body: dict[str, Any]) -> int | None:
    dims = body.get("dimensions")
    if dims is None or dims == 0:
        return None
    if isinstance(dims, bool) or not isinstance(dims, int) or dims < 0:
        raise bad("'dimensions' must be a positive integer")
    return dims
