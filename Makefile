# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv and install the project; torch==2.13.0 is installed only when the venv
# cannot import torch (that pin matches the local CPU wheel; an unpinned torch pulls CUDA).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.autotune-installed

.PHONY: install demo test lint bench benchmarks clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "torch==2.13.0"
	# The constraint keeps dev extras (lightning, accelerate) from replacing the CPU torch.
	$(PY) -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > $(VENV)/torch-pin.txt
	$(PY) -m pip install --quiet -c $(VENV)/torch-pin.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The main job on an example: a 2-minute search, stored in SQLite (./autotune.db, no server).
demo: $(STAMP)
	$(VENV)/bin/autotune search examples/mlp_digits.py --budget 2m --storage sqlite:///autotune.db -o tuned.yaml
	$(VENV)/bin/autotune show tuned.yaml

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check autotune tests examples benchmarks scripts
	$(VENV)/bin/mypy autotune
	$(VENV)/bin/mypy --strict --explicit-package-bases benchmarks

bench: $(STAMP)
	$(PY) benchmarks/runtime_bench.py

# The benchmark suite behind BENCHMARKS.md (about 15 minutes per workload on 2 cores).
benchmarks: $(STAMP)
	$(PY) -m benchmarks.suite

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
