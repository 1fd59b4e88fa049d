"""One backend child: its launch plan (argv and environment), the process itself,
its KV cache files. Knows the catalogue; knows nothing of scheduling or HTTP."""
