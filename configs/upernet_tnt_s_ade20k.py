# UperNet (+ auxiliary FCN head) with TNT-S on ADE20K: the recipe of mmseg's DeiT-S + multi-level
# neck + UperNet, whose neck is the TNT pyramid here (blocks 3/6/9/12 at strides 4/8/16/32).
_base_ = [
    'mmseg::_base_/models/upernet_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
    './_base_/tnt_runtime.py', './_base_/tnt_norm.py', './_base_/tnt_optim.py',
    './_base_/tnt_s_backbone.py',
]

embed_dims = 384  # TNT-Ti 192, TNT-S 384, TNT-B 640
num_classes = 150
crop_size = (512, 512)
patch_size = 16

model = dict(
    data_preprocessor=dict(
        **_base_.tnt_norm,
        size=crop_size,
        # Test images are padded here to a multiple of the patch size and the padding is cut
        # off the prediction; the backbone would otherwise pad them itself, and the resized
        # logits would be shifted against the image.
        test_cfg=dict(size_divisor=patch_size)),
    pretrained=None,  # the backbone loads its own weights (init_cfg), strictly
    backbone=dict(_base_.tnt_s_backbone, _delete_=True),
    decode_head=dict(in_channels=[embed_dims] * 4, num_classes=num_classes),
    auxiliary_head=dict(in_channels=embed_dims, num_classes=num_classes))  # level 2: stride 16

# mmseg's DeiT-S recipe: AdamW lr 6e-5, weight decay 0.01, linear warm-up over 1500 iterations,
# then poly (power 1). Batch 2 x 8 GPUs.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='tnt_mm.MergedGroupsOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=_base_.tnt_paramwise_cfg,
    clip_grad=None)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
auto_scale_lr = dict(enable=False, base_batch_size=16)
