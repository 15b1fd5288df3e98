# Two commands on a fresh clone (only Python 3.10+ and make needed):
#   make demo   set up .venv, then generate synthetic pets, train, test and draw
#   make test   set up .venv, then run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup test demo clean

setup: $(STAMP)

# Re-install only when the declared dependencies change.
$(STAMP): setup.py pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python 3.10+ is needed, found " + sys.version.split()[0])'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

test: setup
	$(BIN)/python -m pytest tests

demo: setup
	$(BIN)/python -m datasets.synthetic --out data/synthetic

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
