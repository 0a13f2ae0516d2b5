# Two commands from a fresh clone: `make demo` (the whole job) and `make test` (set up and run the tests).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
# Offline data: use ../shared/data when it is there (as in CI), else $DIGITREC_DATA, else download.
SHARED := $(abspath ../shared/data)
export DIGITREC_DATA ?= $(if $(wildcard $(SHARED)/mnist),$(SHARED),)

# torch==2.13.0, never unpinned. Where pip's own index or wheel folder holds the CPU build (this project's
# machines do), that is what it takes; on PyPI, Linux torch is the multi-GB CUDA build, so there run
# `make install TORCH_INDEX=https://download.pytorch.org/whl/cpu` (PyTorch's CPU-only index).
TORCH_INDEX ?=

.PHONY: install demo test serve notebook lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e '.[test,notebook,tensorboard,serve,export]'
	rm -f $(VENV)/.installed-* && touch $@

demo: $(STAMP)
	$(VENV)/bin/digitrec demo --out demo-out

# One pytest worker per core this process may use, at most 4 (0: no workers on a single core); each worker
# computes on one thread (tests/conftest.py). Not xdist's `-n auto`: with psutil it counts physical cores, one on
# a 2-vCPU machine whose two vCPUs are hyperthreads.
WORKERS ?= $(shell python3 -c "import os; n = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') \
	else (os.cpu_count() or 1); print(min(n, 4) if n > 1 else 0)")

test: lint
	$(VENV)/bin/pytest -q -n $(WORKERS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks tools notebooks

serve: $(STAMP)
	$(VENV)/bin/digitrec serve

# The tutorial, executed headless into out/tour.ipynb (its runs/ land in out/ too); to open it in Jupyter:
# pip install jupyterlab && jupyter lab notebooks/tour.ipynb
notebook: $(STAMP)
	mkdir -p out
	$(PY) -c "import nbclient, nbformat; nb = nbformat.read('notebooks/tour.ipynb', as_version=4); \
	nbclient.NotebookClient(nb, timeout=900, resources={'metadata': {'path': 'out'}}).execute(); \
	nbformat.write(nb, 'out/tour.ipynb'); print('wrote out/tour.ipynb')"

bench: $(STAMP)
	$(PY) benchmarks/train_speed.py

clean:
	rm -rf demo-out runs .pytest_cache
