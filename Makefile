# osteopano: `make demo` runs the main job, `make test` runs the tests.
# Both create .venv and install the project (torch/torchvision pinned in pyproject.toml).
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
DEMO   ?= demo-output
SEED   ?= 11

.PHONY: install demo test browser bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all,dev]'
	touch $(STAMP)

install: $(STAMP)

# The browser test drives Debian's chromium (Playwright's own browser download does not work offline).
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -q && apt-get install -y -q chromium)

demo: install
	$(BIN)/osteopano synth $(DEMO)/dev --n 400 --seed $(SEED)
	$(BIN)/osteopano inspect $(DEMO)/dev/manifest.csv

test: install browser
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache
