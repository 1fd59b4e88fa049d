"""llama.cpp's own router-mode tests run against llama-router (`make test-llamacpp`; see __main__.py)."""
