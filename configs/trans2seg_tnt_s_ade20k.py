# Trans2Seg with TNT-S on ADE20K: the TNT paper's segmentation setting (40k iterations, AdamW,
# batch 16, 512x512 crops); tnt_mm.Trans2SegHead is the Trans2Seg paper's "medium" head.
_base_ = [
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_40k.py',
    './_base_/tnt_runtime.py', './_base_/tnt_norm.py', './_base_/tnt_optim.py',
    './_base_/tnt_s_backbone.py',
]

embed_dims = 384  # TNT-Ti 192, TNT-S 384, TNT-B 640
num_classes = 150
crop_size = (512, 512)
patch_size = 16
norm_cfg = dict(type='SyncBN', requires_grad=True)

model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        **_base_.tnt_norm,
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255,
        size=crop_size,
        # Test images are padded here to a multiple of the patch size and the padding is cut
        # off the prediction; the backbone would otherwise pad them itself, and the resized
        # logits would be shifted against the image.
        test_cfg=dict(size_divisor=patch_size)),
    backbone=dict(
        _base_.tnt_s_backbone,
        # block 3 at stride 4 for detail, block 12 at stride 16 for the transformer: only the
        # two levels the head reads, so that every pyramid layer is trained
        out_indices=(2, 11),
        pyramid_scales=(4.0, 1.0)),
    decode_head=dict(
        type='tnt_mm.Trans2SegHead',
        in_channels=(embed_dims, embed_dims),
        in_index=(0, 1),
        channels=64,  # "medium": conv width 64, transformer width 256, depth 4, 8 heads,
        embed_dims=256,  # MLP ratio 3
        num_layers=4,
        num_heads=8,
        mlp_ratio=3.,
        pos_grid=(crop_size[0] // patch_size, crop_size[1] // patch_size),
        num_classes=num_classes,
        dropout_ratio=0.0,  # the official head has no dropout
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    # single scale; mode='slide' with crop_size=crop_size, stride=(341, 341) works too
    test_cfg=dict(mode='whole'))

# AdamW lr 1e-4 (paper), weight decay 0.01 as mmseg's DeiT-S + UperNet (the paper gives none),
# also none on the head's position and class embeddings. Batch 16 = 2 x 8 GPUs.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='tnt_mm.MergedGroupsOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        custom_keys={
            **_base_.tnt_no_decay,
            '.pos_embed': dict(decay_mult=0.0),
            '.class_embed': dict(decay_mult=0.0),
        }))
param_scheduler = [
    dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=40000, by_epoch=False)
]
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
auto_scale_lr = dict(enable=False, base_batch_size=16)
