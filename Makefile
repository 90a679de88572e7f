# The two commands a newcomer runs: `make demo` and `make test`. Both install first.
VENV   ?= .venv
# not PYTHON: that one, from the environment, names the interpreter tools/install.sh builds on
VENV_PYTHON := $(VENV)/bin/python
# 2 threads on the 2-core reference machine; override with e.g. `make test THREADS=8`.
THREADS ?= 2
# extra arguments for tools/train.py in the demos, e.g. `make demo TRAIN_ARGS=--amp` on a GPU
TRAIN_ARGS ?=
# pytest processes (pytest-xdist): the suite spends much of its time starting tools as processes,
# whose imports use one core, so two workers fill the two cores (15.5-18.5 instead of 21 min on
# the reference machine). At most 4 by default: each worker holds full-size models.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); echo $$(( n < 4 ? n : 4 )))
RUN    := OMP_NUM_THREADS=$(THREADS) MKL_NUM_THREADS=$(THREADS) $(VENV_PYTHON)

.PHONY: install wheelhouse demo demo-onnx det-data demo-chain demo-backbone demo-cls demo-seg demo-seg-trans2seg seg-data test test-quick flops bench bench-gpu clean

install:
	bash tools/install.sh

# Every file `make install` needs, for an install with no network (WHEELHOUSE=DIR make install):
# `make wheelhouse WHEELHOUSE=DIR [PYTHON_VERSION=3.12] [TORCH=system] [TNT_MM_MMCV_OPS=cuda]
# [HAVE=FILE of packages the target has]`.
wheelhouse:
	@test -n "$(WHEELHOUSE)" || { echo "usage: make wheelhouse WHEELHOUSE=DIR [PYTHON_VERSION=3.12]"; exit 2; }
	$${PYTHON:-python3} tools/wheelhouse.py $(WHEELHOUSE) --torch $(or $(TORCH),pip) \
		--mmcv-ops $(if $(filter cuda,$(TNT_MM_MMCV_OPS)),cuda,cpu) \
		$(if $(PYTHON_VERSION),--python-version $(PYTHON_VERSION)) $(if $(HAVE),--have $(HAVE))

# The main job: Faster R-CNN + FPN with a small TNT, trained through mmdet on generated shapes
# (COCO layout), evaluated with COCO AP, predictions drawn in work_dirs/demo_det/predictions.png.
DET_DATA := data/shapes_coco
DET_CKPT := work_dirs/demo_det/epoch_6.pth
det-data:
	test -f $(DET_DATA)/info.json || $(RUN) tools/data/make_shapes.py coco $(DET_DATA) --size 96 \
		--radius-range 0.15 0.3 --num-train 1600 --num-val 200

demo: install det-data
	@mkdir -p work_dirs/demo_det && date +%s > work_dirs/demo_det/started
	$(RUN) tools/train.py configs/demo/det_shapes.py --work-dir work_dirs/demo_det $(TRAIN_ARGS)
	$(RUN) tools/test.py configs/demo/det_shapes.py $(DET_CKPT) --work-dir work_dirs/demo_det
	$(RUN) tools/demo/detect_image.py configs/demo/det_shapes.py $(DET_CKPT) \
		$(DET_DATA)/val2017/00000[1-8].png --out work_dirs/demo_det/predictions.png
	@echo "make demo: $$(( $$(date +%s) - $$(cat work_dirs/demo_det/started) )) s wall time"

# The detection demo's checkpoint exported whole to ONNX (boxes, scores, labels out), checked
# against PyTorch and mmdet's DetInferencer on 8 validation images, then run by onnx_infer.py
# (onnxruntime, numpy, Pillow) into work_dirs/demo_det/onnx/. Trains the demo first if needed.
DET_ONNX := work_dirs/demo_det/faster_rcnn.onnx
DET_VAL8 := $(DET_DATA)/val2017/00000[1-8].png
demo-onnx: install det-data
	test -f $(DET_CKPT) || $(MAKE) demo
	$(RUN) tools/deployment/pytorch2onnx.py configs/demo/det_shapes.py $(DET_CKPT) \
		--shape 96 128 --dynamic --out $(DET_ONNX) --verify --images $(DET_VAL8) --time 10
	$(RUN) tools/deployment/onnx_infer.py $(DET_ONNX) $(DET_VAL8) --out work_dirs/demo_det/onnx

# TNT-S on a generated image: the pyramid's shapes and strides, and the params/FLOPs table.
demo-backbone: install
	$(RUN) tools/demo/backbone_demo.py

# Classification demo: a 6-block TNT-Ti trained through mmpretrain on generated shapes, then
# top-1. The data check also catches a folder written by an older version with other counts.
CLS_DATA := data/shapes_cls
CLS_DATA_CHECK := grep -qs '"train": 9600' $(CLS_DATA)/info.json
CLS_CKPT := work_dirs/demo_cls/epoch_12.pth
demo-cls: install
	@mkdir -p work_dirs/demo_cls && date +%s > work_dirs/demo_cls/started
	$(CLS_DATA_CHECK) || $(RUN) tools/data/make_shapes.py imagenet $(CLS_DATA) \
		--num-train 9600 --num-val 600
	$(RUN) tools/train.py configs/demo/cls_shapes.py --work-dir work_dirs/demo_cls $(TRAIN_ARGS)
	$(RUN) tools/test.py configs/demo/cls_shapes.py $(CLS_CKPT) \
		--work-dir work_dirs/demo_cls
	$(RUN) tools/demo/classify_images.py configs/demo/cls_shapes.py $(CLS_CKPT) \
		$$(ls $(CLS_DATA)/val/*/val_00*.png | head -8) --out work_dirs/demo_cls/predictions.png
	@echo "make demo-cls: $$(( $$(date +%s) - $$(cat work_dirs/demo_cls/started) )) s wall time"

# The pretrain-to-detection chain in miniature: the classification demo's checkpoint
# initialises the detection demo's backbone (configs/demo/det_shapes_chain.py).
demo-chain: demo-cls det-data
	$(RUN) tools/train.py configs/demo/det_shapes_chain.py --work-dir work_dirs/demo_det_chain $(TRAIN_ARGS)
	$(RUN) tools/test.py configs/demo/det_shapes_chain.py work_dirs/demo_det_chain/epoch_6.pth \
		--work-dir work_dirs/demo_det_chain

# Segmentation demo: TNT + UperNet trained through mmseg on generated shapes (ADE20K layout),
# then mIoU (with and without the background class) and a summary picture in
# work_dirs/demo_seg/predictions.png; VIS=1 also draws every validation image into vis/.
# UperNet learns this data from scratch within the budget; the paper's Trans2Seg head is
# `make demo-seg-trans2seg`.
SEG_DATA := data/shapes_ade
seg-data:
	test -d $(SEG_DATA) || $(RUN) tools/data/make_shapes.py ade $(SEG_DATA) --size 64 \
		--num-train 1500 --num-val 200

SEG_VAL_IMAGES = $$(ls $(SEG_DATA)/images/validation/*.jpg | head -8)
VIS ?= 0
demo-seg: install seg-data
	@mkdir -p work_dirs/demo_seg && date +%s > work_dirs/demo_seg/started
	$(RUN) tools/train.py configs/demo/seg_shapes_upernet.py --work-dir work_dirs/demo_seg $(TRAIN_ARGS)
	$(RUN) tools/test.py configs/demo/seg_shapes_upernet.py work_dirs/demo_seg/iter_3200.pth \
		--work-dir work_dirs/demo_seg $(if $(filter 1,$(VIS)),--show-dir work_dirs/demo_seg/vis)
	$(RUN) tools/demo/segment_images.py configs/demo/seg_shapes_upernet.py \
		work_dirs/demo_seg/iter_3200.pth $(SEG_VAL_IMAGES) --out work_dirs/demo_seg/predictions.png
	@echo "make demo-seg: $$(( $$(date +%s) - $$(cat work_dirs/demo_seg/started) )) s wall time"

demo-seg-trans2seg: install seg-data
	@mkdir -p work_dirs/demo_seg_trans2seg && date +%s > work_dirs/demo_seg_trans2seg/started
	$(RUN) tools/train.py configs/demo/seg_shapes.py --work-dir work_dirs/demo_seg_trans2seg $(TRAIN_ARGS)
	$(RUN) tools/test.py configs/demo/seg_shapes.py work_dirs/demo_seg_trans2seg/iter_3200.pth \
		--work-dir work_dirs/demo_seg_trans2seg \
		$(if $(filter 1,$(VIS)),--show-dir work_dirs/demo_seg_trans2seg/vis)
	$(RUN) tools/demo/segment_images.py configs/demo/seg_shapes.py \
		work_dirs/demo_seg_trans2seg/iter_3200.pth $(SEG_VAL_IMAGES) \
		--out work_dirs/demo_seg_trans2seg/predictions.png
	@echo "make demo-seg-trans2seg: $$(( $$(date +%s) - $$(cat work_dirs/demo_seg_trans2seg/started) )) s wall time"

test: install
	$(RUN) -m pytest tests -q -n $(TEST_WORKERS) --dist worksteal

# the loop while editing: everything but the tests that train or run tools end to end
test-quick: install
	$(RUN) -m pytest tests -q -m "not slow" -n $(TEST_WORKERS) --dist worksteal

flops: install
	$(RUN) tools/analysis/get_flops.py

clean:
	rm -rf work_dirs .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +

bench: install
	$(RUN) tools/analysis/benchmark.py cpu
	$(RUN) tools/analysis/benchmark.py sweep --plot work_dirs/bench/forward_vs_size.png

# On a CUDA machine: the Triton backend checked against the reference, then the GPU suite.
bench-gpu: install
	$(RUN) tools/analysis/check_triton_gpu.py
	$(RUN) tools/analysis/benchmark.py gpu --device cuda --amp bf16 --compile
