# The two commands: `make run` (trade a sample session, all offline) and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
READY := $(VENV)/.ready

.PHONY: run test test-fast bench status signals clean

$(READY): requirements.txt scripts/ensure-venv.sh
	@scripts/ensure-venv.sh
	@touch $@

run: $(READY)
	$(PY) agent.py --force

# Each run has a temp folder of its own (two suites at once on one machine never clean up each
# other's), removed afterwards whatever the outcome. The tests run in TEST_WORKERS processes (each
# with its own embedded PostgreSQL); `make test-fast` leaves out the slow lane (`-m slow`: the
# chaos runs and the whole sessions through the fake brokers), which `make test` and CI run.
TEST_WORKERS ?= 2
PYTEST = base=$$(mktemp -d "$${TMPDIR:-/tmp}/catalyst-pytest-XXXXXX"); \
	$(PY) -m pytest -q -n $(TEST_WORKERS) --basetemp="$$base/t"

test: $(READY)
	@scripts/ensure-chromium.sh
	$(VENV)/bin/lint-imports --no-cache
	@$(PYTEST); status=$$?; rm -rf "$$base"; exit $$status

test-fast: $(READY)
	$(VENV)/bin/lint-imports --no-cache
	@$(PYTEST) -m "not slow"; status=$$?; rm -rf "$$base"; exit $$status

bench: $(READY)
	$(PY) -m bench

status: $(READY)
	$(PY) agent.py --mode status

signals: $(READY)
	$(PY) signals.py

clean:
	rm -rf $(VENV) var reports
