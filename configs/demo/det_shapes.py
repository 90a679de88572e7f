# Detection demo: the Faster R-CNN + FPN of configs/faster_rcnn_tnt_s_fpn.py scaled to 15 minutes
# on 2 CPU cores, trained from scratch on generated shapes, COCO AP (`make demo`).
_base_ = ['../faster_rcnn_tnt_s_fpn.py', '../_base_/demo_shapes.py']

embed_dims = _base_.demo_arch['outer_dim']
neck_channels = 64
img_scale = (128, 96)  # (w, h) of the generated images: 6x8 patches
data_root = 'data/shapes_coco/'
batch_size = 8
max_epochs = 6
lr = 4e-4  # with a warm-up and gradient clipping; 5e-4 made the losses climb early

model = dict(
    backbone=dict(
        # _delete_: a dict replaces the base's arch name instead of merging into it
        arch=dict(_delete_=True, **_base_.demo_arch),
        out_indices=(1, 2, 4, 5),  # every other block, as 3/6/9/12 of 12
        pretrain_img_size=img_scale[::-1],
        drop_path_rate=0.0,
        # narrow pyramid, FPN, RPN and RoI head: the heads, not the backbone, dominate the
        # cost at this size
        pyramid_channels=96,
        # the per-pixel LayerNorm erased the shape class before the RoI head
        pyramid_norm=None,
        init_cfg=None),
    neck=dict(in_channels=[96] * 4, out_channels=neck_channels),
    rpn_head=dict(
        in_channels=neck_channels,
        feat_channels=neck_channels,
        anchor_generator=dict(scales=[4])),  # half the COCO anchors: the shapes are 29-58 px
    roi_head=dict(
        # RoI levels as on COCO scaled to 96 px (56 -> 7): the shapes pool from strides 16/32
        # as large COCO objects do, not all from stride 4
        bbox_roi_extractor=dict(out_channels=neck_channels, finest_scale=7),
        bbox_head=dict(in_channels=neck_channels, fc_out_channels=128,
                       num_classes=len(_base_.classes))),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=500, max_per_img=200),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(
        rpn=dict(nms_pre=500, max_per_img=100),
        rcnn=dict(max_per_img=20)))

metainfo = dict(classes=_base_.classes)
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
randomness = dict(seed=_base_.demo_seed)
