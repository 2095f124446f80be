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

test: $(READY)
	$(PY) -m pytest -q

bench: $(READY)
	$(PY) -m bench

status: $(READY)
	$(PY) agent.py --mode status

signals: $(READY)
	$(PY) signals.py

clean:
	rm -rf $(VENV) var reports
