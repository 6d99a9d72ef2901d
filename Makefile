# transferrec: `make demo` and `make test` are all a new user needs; each builds .venv on first use.
SHELL := /bin/bash
VENV  := .venv
BIN   := $(VENV)/bin
PY    := $(BIN)/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false
export MPLBACKEND := Agg
export PYTHONHASHSEED := 0

.PHONY: install demo test check-sync nbtest pytest readme lab bench clean

install: $(STAMP)

# torch is pinned first so pip takes the CPU wheel on disk instead of a multi-GB CUDA build;
# recbole is installed without dependencies only for the MovieLens-100k files its wheel ships.
$(STAMP): settings.ini setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps recbole==1.2.1
	touch $(STAMP)

# the main job: baselines and transfer models under loo and cold, recommendations, a report in runs/ (about 7 minutes)
demo: install
	$(BIN)/transferrec quickstart

# fails when the notebooks and the generated module disagree, or a notebook is not clean
check-sync: install
	$(BIN)/nbdev_clean
	$(BIN)/nbdev_export
	$(PY) docs/make_readme.py nbs/index.ipynb README.md
	@if [ -n "$$(git status --porcelain -- nbs transferrec README.md)" ]; then \
	  git status --porcelain -- nbs transferrec README.md; \
	  echo "nbdev_clean, nbdev_export or make readme changed the files above: run them and commit the result (notebooks, transferrec/ and README.md together)."; \
	  exit 1; fi

nbtest: install
	$(BIN)/nbdev_test --n_workers 2 --timing

pytest: install
	$(BIN)/pytest -q tests

test: check-sync nbtest pytest

readme: install
	$(PY) docs/make_readme.py nbs/index.ipynb README.md

lab: install
	$(BIN)/jupyter lab --notebook-dir=nbs

# the full-size runs: every protocol of the transfer benchmark, then the notebooks' slow cells
bench: install
	for p in loo random cold; do $(PY) benchmarks/transfer.py --protocol $$p || exit 1; done
	$(BIN)/nbdev_test --flags slow --n_workers 1 --timing

clean:
	rm -rf _docs _proc runs .pytest_cache
