# Cascade Mask R-CNN with a ViT3-T backbone on the synthetic shapes demo set:
# the demo Mask R-CNN (same data, schedule, optimizer, 128-channel FPN) with
# the cascade head of configs/cascade_mask_rcnn_vit3_t_coco_3x.py (three
# stages of 4conv1fc GIoU box heads at IoU 0.5 / 0.6 / 0.7), at demo size.
#
#   python tools/make_demo_data.py
#   python tools/train.py configs/demo/cascade_mask_rcnn_vit3_demo.py
_base_ = ['./mask_rcnn_vit3_demo.py']

num_classes = 3
neck_channels = 128


def box_head(stds):
    return dict(
        type='ConvFCBBoxHead',
        num_shared_convs=4,
        num_shared_fcs=1,
        in_channels=neck_channels,
        conv_out_channels=neck_channels,
        fc_out_channels=512,
        roi_feat_size=7,
        num_classes=num_classes,
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.],
                        target_stds=stds),
        reg_class_agnostic=False,
        reg_decoded_bbox=True,
        norm_cfg=dict(type='BN', requires_grad=True),
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=10.0))


def rcnn_stage(iou):
    return dict(
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=iou, neg_iou_thr=iou,
                      min_pos_iou=iou, match_low_quality=False, ignore_iof_thr=-1),
        sampler=dict(type='RandomSampler', num=64, pos_fraction=0.25, neg_pos_ub=-1,
                     add_gt_as_proposals=True),
        mask_size=28,
        pos_weight=-1,
        debug=False)


model = dict(
    type='CascadeRCNN',
    roi_head=dict(
        _delete_=True,
        type='CascadeRoIHead',
        num_stages=3,
        stage_loss_weights=[1, 0.5, 0.25],
        bbox_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
            out_channels=neck_channels,
            featmap_strides=[4, 8, 16, 32]),
        bbox_head=[
            box_head([0.1, 0.1, 0.2, 0.2]),
            box_head([0.05, 0.05, 0.1, 0.1]),
            box_head([0.033, 0.033, 0.067, 0.067]),
        ],
        mask_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=14, sampling_ratio=0),
            out_channels=neck_channels,
            featmap_strides=[4, 8, 16, 32]),
        mask_head=dict(
            type='FCNMaskHead',
            num_convs=2,
            in_channels=neck_channels,
            conv_out_channels=neck_channels,
            num_classes=num_classes,
            loss_mask=dict(type='CrossEntropyLoss', use_mask=True, loss_weight=1.0))),
    train_cfg=dict(rcnn=[rcnn_stage(0.5), rcnn_stage(0.6), rcnn_stage(0.7)]))
