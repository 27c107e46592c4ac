# The two commands of the README: `make demo` and `make test`.
PY ?= python

.PHONY: install demo test lint bench
install:
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,bench]"

demo: install
	$(PY) infer/img2vid.py --steps 4 --out outputs/demo/tdd_4step.gif

lint:
	$(PY) -m ruff check .

test: install lint
	OMP_NUM_THREADS=2 $(PY) -m pytest tests
