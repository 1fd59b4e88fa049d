"""The conversation of a Responses API request, as the child receives it: the
input items of every earlier response and its output items, oldest first, then
the new request's own input (api/responses.py reads the chain from the store).
The request's `instructions` are its own: those of earlier turns are not carried
(OpenAI's rule), and they are never dropped to fit.

Fitting a context: `fit_items` drops the oldest items until the tokens counted
for the rest fit the budget; `chat_messages` renders items as the chat messages
whose template a child applies (/apply-template), to count them with the
target's own tokenizer. Pure functions: no I/O.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from typing import Any

from router.http.errors import HTTPError

Item = dict[str, Any]


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(16)}"


def input_items(value: Any) -> list[Item]:
    """A request's `input` as a list of items: a string is one user message (OpenAI's rule)."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": value}]}]
    if isinstance(value, list) and all(isinstance(i, dict) for i in value):
        return list(value)
    raise HTTPError(400, "'input' must be a string or a list of input items", code="invalid_input")


def with_ids(items: Sequence[Item]) -> list[Item]:
    """The items as they are kept: each with an id (`msg_...`), as OpenAI lists them."""
    out = []
    for item in items:
        if "id" not in item:
            kind = item.get("type", "message")
            item = {"id": new_id("msg" if kind == "message" else kind[:8]), "type": kind, **item}
        out.append(item)
    return out


def expand(chain: Sequence[tuple[Sequence[Item], Sequence[Item]]], new: Sequence[Item]) -> list[Item]:
    """Every earlier turn's input and output items, oldest first, then the new input. Items kept
    with ids the router added are sent as they came (a child may reject unknown fields: none are)."""
    out: list[Item] = []
    for sent, got in chain:
        out.extend(sent)
        out.extend(i for i in got if i.get("type") != "reasoning")  # a child's thoughts are not replayed
    out.extend(new)
    return out


def chat_messages(instructions: str | None, items: Sequence[Item]) -> list[dict[str, Any]]:
    """Chat messages with the same text as the items, for counting their tokens."""
    out: list[dict[str, Any]] = [{"role": "system", "content": instructions}] if instructions else []
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            out.append({"role": _role(item.get("role")), "content": item_text(item)})
        elif kind == "function_call":
            out.append({"role": "assistant", "content": "", "tool_calls": [{
                "id": str(item.get("call_id", "")), "type": "function",
                "function": {"name": str(item.get("name", "")), "arguments": str(item.get("arguments", ""))}}]})
        elif kind == "function_call_output":
            out.append({"role": "tool", "tool_call_id": str(item.get("call_id", "")),
                        "content": _text(item.get("output"))})
        else:
            out.append({"role": "user", "content": json.dumps(item)})
    return out


def _role(role: Any) -> str:
    return role if role in ("user", "assistant", "system") else ("system" if role == "developer" else "user")


def item_text(item: Item) -> str:
    return _text(item.get("content"))


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_text(p.get("text", "")) if isinstance(p, dict) else _text(p) for p in content)
    return "" if content is None else json.dumps(content)


def fit_items(items: Sequence[Item], costs: Sequence[int], total: int, budget: int) -> list[Item]:
    """Drop the oldest items until `total` (the tokens of all of them) less the `costs` of those
    dropped fits `budget`; a tool call's output goes with its call. The newest item stays:
    a request that does not fit even so is refused by the caller."""
    start = 0
    while total > budget and start < len(items) - 1:
        total -= costs[start]
        start += 1
        while start < len(items) - 1 and items[start].get("type") == "function_call_output":
            total -= costs[start]
            start += 1
    return list(items[start:])


def too_long(tokens: int, n_ctx: int, max_output: int) -> HTTPError:
    """OpenAI's answer to a conversation over the context with truncation disabled, with the figures."""
    return HTTPError(400, f"the conversation is {tokens} tokens, and the model's context is {n_ctx} tokens with "
                     f"{max_output} kept for the reply (max_output_tokens): {n_ctx - max_output} for the input. "
                     "Send truncation: \"auto\" to drop the oldest items, or start a new conversation.",
                     code="context_length_exceeded")
