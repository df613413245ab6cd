# The two commands of the README:
#   make book   build the book on the embedded default (executes every chapter, then the HTML)
#   make test   the whole test suite (unit tests, every chapter under nbval, the book, a browser)
# Each creates the virtual environment in .venv and installs what is missing.

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.bertdims-installed
PRESET ?= default
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM = false

.PHONY: install book test smoke-book clean browser

install: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt requirements/data.txt requirements/extra.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements/constraints.txt -e ".[dev]"
	$(BIN)/python -m pip install -q -c requirements/constraints.txt -r requirements/extra.txt
	$(BIN)/python -m pip install -q --no-deps -r requirements/data.txt
	touch $@

book: $(STAMP)
	$(BIN)/bertdims book --preset $(PRESET)

browser:
	bash .ci/install-browser.sh

# Unit tests, then every chapter under nbval (smoke preset, parameters injected by papermill),
# then the book build and the real-browser check, all in one pytest run.
test: $(STAMP) browser
	rm -rf _build/nbval _build/test-results
	BERTDIMS_RESULTS=$(CURDIR)/_build/test-results $(BIN)/bertdims prepare --preset smoke --out _build/nbval
	BERTDIMS_REQUIRE_BROWSER=1 BERTDIMS_RESULTS=$(CURDIR)/_build/test-results $(BIN)/python -m pytest tests _build/nbval --nbval-lax -p no:cacheprovider

clean:
	rm -rf _build results
