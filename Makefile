# Two commands on a fresh machine: `make demo` and `make test`. Both build .venv from uv.lock first.
PYTHON ?= python3
VENV := .venv
UV := .tools/bin/uv
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
# test processes (pytest-xdist; 0 runs the suite in this one); a test file stays on one process,
# so that its module fixtures are built once
PYTEST_WORKERS ?= 2

.PHONY: demo test lint format clean

$(UV):
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --target .tools uv

# Re-sync only when the dependency files change; `--frozen` installs exactly what uv.lock pins.
$(VENV)/.synced: pyproject.toml uv.lock hatch_build.py clipaudit/_scan.c | $(UV)
	$(UV) sync --frozen --extra dev --extra ray --compile-bytecode --python $(PYTHON)
	touch $@

demo: $(VENV)/.synced
	$(VENV)/bin/clipaudit demo --out runs/demo

test: $(VENV)/.synced
	$(VENV)/bin/ruff check clipaudit tests benchmarks docs hatch_build.py
	$(VENV)/bin/ruff format --check clipaudit tests benchmarks docs hatch_build.py
	$(VENV)/bin/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile

lint: $(VENV)/.synced
	$(VENV)/bin/ruff check clipaudit tests benchmarks docs hatch_build.py
	$(VENV)/bin/ruff format --check clipaudit tests benchmarks docs hatch_build.py

format: $(VENV)/.synced
	$(VENV)/bin/ruff format clipaudit tests benchmarks docs hatch_build.py
	$(VENV)/bin/ruff check --fix clipaudit tests benchmarks docs hatch_build.py

clean:
	rm -rf $(VENV) .tools runs .pytest_cache .ruff_cache build clipaudit/*.so clipaudit/*.pyd
