# DETR with a TNT-S backbone on COCO 2017, as the paper ran it (Section 5.6: 38.2 AP, ~39M
# params): the last block's stride-16 features, a 2x2 average pool to stride 32, then DETR's
# input projection; 50 epochs, AdamW, batch 16, multi-scale training (short side 640-800, max
# 1333).
_base_ = 'mmdet::detr/detr_r50_8xb2-150e_coco.py'
custom_imports = dict(imports=['tnt_mm'], allow_failed_imports=False)

arch = 'small'
embed_dims = 384
pretrained = 'checkpoints/tnt_s_official.pth'  # converted with tools/model_converters/tnt2mm.py
max_epochs = 50

model = dict(
    data_preprocessor=dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5]),
    backbone=dict(
        _delete_=True,
        type='tnt_mm.TNT',
        arch=arch,
        out_type='featmap',
        out_indices=(11,),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
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
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4),
    paramwise_cfg=dict(custom_keys={
        'backbone': dict(lr_mult=0.1, decay_mult=1.0),
        '.cls_token': dict(decay_mult=0.0),
        '.patch_pos': dict(decay_mult=0.0),
        '.pixel_pos': dict(decay_mult=0.0),
    }))
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[33], gamma=0.1)
]
auto_scale_lr = dict(base_batch_size=16)
custom_hooks = [dict(type='tnt_mm.SafeCheckpointHook')]
