# Two commands do all set-up on a fresh machine (Python 3.11+):
#   make demo   a real rollout of the example playbook on the sandbox tenant
#   make test   lint and the whole test suite (what CI runs)
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

.PHONY: demo test lint bench
demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint
	$(VENV)/bin/pytest -q

# The benchmark suite (about 5 minutes): figures as text, then one JSON line.
bench: $(STAMP)
	$(VENV)/bin/python benchmarks/run.py
