# The two entry points of the README. Both create .venv (once) and install what is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: main test demo lint

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

## main: the main job (a demo of the estimator on the exact linear-Gaussian model)
main: $(STAMP)
	$(PY) -m ucvae_lite demo

## test: unit, statistical and notebook tests, plus lint
test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	UCVAE_FAST=1 $(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .
