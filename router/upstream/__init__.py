"""The router's HTTP client to its children."""
