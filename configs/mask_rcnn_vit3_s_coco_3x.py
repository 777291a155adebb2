# Mask R-CNN + H-ViT³-S, COCO 3x (36 epochs): the 1x recipe with the 3x
# schedule and drop path 0.4; same multi-scale pipeline.
_base_ = ['./mask_rcnn_vit3_s_coco.py']

model = dict(backbone=dict(drop_path_rate=0.4))

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
         end=1000),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[27, 33], gamma=0.1),
]
