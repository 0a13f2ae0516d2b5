# Two commands from a fresh clone: `make demo` (the whole job) and `make test` (set up and run the tests).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
# Offline data: use ../shared/data when it is there (as in CI), else $DIGITREC_DATA, else download.
SHARED := $(abspath ../shared/data)
export DIGITREC_DATA ?= $(if $(wildcard $(SHARED)/mnist),$(SHARED),)

.PHONY: install demo test serve lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0   # the CPU build; never an unpinned torch (multi-GB CUDA build)
	$(PY) -m pip install -q -e '.[test,notebook,tensorboard,serve,export]'
	rm -f $(VENV)/.installed-* && touch $@

demo: $(STAMP)
	$(VENV)/bin/digitrec demo --out demo-out

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks tools notebooks
	$(VENV)/bin/pytest -q

serve: $(STAMP)
	$(VENV)/bin/digitrec serve

bench: $(STAMP)
	$(PY) benchmarks/train_speed.py

clean:
	rm -rf demo-out runs .pytest_cache
