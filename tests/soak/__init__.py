"""A chaos soak under load: a real router, three tiny real models, hundreds of
clients, children killed and frozen, a full disk, catalogue reloads; then a
table of invariants (docs/reliability.md). `python -m tests.soak --help`."""
