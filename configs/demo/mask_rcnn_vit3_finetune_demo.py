# Fine-tuning on your own COCO-format dataset, worked on the demo data: two
# of its three classes (circle, square), starting from the trained 3-class
# demo detector (`make demo`). For your data, change what is marked YOURS
# and inherit the real recipe instead (see README, "Fine-tuning"):
#
#   _base_ = '../mask_rcnn_vit3_t_coco.py'
#   load_from = 'mask_rcnn_vit3_t_coco.pth'   # the authors' COCO model
#
#   python tools/train.py configs/demo/mask_rcnn_vit3_finetune_demo.py
_base_ = './mask_rcnn_vit3_demo.py'

data_root = 'data/demo/'  # YOURS: annotations/*.json and images/ below it
classes = ('circle', 'square')  # YOURS: the class names, as in the json
metainfo = dict(classes=classes, palette=[(220, 20, 60), (0, 128, 255)])

# the class count lives in both heads of Mask R-CNN
model = dict(
    roi_head=dict(
        bbox_head=dict(num_classes=len(classes)),
        mask_head=dict(num_classes=len(classes))))

train_dataloader = dict(
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',  # YOURS
        data_prefix=dict(img='images/train/')))  # YOURS
val_dataloader = dict(
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',  # YOURS
        data_prefix=dict(img='images/val/')))  # YOURS
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

# start from a trained detector: the backbone, neck and RPN load; the class-
# specific layers of both heads (other shapes) stay freshly initialised
load_from = 'work_dirs/mask_rcnn_vit3_demo/iter_360.pth'  # YOURS

# a short schedule at a lower learning rate than training from scratch
max_iters = 100
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=10),
    dict(type='CosineAnnealingLR', eta_min=1e-6, by_epoch=False, begin=10,
         end=max_iters)
]
optim_wrapper = dict(optimizer=dict(lr=1e-4))
default_hooks = dict(checkpoint=dict(interval=max_iters))
