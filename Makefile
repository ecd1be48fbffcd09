# Two commands do all the set-up on a fresh machine: each creates .venv and installs the project
# into it (once; again when pyproject.toml changes), then runs the main job or the tests.
#   make run    the embedded default: the paper's network on scikit-learn's 8x8 digits
#   make test   the whole test suite (what CI runs)
#   make quick  the fast tests only (pytest -m "not slow")
#   make lint   ruff's checks and format, mypy on the library (pyproject.toml [tool.ruff], [tool.mypy])
#   make docs   the documentation site into site/ (strict: a broken link or reference fails it)
VENV ?= .venv
PYTHON := $(VENV)/bin/python

.PHONY: run test quick lint docs

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -e ".[test]"
	touch $@

# glibc keeps the step's freed tensors in the heap instead of unmapping them (benchmarks/README.md,
# parallel_runs.py: a thousand times fewer page faults); only this command's process gets it.
MALLOC_TUNABLES := glibc.malloc.trim_threshold=268435456:glibc.malloc.mmap_threshold=16777216

run: $(VENV)/.installed
	GLIBC_TUNABLES=$${GLIBC_TUNABLES:-$(MALLOC_TUNABLES)} $(PYTHON) -m lightning_rect fit --config configs/digits.yaml

# Two pytest workers, one per core, each taking whole test files (a file's module fixtures, such as the
# compatibility matrix's wheel, are built once): 1.4x faster than one worker on the loaded 2-core machine.
# One OpenMP thread for pytest and every process it starts: the tests' nets are tiny, and on 2 cores
# a second thread per process only adds hand-offs (conftest.py sets torch's own count to 1 as well).
test: $(VENV)/.installed
	OMP_NUM_THREADS=1 $(PYTHON) -m pytest -q -n 2 --dist loadfile --durations=10

quick: $(VENV)/.installed
	OMP_NUM_THREADS=1 $(PYTHON) -m pytest -q -n 2 -m "not slow" --durations=5

# The documentation site (mkdocs.yml) into site/; strict, as tests/test_docs.py builds it. To read it
# while editing: $(VENV)/bin/python -m mkdocs serve (http://127.0.0.1:8000, rebuilt on every save).
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(PYTHON) -m mkdocs build --strict
	@echo "site/index.html; to browse while editing: $(PYTHON) -m mkdocs serve"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check lightning_rect tests benchmarks
	$(VENV)/bin/ruff format --check lightning_rect tests benchmarks
	$(VENV)/bin/mypy
