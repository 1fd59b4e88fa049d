"""The HTTP API: request parsing, errors, auth, the proxy to children, and the
routes by audience (inference, the llama.cpp model API, admin, logs)."""
