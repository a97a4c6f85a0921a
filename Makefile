# The two set-up commands: `make demo` runs the main job, `make test` runs the tests.
# Each creates .venv on first use. torch is installed first, pinned to the CPU build on these
# machines' disk: a looser range makes pip download a multi-GB CUDA build.
VENV   := .venv
PYTHON := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast bench screenshot browser-deps clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q torch==2.13.0
	$(PYTHON) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)  ## a 16-trial TPE job on digits, embedded Ray and MLflow (tuner_runs/)
	$(VENV)/bin/tuner run examples/digits-mlp.yaml

test: $(STAMP)  ## the whole suite (8 to 21 minutes on 2 cores, by machine)
	$(PYTHON) -m pytest -q -p no:cacheprovider --timeout=600

test-fast: $(STAMP)  ## without the tests that start Ray
	$(PYTHON) -m pytest -q -m "not slow"

bench: $(STAMP)  ## the benchmarks in bench/ (about two and a quarter hours on 2 cores); results in bench/results/, summary in BENCHMARKS.md
	$(PYTHON) -m bench

screenshot: $(STAMP)  ## refresh docs/mlflow-ui.png with headless Chromium
	$(PYTHON) docs/screenshot.py

browser-deps:  ## Debian's Chromium and ChromeDriver, for the browser test and the screenshot (root)
	apt-get install -y chromium chromium-driver

clean:
	rm -rf tuner_runs .pytest_cache
