# DETR with TNT-S on COCO 2017 as the paper ran it (Section 5.6): the last block's stride-16
# features pooled to stride 32; 50 epochs, AdamW, batch 16, multi-scale training.
_base_ = [
    'mmdet::detr/detr_r50_8xb2-150e_coco.py',
    './_base_/tnt_runtime.py', './_base_/tnt_norm.py', './_base_/tnt_optim.py',
    './_base_/tnt_s_backbone.py',
]

embed_dims = 384
max_epochs = 50

model = dict(
    data_preprocessor=_base_.tnt_norm,
    backbone=dict(_base_.tnt_s_backbone, _delete_=True, out_type='featmap',
                  out_indices=(11,)),
    neck=dict(
        _delete_=True,
        type='tnt_mm.FeaturePool',
        kernel_size=2,
        neck=dict(type='mmdet.ChannelMapper', in_channels=[embed_dims], kernel_size=1,
                  out_channels=256, act_cfg=None, norm_cfg=None, num_outs=1)))

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomChoiceResize',
         scales=[(short, 1333) for short in range(640, 801, 32)],
         keep_ratio=True),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(batch_size=2, dataset=dict(pipeline=train_pipeline))

optim_wrapper = dict(
    constructor='tnt_mm.MergedGroupsOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4),
    # merged into DETR's custom_keys (the backbone at lr_mult 0.1). mmengine applies the longest
    # key that matches a parameter's name alone, so the backbone's class token and position
    # embeddings need the backbone's lr_mult beside their decay_mult
    paramwise_cfg=dict(custom_keys={
        'backbone.cls_token': dict(lr_mult=0.1, decay_mult=0.0),
        'backbone.patch_pos': dict(lr_mult=0.1, decay_mult=0.0),
        'backbone.pixel_pos': dict(lr_mult=0.1, decay_mult=0.0),
    }))
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[33], gamma=0.1)
]
auto_scale_lr = dict(base_batch_size=16)
