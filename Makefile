# The two commands a newcomer runs: `make demo` and `make test`. Both install first.
VENV   ?= .venv
PYTHON := $(VENV)/bin/python
# 2 threads on the 2-core reference machine; override with e.g. `make test THREADS=8`.
THREADS ?= 2
RUN    := OMP_NUM_THREADS=$(THREADS) MKL_NUM_THREADS=$(THREADS) $(PYTHON)

.PHONY: install demo test flops clean

install:
	bash tools/install.sh

demo: install
	$(RUN) tools/demo/backbone_demo.py

test: install
	$(RUN) -m pytest tests -q

flops: install
	$(RUN) tools/analysis/get_flops.py

clean:
	rm -rf work_dirs .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
