# Faster R-CNN + FPN with TNT-S on COCO 2017, 1x schedule: the setting of the paper's supplement
# (Table 2). The backbone's pyramid rescales blocks 3/6/9/12 to strides 4/8/16/32.
_base_ = [
    'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
    './_base_/tnt_runtime.py', './_base_/tnt_norm.py', './_base_/tnt_optim.py',
    './_base_/tnt_s_backbone.py',
]

embed_dims = 384  # TNT-Ti 192, TNT-S 384, TNT-B 640

model = dict(
    data_preprocessor=_base_.tnt_norm,
    backbone=dict(_base_.tnt_s_backbone, _delete_=True),
    neck=dict(in_channels=[embed_dims] * 4))

# AdamW as mmdet trains transformer backbones. Batch 16 in total (2 per GPU x 8).
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='tnt_mm.MergedGroupsOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=_base_.tnt_paramwise_cfg,
    clip_grad=None)
train_dataloader = dict(batch_size=2)
auto_scale_lr = dict(enable=False, base_batch_size=16)
