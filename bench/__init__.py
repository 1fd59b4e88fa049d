"""Side-by-side benchmarks: direct llama-server, llama.cpp router mode, llama-router."""
