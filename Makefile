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

.PHONY: demo test lint bench postgres rsyslog compile
demo: compile
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint postgres rsyslog compile
	$(VENV)/bin/pytest -q

# The tool's own modules byte-compiled ahead: an editable install is not, and where
# PYTHONDONTWRITEBYTECODE is set nothing ever writes them, so every command would compile them
# again as it starts (half a second of CPU). Only what changed is compiled again.
compile: $(STAMP)
	@$(VENV)/bin/python -m compileall -q provisioner >/dev/null

# The shared-state tests start a real PostgreSQL (Debian's), as the postgres user when run as
# root; a machine without it gets it here (CI runs as root).
postgres:
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || { \
	  echo "installing PostgreSQL (Debian's postgresql) for the shared-state tests"; \
	  apt-get install -y -q postgresql >/dev/null || \
	  { apt-get update -q >/dev/null && apt-get install -y -q postgresql >/dev/null; }; }

# The audit-forwarding tests start a real syslog collector over TLS: Debian's rsyslog with
# its OpenSSL driver.
rsyslog:
	@test -e /usr/lib/*/rsyslog/lmnsd_ossl.so || { \
	  echo "installing rsyslog (Debian's rsyslog, rsyslog-openssl) for the audit-forwarding tests"; \
	  apt-get install -y -q rsyslog rsyslog-openssl >/dev/null || \
	  { apt-get update -q >/dev/null && apt-get install -y -q rsyslog rsyslog-openssl >/dev/null; }; }

# The benchmark suite (about 15 minutes): figures as text, then one JSON line.
bench: compile
	$(VENV)/bin/python benchmarks/run.py
