# The two commands: `make run` (trade a sample session, all offline) and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
READY := $(VENV)/.ready

.PHONY: run test bench status signals clean

$(READY): requirements.txt scripts/ensure-venv.sh
	@scripts/ensure-venv.sh
	@touch $@

run: $(READY)
	$(PY) agent.py --force

# Each run has a temp folder of its own (two suites at once on one machine never clean up each
# other's), removed afterwards whatever the outcome.
test: $(READY)
	@scripts/ensure-chromium.sh
	$(VENV)/bin/lint-imports --no-cache
	@base=$$(mktemp -d "$${TMPDIR:-/tmp}/catalyst-pytest-XXXXXX"); \
	$(PY) -m pytest -q --basetemp="$$base/t"; status=$$?; rm -rf "$$base"; exit $$status

bench: $(READY)
	$(PY) -m bench

status: $(READY)
	$(PY) agent.py --mode status

signals: $(READY)
	$(PY) signals.py

clean:
	rm -rf $(VENV) var reports
