# TNT-S on ImageNet-1k with the paper's recipe (Table 3) from mmpretrain's components, and the
# official evaluation (bicubic resize to 248, centre crop 224).
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
    './_base_/tnt_runtime.py', './_base_/tnt_norm.py', './_base_/tnt_optim.py',
]

arch = 'small'
embed_dims = 384  # outer width of the arch: TNT-Ti 192, TNT-S 384, TNT-B 640
with_se = False
num_classes = 1000
drop_path_rate = 0.1
batch_size = 128  # per GPU; 8 GPUs give the paper's 1024
data_root = 'data/imagenet'

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='tnt_mm.TNT',
        arch=arch,
        with_se=with_se,
        out_type='cls_token',
        drop_path_rate=drop_path_rate),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=num_classes,
        in_channels=embed_dims,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=dict(type='TruncNormal', layer='Linear', std=.02)),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]),
)

data_preprocessor = dict(num_classes=num_classes, to_rgb=True, **_base_.tnt_norm)
bgr_mean = [127, 127, 127]
bgr_std = [127.5, 127.5, 127.5]

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandAugment', policies='timm_increasing', num_policies=2, total_level=10,
         magnitude_level=9, magnitude_std=0.5,
         hparams=dict(pad_val=bgr_mean, interpolation='bicubic')),
    dict(type='RandomErasing', erase_prob=0.25, mode='rand', min_area_ratio=0.02,
         max_area_ratio=1 / 3, fill_color=bgr_mean, fill_std=bgr_std),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    # 224 / 0.9 = 248.9 -> 248, the official crop ratio
    dict(type='ResizeEdge', scale=248, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=batch_size,
    sampler=dict(_delete_=True, type='RepeatAugSampler', shuffle=True),  # repeated augmentation
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=batch_size,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(
    constructor='tnt_mm.MergedGroupsOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
    # the official TNT also spares the biases
    paramwise_cfg=dict(_delete_=True, bias_decay_mult=0.0, **_base_.tnt_paramwise_cfg),
)
warmup_epochs = 5
max_epochs = 300
param_scheduler = [
    # 1e-6 -> 1e-3 as the official --warmup-lr 1e-6
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=warmup_epochs),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=1)
auto_scale_lr = dict(base_batch_size=1024)

# EMA of the weights, decay 0.99996
custom_hooks = _base_.custom_hooks + [
    dict(type='EMAHook', momentum=4e-5, priority='ABOVE_NORMAL')]
