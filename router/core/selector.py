"""Selectors: a virtual model id served by one of its targets, chosen per request
(llama-swap's `selectors`, internal/server/selector.go; issue #27).

Pure, like the scheduler: the choice reads the targets' states and, for
`spillover`, the requests each target has in flight through the selector; it
returns the targets in the order ModelManager.acquire tries them (each one's
`fallbacks` follow it). The first is llama-swap's choice; the others follow in
the selector's order, so a target that cannot serve (file missing, too big,
load failed, queue full, deadline) hands the request to the next.

- warm: the first target that is loaded, else the first one loading, else the first;
- pin: the first target, always;
- spillover: loaded (or loading, or busy) targets take requests up to `spillover`
  in flight each, the least busy first (ties take turns); past that the first
  target that is stopped is loaded; when none is left, the least busy again.
  A target that is stopping counts neither as loaded nor as stopped (llama-swap
  answers 503 when every target is stopping; here they are tried in order, and
  the request waits for the first one's next load).
"""

from __future__ import annotations

from collections.abc import Mapping

from router.catalogue.config import SelectorSpec
from router.core.scheduler import State

WARM, PIN, SPILLOVER = "warm", "pin", "spillover"


def order(selector: SelectorSpec, states: Mapping[str, State], inflight: Mapping[str, int] | None = None,
          turn: int = 0) -> list[str]:
    """The selector's targets in the order to try them. `states`: each target's (a target
    missing is stopped); `inflight`: spillover's requests in flight per target; `turn`:
    spillover's round-robin counter among equally busy targets."""
    targets = list(selector.targets)
    if selector.strategy == WARM:
        first = _first_in(targets, states, State.READY) or _first_in(targets, states, State.STARTING)
    elif selector.strategy == SPILLOVER:
        first = spillover_pick(selector, states, inflight or {}, turn)[0]
    else:
        first = None
    if first is None or first not in targets:
        return targets
    return [first, *(t for t in targets if t != first)]


def spillover_pick(selector: SelectorSpec, states: Mapping[str, State], inflight: Mapping[str, int],
                   turn: int) -> tuple[str | None, bool]:
    """llama-swap's strategySpillover: the target to reserve, and whether the turn was taken
    (a choice among equally busy targets moves the round-robin on). None: every target stops."""
    active, cold = [], []
    for t in selector.targets:
        state = states.get(t, State.STOPPED)
        if state is State.STOPPING:
            continue
        if state in (State.READY, State.STARTING) or inflight.get(t, 0) > 0:
            active.append(t)
        else:
            cold.append(t)
    if not active:
        return (cold[0] if cold else None), False
    if min(inflight.get(t, 0) for t in active) < selector.spillover or not cold:
        return _least_busy(active, inflight, turn), True
    return cold[0], False


def _least_busy(targets: list[str], inflight: Mapping[str, int], turn: int) -> str:
    least = min(inflight.get(t, 0) for t in targets)
    tied = [t for t in targets if inflight.get(t, 0) == least]
    return tied[turn % len(tied)]


def _first_in(targets: list[str], states: Mapping[str, State], wanted: State) -> str | None:
    return next((t for t in targets if states.get(t, State.STOPPED) is wanted), None)


class Reservations:
    """Spillover's requests in flight per selector and target, and each selector's turn:
    a request reserves its target when it is chosen (so the requests arriving together
    spread) and gives it back when it ends."""

    def __init__(self) -> None:
        self._inflight: dict[str, dict[str, int]] = {}
        self._turn: dict[str, int] = {}

    def choose(self, selector: SelectorSpec, states: Mapping[str, State]) -> tuple[list[str], str | None]:
        """`order`, and the target reserved for the request (spillover's first; release it with
        `release`), else None."""
        if selector.strategy != SPILLOVER:
            return order(selector, states), None
        counts = self._inflight.setdefault(selector.id, {})
        turn = self._turn.get(selector.id, 0)
        first, took_turn = spillover_pick(selector, states, counts, turn)
        if took_turn:
            self._turn[selector.id] = turn + 1
        ordered = order(selector, states, counts, turn)
        if first is not None:
            counts[first] = counts.get(first, 0) + 1
        return ordered, first

    def release(self, selector_id: str, target: str) -> None:
        counts = self._inflight.get(selector_id, {})
        if counts.get(target, 0) > 0:
            counts[target] -= 1

    def move(self, selector_id: str, old: str, new: str) -> None:
        """A request reserved `old` but `new` serves it (old could not): count it on `new`."""
        self.release(selector_id, old)
        counts = self._inflight.setdefault(selector_id, {})
        counts[new] = counts.get(new, 0) + 1

    def inflight(self, selector_id: str) -> dict[str, int]:
        return dict(self._inflight.get(selector_id, {}))
