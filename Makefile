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

.PHONY: install demo test check-sync nbtest outputs pytest wheel-test docs docs-test browser readme lab bench bench-truncation bench-transfer bench-studies reproduce clean

install: $(STAMP)

# pip compiles one file at a time (a third of its time); the packages are compiled after it, on both cores. Compiled
# files must be there: with PYTHONDONTWRITEBYTECODE set (as on these machines) Python never writes them when importing
PIP   := $(PY) -m pip install -q --no-compile

# torch is pinned first so pip takes the CPU wheel on disk instead of a multi-GB CUDA build;
# recbole is installed without dependencies only for the MovieLens-100k files its wheel ships.
$(STAMP): settings.ini setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PIP) torch==2.13.0
	$(PIP) -e ".[dev]"
	$(PIP) --no-deps recbole==1.2.1
	$(PY) -m pip uninstall -q -y rfc3987-syntax   # Jupyter's optional jsonschema check: its import takes ~9 s, so Ray's agents miss their start deadline
	-$(PY) -m compileall -q -j 0 $(VENV)/lib/python3*/site-packages >/dev/null   # a few third-party files are not Python 3: pip skips them too
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

# every notebook run as nbdev_test runs it (slow cells skipped), and the outputs stored in it must be what it gives
nbtest: install
	$(PY) docs/nbcheck.py --n_workers 2

# store a notebook's outputs in it, cleaned (slow cells keep theirs, `#| varies` cells get none): make outputs NB=nbs/03_metrics.ipynb
outputs: install
	@test -n "$(NB)" || { echo 'usage: make outputs NB=nbs/XX.ipynb'; exit 1; }
	$(PY) docs/nbcheck.py --store $(NB)

# two processes, one test file each at a time (pytest-xdist): most tests are single-threaded, so this halves the wall time
pytest: install
	$(BIN)/pytest -q -n 2 --dist loadfile tests --ignore=tests/test_docs.py

# the package as users install it: sdist and wheel built, the wheel installed without extras into a fresh venv (its
# dependencies from the registries, torch the CPU build), `transferrec quickstart --fast` run outside the repository
wheel-test: install
	TRANSFERREC_WHEEL_TEST=1 $(BIN)/pytest -q tests/test_packaging.py -k wheel

# the checks that use both cores run one after the other; the browser's packages download while pip installs, and the
# docs (one core at most) are checked while the wheel installs into its own venv
test:
	$(MAKE) -j2 --output-sync=target install browser
	$(MAKE) check-sync nbtest pytest
	$(MAKE) -j2 --output-sync=target docs-test wheel-test

# the docs site: notebooks processed by nbdev and executed (slow cells skipped) -> _proc/ -> Sphinx + myst-nb -> _docs/
# executed notebooks are cached in _proc/.cache; `make docs DOCS_ARGS=--force` runs them all again
MATHJAX_VERSION := 3.2.2
MATHJAX := $(VENV)/share/mathjax/mathjax/tex-mml-chtml.js

docs: install $(MATHJAX)
	$(PY) docs/build.py $(DOCS_ARGS)

# MathJax served by the site itself (no CDN offline), from the npm registry
$(MATHJAX):
	rm -rf $(VENV)/share/mathjax && mkdir -p $(VENV)/share/mathjax/tmp
	cd $(VENV)/share/mathjax/tmp && npm pack --silent mathjax@$(MATHJAX_VERSION) >/dev/null && tar xzf mathjax-$(MATHJAX_VERSION).tgz
	mkdir -p $(VENV)/share/mathjax/mathjax/output
	cd $(VENV)/share/mathjax/tmp/package/es5 && cp -r tex-mml-chtml.js input a11y sre ui ../../../mathjax/ && cp -r output/chtml ../../../mathjax/output/
	rm -rf $(VENV)/share/mathjax/tmp
	test -f $@

# headless Chromium and its driver for the browser tests (Debian packages; we run as root)
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; else \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; fi

# the site in a real browser: pages load, plots, math, links, search, no console errors; screenshots in _docs/_screenshots/
docs-test: docs browser
	$(BIN)/pytest -q tests/test_docs.py

readme: install
	$(PY) docs/make_readme.py nbs/index.ipynb README.md

lab: install
	$(BIN)/jupyter lab --notebook-dir=nbs

# speed and scale against sentence-transformers and FAISS (the `bench` extra): benchmarks/results.{json,md}; then reading
# a 2 GB Amazon file (formats.json), a 1 GB CSV with a bad line near its end (bad_csv.json), the HTTP service (serve.json)
# and the batch jobs on Ray (scale.json)
bench: install
	$(PIP) -e ".[bench]"
	nice -n 10 $(PY) benchmarks/speed.py
	nice -n 10 $(PY) benchmarks/formats.py
	nice -n 10 $(PY) benchmarks/bad_csv.py
	@command -v wrk >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null)
	nice -n 10 $(PY) benchmarks/serve.py
	nice -n 10 $(PY) benchmarks/scale.py

# the cross-encoder's validation quality with truncated histories vs the seed's 50 items in 512 tokens (about 40 minutes
# on 2 cores; kept out of `make bench` for its length): the truncation section of benchmarks/results.{json,md}
bench-truncation: install
	$(PIP) -e ".[bench]"
	nice -n 10 $(PY) benchmarks/speed.py --only truncation --threads 2

# quality: every protocol of the transfer benchmark on ml-100k, the tuned-encoder model (its own half hour) and the
# pretrained vs random-init encoder on cold items over three seeds (about 1.5 hours on 2 cores): benchmarks/transfer*.{md,json}
bench-transfer: install
	for p in loo random cold; do $(PY) benchmarks/transfer.py --protocol $$p || exit 1; done
	$(PY) benchmarks/transfer.py --protocol loo --models sequential-text-tuned --merge
	$(PY) benchmarks/transfer.py --protocol cold --models pop,sequential-id,sequential-text,sequential-scratch,sequential-text+content --seeds 0,1,2
	$(PY) benchmarks/transfer.py --protocol loo --seeds 0,1,2 --jobs 2 \
	  --models pop,itemknn,ease,sequential-id,sequential-text,sequential-text+id,sequential-text+id+repeats
	$(MAKE) bench-studies

# the experiments behind issue-sized claims, each resumable and selected on the valid part (about 6 hours on 2 cores):
# the repeat bias, the tuning search and its one test read, the cross-encoder on EASE's top 50 over three seeds, and
# the cold-start search (candidates, content scorers, fusion grid, diagnostics, one test read, then finer priors on
# valid only, the chosen model on five fresh splits, the encoder tuned to predict popularity on valid and its one
# read on five more): nbs/results/*/
COLD = nbs/results/cold/measure.py
bench-studies: install
	$(PY) nbs/results/repeats/measure.py --seeds 0,1,2
	$(PY) nbs/results/sequential_search/search.py
	$(PY) nbs/results/sequential_search/search.py --test-read --seeds 0,1,2
	for s in 0 1 2; do $(PY) nbs/results/cross_encoder/measure.py --seed $$s || exit 1; done
	$(PY) nbs/results/cross_encoder/measure.py --merge
	$(PY) $(COLD) search --seeds 0 && $(PY) $(COLD) content --seeds 0
	$(PY) $(COLD) search --seeds 1,2 --only 'text (default);text, 1 expert;text, adaptor lr 1e-4;text, frozen adaptor (whitening only)'
	$(PY) $(COLD) diagnose && $(PY) $(COLD) fusion --seeds 0,1,2
	$(PY) $(COLD) test --winner 'text (default) + content 2 + pop prior 1'
	$(PY) $(COLD) prior --seeds 0,1,2
	$(PY) $(COLD) more-seeds --seeds 3,4,5,6,7
	$(PY) $(COLD) tuned-prior --seeds 0,1,2 && $(PY) $(COLD) tuned-prior-test --seeds 8,9,10,11,12

# every notebook at full size, slow cells included (hours on a CPU; the study records its results in nbs/results/)
reproduce: install
	TRANSFERREC_FULL=1 $(BIN)/nbdev_test --flags slow --n_workers 1 --timing

clean:
	rm -rf _docs _proc runs .pytest_cache
