"""Many hosts behind one router, on Ray (docs/cluster.md): one agent per node runs
the single-host core there; the front places requests and relays replies over HTTP.
Ray is an optional extra: only `llama-router --cluster` imports this package's Ray parts."""
