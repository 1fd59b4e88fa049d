"""Which models run: the pure scheduler, the manager that carries out its
decisions with children, events, idle unloads, reloads and KV persistence."""
