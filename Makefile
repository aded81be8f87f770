# The two commands of the quick start. Each does its own idempotent set-up.
BERTH_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/berth
VENV := $(BERTH_CACHE)/venv
export BERTH_CACHE

.PHONY: setup demo test test-throttled lint

setup:
	@bash scripts/setup-host.sh

demo: setup
	@$(VENV)/bin/python scripts/demo.py

# The slow half (builds, VMs) and the rest side by side (scripts/test.py). The throttled
# boot costs several normal boots: it stays out of the suite's budget.
test: setup
	@$(VENV)/bin/python scripts/test.py $(PYTEST_ARGS)

test-throttled: setup
	@$(VENV)/bin/python -m pytest -m throttled $(PYTEST_ARGS)

lint: setup
	@$(VENV)/bin/ruff check builder updater qemu cli tests bench scripts
	@# qemu/ is a namespace package beside PyPI's qemu.qmp: name its files.
	@$(VENV)/bin/mypy --explicit-package-bases builder updater cli qemu/*.py bench/*.py
