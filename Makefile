# Two entry points, as the README's quick start says: `make demo` and `make test`.
# Both create .venv on first use and install exactly the versions pinned in requirements.lock.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTHON ?= python3

.PHONY: demo test test-all bench lock clean

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "seqlife needs Python 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	@touch $(STAMP)

demo: $(STAMP)          ## install, then run the whole lifecycle on a synthetic cohort
	$(VENV)/bin/seqlife demo

test: $(STAMP)          ## install, start PostgreSQL if down, run the default suite (no slow tests)
	bash .ci/services
	$(PY) -m pytest -p no:cacheprovider -n auto

test-all: $(STAMP)      ## the default suite plus the slow scale tests
	bash .ci/services
	$(PY) -m pytest -p no:cacheprovider -n auto -m ""

bench: $(STAMP)         ## performance ratios against reference tools (not part of the tests)
	$(PY) bench/run

lock:                   ## re-resolve dependencies and rewrite requirements.lock
	$(PYTHON) -m venv /tmp/seqlife-lock && /tmp/seqlife-lock/bin/pip install -q -U pip && \
	  /tmp/seqlife-lock/bin/pip install -q ".[test]" && \
	  /tmp/seqlife-lock/bin/pip freeze --exclude-editable | grep -v '^seqlife' > requirements.lock

clean:
	rm -rf $(VENV) .seqlife
