# Two entry points: `make book` and `make test`. Each bootstraps .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: book test lint data clean

$(STAMP): requirements.txt pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 > /dev/null
	touch $(STAMP)

data: $(STAMP)
	$(BIN)/python -m captionlib.data.shapeworld

book: data
	$(BIN)/jupyter-book build . --path-output . --warningiserror --keep-going
	@echo "Book: $(CURDIR)/_build/html/index.html"

test: $(STAMP)
	$(BIN)/ruff check captionlib tests benchmarks
	$(BIN)/ruff format --check captionlib tests benchmarks
	$(BIN)/python -m pytest tests
	$(BIN)/python -m pytest --nbmake --nbmake-timeout=1800 notebooks

lint: $(STAMP)
	$(BIN)/ruff check --fix captionlib tests benchmarks
	$(BIN)/ruff format captionlib tests benchmarks

clean:
	rm -rf _build .jupyter_cache
