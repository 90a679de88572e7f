# Detection demo: Faster R-CNN + FPN with a small TNT, trained from scratch on the synthetic
# COCO-format shapes dataset (tools/data/make_shapes.py coco data/shapes_coco --size 96
# --radius-range 0.15 0.3) and
# evaluated with mmdet's CocoMetric; `make demo` runs it. What changes from the COCO recipe of
# configs/faster_rcnn_tnt_s_fpn.py, and why (the budget is 15 minutes on 2 CPU cores):
# - a 6-block TNT with TNT-Ti widths, 96x128 images (6x8 patches), no pre-trained weights;
# - pyramid at 96 channels, FPN and RPN at 64, RoI head fc 128, fewer sampled RoIs: the heads,
#   not the backbone, dominate the cost at this size;
# - anchors half the COCO size (16 px at stride 4): the shapes are 29-58 px across;
# - RoIs assigned to pyramid levels as on COCO scaled to these images (finest_scale 56 -> 7, as
#   800 -> 96 px): the 29-58 px shapes pool from strides 16/32 (blocks 5/6) as large COCO
#   objects do, instead of all from stride 4, the pyramid level fed by block 2 of 6;
# - no LayerNorm in the pyramid (pyramid_norm=None): the per-pixel norm erased the shape class
#   from the features before the RoI head (linear probe on RoI features of the ground-truth
#   boxes: 62% before the norm, 23% after; chance 17%), and the box classifier never learnt the
#   classes: AP50 0.127 after 6 epochs with it, 0.687 without (README, detection demo);
# - lr 4e-4 with a warm-up and gradient clipping (better than 2e-4 with the LayerNorm pyramid;
#   5e-4 made the losses climb before the RoI levels above were set).
_base_ = '../faster_rcnn_tnt_s_fpn.py'

demo_arch = dict(inner_dim=12, inner_heads=2, outer_dim=192, outer_heads=3, depth=6)
embed_dims = 192
neck_channels = 64
img_scale = (128, 96)  # (w, h) of the generated images
data_root = 'data/shapes_coco/'
classes = ('circle', 'square', 'triangle', 'cross', 'ring', 'star')
batch_size = 8
max_epochs = 6
lr = 4e-4

model = dict(
    backbone=dict(
        # _delete_: a dict replaces the base's arch name instead of merging into it
        arch=dict(_delete_=True, **demo_arch),
        out_indices=(1, 2, 4, 5),  # every other block, as 3/6/9/12 of 12
        pretrain_img_size=img_scale[::-1],
        drop_path_rate=0.0,
        pyramid_channels=96,
        pyramid_norm=None,
        init_cfg=None),
    neck=dict(in_channels=[96] * 4, out_channels=neck_channels),
    rpn_head=dict(
        in_channels=neck_channels,
        feat_channels=neck_channels,
        anchor_generator=dict(scales=[4])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=neck_channels, finest_scale=7),
        bbox_head=dict(in_channels=neck_channels, fc_out_channels=128,
                       num_classes=len(classes))),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=500, max_per_img=200),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(
        rpn=dict(nms_pre=500, max_per_img=100),
        rcnn=dict(max_per_img=20)))

metainfo = dict(classes=classes)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=batch_size,
    num_workers=2,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=train_pipeline,
                 ann_file='annotations/instances_train2017.json',
                 data_prefix=dict(img='train2017/'),
                 filter_cfg=dict(filter_empty_gt=True, min_size=8)))
val_dataloader = dict(
    batch_size=8,
    num_workers=2,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline,
                 ann_file='annotations/instances_val2017.json',
                 data_prefix=dict(img='val2017/')))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

optim_wrapper = dict(optimizer=dict(lr=lr), clip_grad=dict(_delete_=True, max_norm=1.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=False, begin=0, end=300),
    dict(type='CosineAnnealingLR', eta_min=lr * 0.01, by_epoch=True, begin=1,
         end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
randomness = dict(seed=0)
