# mmvit3: `make test` sets everything up (see tools/setup_env.sh) and runs the
# tests; `make demo` sets up, then trains and evaluates the demo on CPU.
# tools/setup_env.sh picks the environment (PYTHON's virtual / conda one, else
# the project's .venv); PY is its interpreter, asked for after setup ran.
PY = "$$(bash tools/setup_env.sh --python)"

.PHONY: setup test demo
setup:
	bash tools/setup_env.sh

test: setup
	$(PY) -m pytest tests

# The demo: a small synthetic dataset, the detector demo trained and evaluated
# on CPU (COCO box / mask AP), and a picture of its predictions on a
# validation image; the segmentation demo is one more command:
#   python tools/train.py configs/demo/upernet_vit3_demo.py
DEMO_CONFIG = configs/demo/mask_rcnn_vit3_demo.py
DEMO_WORK_DIR = work_dirs/mask_rcnn_vit3_demo
DEMO_IMAGE = data/demo/images/val/val_00028.jpg
.PHONY: demo
demo: setup
	$(PY) tools/make_demo_data.py
	$(PY) tools/train.py $(DEMO_CONFIG) --work-dir $(DEMO_WORK_DIR) --overwrite
	$(PY) tools/test.py $(DEMO_CONFIG) $$(cat $(DEMO_WORK_DIR)/last_checkpoint) --work-dir $(DEMO_WORK_DIR)
	$(PY) tools/image_demo.py $(DEMO_IMAGE) $(DEMO_CONFIG) $$(cat $(DEMO_WORK_DIR)/last_checkpoint) --out-dir $(DEMO_WORK_DIR)/pictures
	@echo "Demo done: box / mask AP in the coco/bbox_mAP and coco/segm_mAP lines above;"
	@echo "the picture of the predictions is $(DEMO_WORK_DIR)/pictures/vis/$(notdir $(DEMO_IMAGE))"
