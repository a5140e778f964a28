# Two entry points for a fresh clone: `make demo` (the main job) and `make test`.
# Each creates .venv if it is missing: torch first (CPU wheel by default), then the package.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
OUT ?= runs/demo
SEED ?= 0
BIN := $(VENV)/bin

.PHONY: install test demo clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(BIN)/.installed

test: install
	$(BIN)/python -m pytest -q

demo: install
	$(BIN)/segcft demo --out $(OUT) --seed $(SEED)

clean:
	rm -rf $(VENV) runs
