# osteopano: `make demo` runs the main job, `make test` runs the tests.
# Both create .venv and install the project (torch/torchvision pinned in pyproject.toml).
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
DEMO   ?= demo-output
SEED   ?= 11

.PHONY: install demo results test browser pacs-tools bench bench-reference clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all,scale,dev]'
	touch $(STAMP)

install: $(STAMP)

# The browser test drives Debian's chromium (Playwright's own browser download does not work offline).
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -q && apt-get install -y -q chromium)

# The PACS tests start Debian's Orthanc with its DICOMweb plugin; the DICOM-out tests validate with dciodvfy.
ORTHANC_DICOMWEB = /usr/share/orthanc/plugins/libOrthancDicomWeb.so
pacs-tools:
	@command -v Orthanc >/dev/null 2>&1 && command -v dciodvfy >/dev/null 2>&1 && test -e $(ORTHANC_DICOMWEB) \
	    || (apt-get update -q && apt-get install -y -q orthanc orthanc-dicomweb dicom3tools)

# The study's design end to end on SYNTHETIC phantom data (not clinical evidence):
# a 400-image development set with Klemetti-derived labels (C1 normal; C2, C3 osteoporosis),
# the internal test split, then a separately generated 100-image external set with DXA labels.
demo: install
	rm -rf $(DEMO)
	$(BIN)/osteopano synth $(DEMO)/dev --n 400 --seed $(SEED)
	$(BIN)/osteopano synth $(DEMO)/external --n 100 --seed $$(( $(SEED) + 1 ))
	$(BIN)/osteopano inspect $(DEMO)/dev
	$(BIN)/osteopano train $(DEMO)/dev --out $(DEMO)/run --seed $(SEED) \
	    --label-column klemetti --label-map C1=normal,C2=osteoporosis,C3=osteoporosis
	$(BIN)/osteopano evaluate $(DEMO)/run $(DEMO)/external --label-column label --out $(DEMO)/external-eval
	$(BIN)/osteopano export $(DEMO)/run
	$(BIN)/osteopano predict $(DEMO)/run/model.onnx $(DEMO)/external --engine onnx --out $(DEMO)/screening.csv
	$(BIN)/osteopano measure $(DEMO)/external --out $(DEMO)/mcw.csv --overlays $(DEMO)/mcw-overlays
	$(BIN)/osteopano predict $(DEMO)/run $(DEMO)/external/phantom_00000.png $(DEMO)/external/phantom_00001.png \
	    --measure --heatmaps $(DEMO)/heatmaps --report $(DEMO)/reports
	@echo "Demo finished: outputs in $(DEMO)/ -- all figures above are on SYNTHETIC phantom data, not clinical evidence."

# docs/results.md, written from a fresh `make demo` by the current code (it names the commit)
results: demo
	$(PY) benchmarks/results.py $(DEMO) --out docs/results.md

test: install browser pacs-tools
	$(BIN)/lint-imports
	$(PY) -m pytest -q -n 2

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache

# The study's Keras stack in its own virtualenv, for benchmarks/predict_speed.py --reference keras and
# benchmarks/train_speed.py (TensorFlow CPU; not needed by osteopano itself).
KERAS_VENV ?= .venv-keras
bench-reference: $(KERAS_VENV)/.installed

$(KERAS_VENV)/.installed:
	$(PYTHON) -m venv $(KERAS_VENV)
	$(KERAS_VENV)/bin/python -m pip install -q --upgrade pip
	$(KERAS_VENV)/bin/python -m pip install -q tensorflow-cpu pillow
	touch $@
