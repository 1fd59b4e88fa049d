"""llama-router: one port, many llama.cpp models."""

__version__ = "0.1.0"
