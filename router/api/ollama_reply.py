"""llama-server's replies as Ollama's: the objects of an /api/chat or
/api/generate reply (streamed one a line, or whole), tool calls, embeddings,
and the last object's counts and durations. Pure, like api/ollama_translate.py
(the requests' side); tests/unit/api/test_ollama_translate.py checks both.

A stream from llama-server is OpenAI's chat chunks (`choices[0].delta`) or,
from the native /completion and /infill, `{"content", "stop"}` objects. Each
piece of text becomes one Ollama object as it arrives; a tool call, which
OpenAI streams in fragments, is sent whole once complete (as Ollama sends it);
the counts and durations come with the last chunks (`timings`, `usage`) and go
into the final `done: true` object.
"""

from __future__ import annotations

import json
import math
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import Any

from router.api.ollama_translate import now_iso

# How llama-server writes a chunk of a chat stream that is one piece of text (and nothing else).
_PIECE = b'{"choices":[{"finish_reason":null,"index":0,"delta":{"content":"'
_AFTER_QUOTE = len(_PIECE)


class ChildError(Exception):
    """An error the child told inside its stream."""


def line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


class Reply:
    """One reply being translated. `chat`: /api/chat's objects (a `message`), else
    /api/generate's (a `response`); `native`: the child answers llama-server's native
    shape; `thinking`: pass the model's reasoning on (false when the request said think: false)."""

    def __init__(self, model: str, chat: bool, native: bool, thinking: bool = True):
        self.model, self.chat, self.native, self.thinking = model, chat, native, thinking
        self.finish: Any = None
        self.timings: dict[str, Any] | None = None
        self.usage: dict[str, Any] | None = None
        self._calls: dict[int, dict[str, Any]] = {}
        # The constant parts of an object of one piece of text: `{"model":"...","created_at":"` TIME
        # `","message":{"role":"assistant","content":` TEXT `},"done":false}`.
        self._head = b'{"model":' + json.dumps(model, ensure_ascii=False).encode() + b',"created_at":"'
        self._body = b'","message":{"role":"assistant","content":' if chat else b'","response":'
        self._tail = b'},"done":false}\n' if chat else b',"done":false}\n'

    # ----- a stream: one event at a time
    def raw_event(self, data: bytes) -> bytes:
        """`event` of one event's JSON text. Most events of a chat stream are one piece of
        text (`_PIECE`): its JSON string is copied as it is, without parsing the event (half
        of the router's work per event, measured); any other event is parsed."""
        if not self.native and data.startswith(_PIECE):
            text = data.decode("utf-8", "replace")
            try:
                value, end = scanstring(text, _AFTER_QUOTE)
            except ValueError:
                value, end = "", -1
            if end > 0 and text.startswith("}}]", end):
                if not value:
                    return b""
                return b"".join((self._head, now_iso().encode(), self._body, text[_AFTER_QUOTE - 1:end].encode(),
                                 self._tail))
        return self.event(json.loads(data))

    def event(self, event: dict[str, Any]) -> bytes:
        """The NDJSON lines for one event of the child's stream (often one, may be none)."""
        if "error" in event:
            err = event["error"]
            raise ChildError(err.get("message", str(err)) if isinstance(err, dict) else str(err))
        self._note(event)
        if self.native:
            return self._piece(event.get("content") or "", None)
        out = b""
        for choice in event.get("choices") or ():
            delta = choice.get("delta") or {}
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
            for call in delta.get("tool_calls") or ():
                self._gather(call)
            out += self._piece(delta.get("content") or "", delta.get("reasoning_content"))
        return out

    def end(self, total_s: float, load_s: float) -> bytes:
        """The tool calls gathered (in their own object, as Ollama sends them), then the last object."""
        out = b""
        if self._calls:
            calls = ollama_tool_calls([self._calls[i] for i in sorted(self._calls)])
            out = line(self._object("", None, calls, done=False))
        last = self._object("", None, None, done=True)
        last["done_reason"] = done_reason(self.finish)
        last.update(durations(self.timings, self.usage, total_s, load_s))
        return out + line(last)

    # ----- a whole reply
    def whole(self, reply: dict[str, Any], total_s: float, load_s: float) -> dict[str, Any]:
        self._note(reply)
        if self.native:
            text, thinking, calls = reply.get("content") or "", None, None
        else:
            choice = (reply.get("choices") or [{}])[0]
            msg = choice.get("message") or {}
            self.finish = choice.get("finish_reason")
            text, thinking = msg.get("content") or "", msg.get("reasoning_content")
            calls = ollama_tool_calls(msg.get("tool_calls")) or None
        obj = self._object(text, thinking, calls, done=True)
        obj["done_reason"] = done_reason(self.finish)
        obj.update(durations(self.timings, self.usage, total_s, load_s))
        return obj

    # ----- helpers
    def _note(self, event: dict[str, Any]) -> None:
        if isinstance(event.get("timings"), dict):
            self.timings = event["timings"]
        if isinstance(event.get("usage"), dict):
            self.usage = event["usage"]
        if self.native and event.get("stop"):
            self.finish = event.get("stop_type")
            if isinstance(event.get("tokens_evaluated"), int):
                self.usage = {"prompt_tokens": event["tokens_evaluated"],
                              "completion_tokens": event.get("tokens_predicted")}

    def _piece(self, text: str, thinking: Any) -> bytes:
        if thinking and self.thinking:
            return line(self._object(text, thinking, None, done=False))
        if not text:
            return b""
        # The common case, one piece of text, written without building the object.
        return b"".join((self._head, now_iso().encode(), self._body, json.dumps(text, ensure_ascii=False).encode(),
                         self._tail))

    def _object(self, text: str, thinking: Any, calls: list[dict[str, Any]] | None, done: bool) -> dict[str, Any]:
        obj: dict[str, Any] = {"model": self.model, "created_at": now_iso()}
        if self.chat:
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if thinking and self.thinking:
                message["thinking"] = thinking
            if calls:
                message["tool_calls"] = calls
            obj["message"] = message
        else:
            obj["response"] = text
            if thinking and self.thinking:
                obj["thinking"] = thinking
            if calls:
                obj["tool_calls"] = calls
        obj["done"] = done
        return obj

    def _gather(self, call: dict[str, Any]) -> None:
        """One fragment of a streamed OpenAI tool call (by index: id and name first, the
        arguments' JSON text in pieces)."""
        index = call.get("index", len(self._calls))
        into = self._calls.setdefault(index, {"id": None, "function": {"name": "", "arguments": ""}})
        if call.get("id"):
            into["id"] = call["id"]
        fn = call.get("function") or {}
        if fn.get("name"):
            into["function"]["name"] += fn["name"]
        if isinstance(fn.get("arguments"), str):
            into["function"]["arguments"] += fn["arguments"]


def embeddings(reply: dict[str, Any], dims: int | None) -> list[list[float]]:
    """The vectors of a /v1/embeddings reply, in input order; with `dims`, cut to that many
    and normalised again (what Ollama does for `dimensions`)."""
    rows = sorted(reply.get("data") or [], key=lambda d: d.get("index", 0))
    vectors = [r.get("embedding") or [] for r in rows]
    if dims is None:
        return vectors
    out = []
    for v in vectors:
        cut = v[:dims]
        norm = math.sqrt(sum(x * x for x in cut)) or 1.0
        out.append([x / norm for x in cut])
    return out


def durations(timings: dict[str, Any] | None, usage: dict[str, Any] | None, total_s: float,
              load_s: float) -> dict[str, int]:
    """The last object's counts and durations (ns): llama-server's `timings` (and OpenAI
    `usage`, whose prompt count includes the cached part of the prompt)."""
    t, u = timings or {}, usage or {}
    out = {"total_duration": int(total_s * 1e9), "load_duration": int(load_s * 1e9)}
    prompt = u.get("prompt_tokens")
    if prompt is None and "prompt_n" in t:
        prompt = t["prompt_n"] + t.get("cache_n", 0)
    if isinstance(prompt, int):
        out["prompt_eval_count"] = prompt
    if isinstance(t.get("prompt_ms"), (int, float)):
        out["prompt_eval_duration"] = int(t["prompt_ms"] * 1e6)
    n = u.get("completion_tokens", t.get("predicted_n"))
    if isinstance(n, int):
        out["eval_count"] = n
    if isinstance(t.get("predicted_ms"), (int, float)):
        out["eval_duration"] = int(t["predicted_ms"] * 1e6)
    return out


def done_reason(finish: Any) -> str:
    """OpenAI's finish_reason (or llama-server's native stop_type) as Ollama's done_reason."""
    return "length" if finish in ("length", "limit") else "stop"


def ollama_tool_calls(calls: Any) -> list[dict[str, Any]]:
    """OpenAI tool calls (arguments a JSON string) as Ollama's (an object)."""
    out = []
    for i, call in enumerate(calls or []):
        fn = call.get("function") or {}
        args = fn.get("arguments")
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except ValueError:
                args = {"arguments": args}  # not JSON: kept, under a key, rather than lost
        entry: dict[str, Any] = {"function": {"index": i, "name": fn.get("name", ""),
                                              "arguments": args if isinstance(args, dict) else {}}}
        if call.get("id"):
            entry["id"] = call["id"]
        out.append(entry)
    return out
