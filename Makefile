# One-line entry points: `make repro` (install + whole pipeline), `make test` (install + tests).
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# pytest-xdist processes of `make test`; each test file runs whole in one of them (module fixtures)
TEST_WORKERS ?= 2

.PHONY: install repro test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/pip install --disable-pip-version-check -q -e '.[test]'

repro: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

# `test` also installs the optional Ray engine (tests/extract/test_ray_engine.py) and the Debian
# packages labelme-examples (real VOC photos with COCO and VOC annotations, read by tests/data;
# never vendored) and chromium + chromium-driver (the headless browser of tests/serve/test_browser.py;
# no browser is downloaded).
DEBIAN_TEST_PACKAGES := labelme-examples chromium chromium-driver

test: install
	$(BIN)/pip install --disable-pip-version-check -q -e '.[test,ray]'
	@dpkg -s $(DEBIAN_TEST_PACKAGES) >/dev/null 2>&1 || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBIAN_TEST_PACKAGES) >/dev/null)
	$(MAKE) lint
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest -q --durations=25 -n $(TEST_WORKERS) --dist loadfile

# ruff: lint (pycodestyle, pyflakes, import order, bugbear) and format, as configured in pyproject.toml;
# `make test` runs it first, so a violation fails CI. `$(BIN)/ruff format .` fixes the format.
lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python benchmarks/pipeline.py
