# Entry points: `make book` and `make test` (CI), `make lab` (JupyterLab on the notebooks),
# `make book-student` (no solutions). Each bootstraps .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MATHJAX_VERSION := 3.2.2
MATHJAX := book/_static/mathjax
# the book executes its notebooks without progress bars (no widgets or stale bars in the HTML)
BOOK_ENV := TQDM_DISABLE=1

.PHONY: book book-student test unit browser-tests lint format data lab clean

$(STAMP): requirements.txt pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 > /dev/null
	touch $(STAMP)

# MathJax 3 from the npm registry, served from the book's own static files (no CDN)
$(MATHJAX)/tex-chtml.js:
	@command -v npm > /dev/null || { echo "npm is needed once to fetch MathJax $(MATHJAX_VERSION) (apt-get install npm)"; exit 1; }
	rm -rf $(MATHJAX).tmp && mkdir -p $(MATHJAX).tmp
	cd $(MATHJAX).tmp && npm pack --silent mathjax@$(MATHJAX_VERSION) > /dev/null && tar xzf mathjax-$(MATHJAX_VERSION).tgz
	mkdir -p $(MATHJAX).tmp/keep/output
	cd $(MATHJAX).tmp/package/es5 && cp -r tex-chtml.js input ui a11y adaptors ../../keep/ && cp -r output/chtml ../../keep/output/
	cp $(MATHJAX).tmp/package/LICENSE $(MATHJAX).tmp/keep/LICENSE
	rm -rf $(MATHJAX) && mv $(MATHJAX).tmp/keep $(MATHJAX) && rm -rf $(MATHJAX).tmp

data: $(STAMP)
	$(BIN)/python -m captionlib.data.shapeworld

book: data $(MATHJAX)/tex-chtml.js
	$(BOOK_ENV) $(BIN)/jupyter-book build . --path-output . --warningiserror --keep-going
	@echo "Book: $(CURDIR)/_build/html/index.html"

# the lecturer's student edition: the same pages without any solution (hide_solutions)
book-student: data $(MATHJAX)/tex-chtml.js
	$(BIN)/python book/_ext/student_edition.py student/_config.yml
	$(BOOK_ENV) $(BIN)/jupyter-book build . --config student/_config.yml --path-output student --warningiserror --keep-going
	@echo "Student edition: $(CURDIR)/student/_build/html/index.html"

lint: $(STAMP)
	$(BIN)/ruff check captionlib tests benchmarks book/_ext
	$(BIN)/ruff format --check captionlib tests benchmarks book/_ext

format: $(STAMP)
	$(BIN)/ruff check --fix captionlib tests benchmarks book/_ext
	$(BIN)/ruff format captionlib tests benchmarks book/_ext

unit: $(STAMP)
	$(BIN)/python -m pytest tests --ignore=tests/browser

# headless Chromium with no network against the built book (needs chromium + chromedriver)
browser-tests: $(STAMP)
	@command -v chromium > /dev/null && command -v chromedriver > /dev/null || \
		{ echo "installing Debian's chromium and chromium-driver for the browser tests"; \
		  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver > /dev/null; }
	$(BIN)/python -m pytest tests/browser

# the README's test command: lint, unit tests, execute every notebook by building the book
# (with -W: a warning, a traceback or a failing cell fails it), the student edition (from the
# same executed notebooks), then test the pages of both in a browser
test: lint unit
	$(MAKE) book
	$(MAKE) book-student
	$(MAKE) browser-tests

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks

clean:
	rm -rf _build student .jupyter_cache $(MATHJAX)
