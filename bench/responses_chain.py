"""The router's time to expand a long conversation by previous_response_id:
`python -m bench.responses_chain [--turns 50] [--repeat 2000]`.

Keeps a conversation of `--turns` turns (each a ~60-word user message and a
~60-word reply) in a response store on a temporary file, then times what
POST /v1/responses does before it relays: read the chain in one query
(core/response_store.py) and expand it into the child's input
(http/responses_chain.py). Prints the median and the 99th percentile;
goal (issue #26): under 2 ms for 50 turns.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from router.core.response_store import ResponseStore, Stored, owner_of
from router.http.responses_chain import expand, input_items, with_ids

WORDS = "the keeper climbed the stairs of the lighthouse to light the lamp before the storm came in " * 4


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--turns", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=2000)
    args = ap.parse_args(argv)
    owner = owner_of("bench-key-0123456789")
    with tempfile.TemporaryDirectory() as d:
        store = ResponseStore(Path(d) / "responses.sqlite")
        previous = None
        for i in range(args.turns):
            out = [{"type": "message", "id": f"msg_{i}", "role": "assistant", "status": "completed",
                    "content": [{"type": "output_text", "text": f"{i} {WORDS}", "annotations": []}]}]
            rid = f"resp_{i:04d}"
            store.put(owner, Stored(rid, previous, "m", time.time(), with_ids(input_items(f"{i} {WORDS}")), out,
                                    {"id": rid, "output": out}), 0, 0)
            previous = rid
        assert previous is not None
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            chain = store.chain(owner, previous)
            assert chain is not None
            items = expand(chain, input_items("next"))
            times.append(time.perf_counter() - t)
        store.close()
    assert len(items) == 2 * args.turns + 1
    times.sort()
    median, p99 = statistics.median(times) * 1000, times[int(len(times) * 0.99)] * 1000
    print(f"expand a {args.turns}-turn chain ({len(items)} items): median {median:.3f} ms, p99 {p99:.3f} ms "
          f"(goal < 2 ms): {'ok' if median < 2 else 'over'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
