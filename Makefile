# Tasklane — the two commands:  make run  (the local stack)  and  make test  (the suite).
# Both create .venv and install what they need; PostgreSQL and Redis are found on
# their usual ports or started privately under .tasklane/ (see README).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)

.PHONY: run test lint unit venv bench package clean stop-services

$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Tasklane needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

venv: $(STAMP)

run: venv
	$(BIN)/python -m chalicelib.local run

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: venv lint
	$(BIN)/python -m pytest

unit: venv
	$(BIN)/python -m pytest tests/unit

bench: venv
	$(BIN)/python -m bench

package: venv
	bash infra/package.sh

stop-services: venv
	$(BIN)/python -m chalicelib.devservices stop --state-dir .tasklane

clean: stop-services
	rm -rf $(VENV) .tasklane
