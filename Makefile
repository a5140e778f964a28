# Two entry points for a fresh clone: `make demo` (the main job) and `make test`.
# Each creates .venv if it is missing: torch first (CPU wheel by default), then the package.
# TORCH_SPEC goes to pip unquoted, so it may carry pip options, e.g.
#   make test TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
OUT ?= runs/demo
SEED ?= 0
BIN := $(VENV)/bin

# The MONAI Label app's own environment (docs/monailabel.md): monailabel 0.8.5 needs numpy<2
# and pydicom<3, so it does not share .venv.
ML_VENV ?= .venv-monailabel
ML_BIN := $(ML_VENV)/bin
ML_APP := apps/monailabel

.PHONY: install test demo results results-page clean monailabel-env test-monailabel

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(BIN)/.installed

test: install
	$(BIN)/python -m pytest -q
	$(MAKE) test-monailabel

demo: install
	$(BIN)/segcft demo --out $(OUT) --seed $(SEED)

# Every report behind docs/results.md, then the page, in runs/results/ (hours at full scale on
# 2 cores; SCALE=small checks the chain in about 45 minutes). results-page regenerates docs/results.md
# from the reports in docs/bench/.
SCALE ?= full
results: install
	PATH="$(CURDIR)/$(BIN):$$PATH" SCALE=$(SCALE) scripts/reproduce_results.sh

results-page: install
	$(BIN)/segcft bench report --manifest docs/results.yaml --out docs/results.md

# torch first, then monailabel without its dependencies (they name torchvision and sam2, which
# do not work beside the CPU torch), then its other dependencies and segcft under the pins.
$(ML_BIN)/.installed: pyproject.toml $(ML_APP)/requirements.txt $(ML_APP)/constraints.txt
	test -x $(ML_BIN)/python || $(PYTHON) -m venv $(ML_VENV)
	$(ML_BIN)/python -m pip install --quiet --upgrade pip
	$(ML_BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(ML_BIN)/python -m pip install --quiet --no-deps -c $(ML_APP)/constraints.txt monailabel
	$(ML_BIN)/python -m pip install --quiet -r $(ML_APP)/requirements.txt -c $(ML_APP)/constraints.txt
	$(ML_BIN)/python -m pip install --quiet -e ".[test]" -c $(ML_APP)/constraints.txt
	touch $@

monailabel-env: $(ML_BIN)/.installed

# The app's integration test: a real server on a free local port. Without monailabel the
# test fails here instead of being skipped.
test-monailabel: monailabel-env
	SEGCFT_REQUIRE_MONAILABEL=1 $(ML_BIN)/python -m pytest -q tests/monailabel

clean:
	rm -rf $(VENV) $(ML_VENV) runs
