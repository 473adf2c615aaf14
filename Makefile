# Two entry points for a fresh machine with Python >= 3.11 and pip:
#   make demo   install, generate the bundled sample dataset, train and evaluate on it
#   make test   install with the test extras and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SAMPLE := sample_data/inspection

.PHONY: install demo test clean

$(BIN)/transferlab: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[cpu,dev]"
	touch $@

install: $(BIN)/transferlab

demo: install
	$(BIN)/transferlab sample $(SAMPLE)
	$(BIN)/transferlab inspect $(SAMPLE)
	$(BIN)/transferlab train $(SAMPLE) --runs-dir runs --name demo-$$(date +%Y%m%d-%H%M%S)

test: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q -n 2

clean:
	rm -rf $(VENV) sample_data runs .pytest_cache
