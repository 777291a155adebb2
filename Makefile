# mmvit3: `make test` sets everything up (see tools/setup_env.sh) and runs the
# tests; `make demo` sets up, then trains and evaluates the demo on CPU.
PYTHON ?= python3
export PYTHON

.PHONY: setup test demo
setup:
	bash tools/setup_env.sh

test: setup
	$(PYTHON) -m pytest tests

# The demo: a small synthetic dataset, the detector demo trained and evaluated
# on CPU (COCO box / mask AP), then the segmentation demo is one more command:
#   python tools/train.py configs/demo/upernet_vit3_demo.py
DEMO_WORK_DIR = work_dirs/mask_rcnn_vit3_demo
.PHONY: demo
demo: setup
	$(PYTHON) tools/make_demo_data.py
	$(PYTHON) tools/train.py configs/demo/mask_rcnn_vit3_demo.py --work-dir $(DEMO_WORK_DIR)
	$(PYTHON) tools/test.py configs/demo/mask_rcnn_vit3_demo.py $$(cat $(DEMO_WORK_DIR)/last_checkpoint) --work-dir $(DEMO_WORK_DIR)
