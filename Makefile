# The two commands of the README: `make demo` and `make test`.
PY ?= python

.PHONY: install demo test bench
install:
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"

demo: install
	$(PY) -m tdd_video.demo

test: install
	OMP_NUM_THREADS=2 $(PY) -m pytest tests
