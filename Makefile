# The two commands a newcomer runs: `make demo` and `make test`. Both install first.
VENV   ?= .venv
PYTHON := $(VENV)/bin/python
# 2 threads on the 2-core reference machine; override with e.g. `make test THREADS=8`.
THREADS ?= 2
RUN    := OMP_NUM_THREADS=$(THREADS) MKL_NUM_THREADS=$(THREADS) $(PYTHON)

.PHONY: install demo demo-cls test flops bench clean

install:
	bash tools/install.sh

demo: install
	$(RUN) tools/demo/backbone_demo.py

# Classification demo: TNT-Ti trained through mmpretrain on generated shapes, then top-1.
demo-cls: install
	test -d data/shapes_cls || $(RUN) tools/data/make_shapes.py imagenet data/shapes_cls
	$(RUN) tools/train.py configs/demo/cls_shapes.py --work-dir work_dirs/demo_cls
	$(RUN) tools/test.py configs/demo/cls_shapes.py work_dirs/demo_cls/epoch_30.pth \
		--work-dir work_dirs/demo_cls

test: install
	$(RUN) -m pytest tests -q

flops: install
	$(RUN) tools/analysis/get_flops.py

clean:
	rm -rf work_dirs .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +

bench: install
	$(RUN) tools/analysis/benchmark.py
