"""Does a conversation fit the model it goes to? Its tokens are counted with the
target's own tokenizer: the items rendered as chat messages through the child's
chat template (/apply-template), then /tokenize. The budget is the child's
context (`n_ctx` of its /props) less the reply's cap (max_output_tokens, or the
router's default cap). Over it, `truncation: "disabled"` (the default, as
OpenAI's) is a 400 with the figures; `"auto"` drops the oldest items, never the
instructions, until the rest fits.

The target is loaded for this if it is not running (the relay that follows
finds it ready: no second swap); the calls take none of its slots.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from router.backend.child import ChildProcess
from router.catalogue.config import ModelSpec
from router.core.manager import ModelManager, ModelUnavailable
from router.http.app_keys import API_KEY, MANAGER
from router.http.errors import HTTPError
from router.http.request import servable_model
from router.http.responses_chain import Item, chat_messages, fit_items, item_text, too_long
from router.upstream.client import ChildClient
from router.upstream.pool import UpstreamError

TIMEOUT_S = 30.0  # one tokenizer call
ROUNDS = 8  # recounts after a cut, at most


async def fit_to_model(request: web.Request, name: str, data: dict[str, Any], items: list[Item],
                       truncation: str) -> list[Item]:
    """`items` as they fit the model `name` resolves to: unchanged, fewer ("auto"), or a 400."""
    manager = request.app[MANAGER]
    spec = servable_model(manager, name, request.get(API_KEY))
    if spec.url is not None:
        return items  # a server someone else runs counts for itself
    try:
        lease = await manager.acquire(spec.name, light=True)
    except ModelUnavailable:
        return items  # the relay that follows gives the error its usual shape
    async with lease:
        try:
            return await _fit(manager, lease.child, spec, data, items, truncation)
        except (UpstreamError, TimeoutError, ConnectionError):
            return items  # a child that cannot count: the relay that follows says what is wrong


async def _fit(manager: ModelManager, child: ChildProcess, spec: ModelSpec, data: dict[str, Any], items: list[Item],
               truncation: str) -> list[Item]:
    client = manager.client
    n_ctx = await _n_ctx(client, child)
    if n_ctx is None:
        return items
    cap = data.get("max_output_tokens")
    cap = cap if isinstance(cap, int) and cap > 0 else manager.config.max_tokens_default(spec)
    budget = n_ctx - cap
    instructions = data.get("instructions") if isinstance(data.get("instructions"), str) else None
    total = await _count(client, child, instructions, items)
    if total is None or total <= budget:
        return items
    if truncation != "auto":
        raise too_long(total, n_ctx, cap)
    kept = items
    costs = [await _tokens(client, child, item_text(i)) + 4 for i in items]  # 4: a message's own tokens
    for _ in range(ROUNDS):
        costs = costs[len(costs) - len(kept):]  # what is kept is always the newest items
        cut = fit_items(kept, costs, total, budget)
        if len(cut) == len(kept):
            cut = fit_items(kept, [total, *costs[1:]], total, budget)  # still over: one more goes
        kept = cut
        total = await _count(client, child, instructions, kept) or 0
        if total <= budget or len(kept) <= 1:
            break
    if total > budget:
        raise too_long(total, n_ctx, cap)
    return kept


async def _n_ctx(client: ChildClient, child: ChildProcess) -> int | None:
    answer = await client.get(child.base_url, "/props", timeout=TIMEOUT_S)
    try:
        n_ctx = answer.json()["default_generation_settings"]["n_ctx"]
    except (ValueError, KeyError, TypeError):
        return None
    return n_ctx if isinstance(n_ctx, int) and n_ctx > 0 else None


async def _count(client: ChildClient, child: ChildProcess, instructions: str | None, items: list[Item]) -> int | None:
    """The tokens of the prompt the child would build from these items."""
    answer = await client.post_json(child.base_url, "/apply-template",
                                    {"messages": chat_messages(instructions, items)}, timeout=TIMEOUT_S)
    if answer.status != 200:
        return None
    try:
        prompt = answer.json()["prompt"]
    except (ValueError, KeyError, TypeError):
        return None
    return await _tokens(client, child, prompt)


async def _tokens(client: ChildClient, child: ChildProcess, text: str) -> int:
    answer = await client.post_json(child.base_url, "/tokenize", {"content": text}, timeout=TIMEOUT_S)
    try:
        return len(answer.json()["tokens"])
    except (ValueError, KeyError, TypeError):
        raise HTTPError(502, f"the model server could not count tokens ({answer.status})",
                        "upstream_error") from None
