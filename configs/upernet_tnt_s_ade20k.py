# UperNet (+ auxiliary FCN head) with a TNT-S backbone on ADE20K, 512x512 crops, 160k iterations:
# the recipe of mmsegmentation's DeiT-S + multi-level neck + UperNet
# (vit_deit-s16_mln_upernet_8xb2-160k_ade20k-512x512.py, 43.82 mIoU), whose multi-level neck
# is the TNT pyramid here (blocks 3/6/9/12 rescaled to strides 4/8/16/32).
#
#   python tools/model_converters/tnt2mm.py tnt_s_81.5.pth.tar checkpoints/tnt_s_official.pth
#   python tools/train.py configs/upernet_tnt_s_ade20k.py      # ADE20K under data/ade/
#   python tools/test.py configs/upernet_tnt_s_ade20k.py work_dirs/upernet_tnt_s_ade20k/iter_160000.pth
_base_ = [
    'mmseg::_base_/models/upernet_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
custom_imports = dict(imports=['tnt_mm'], allow_failed_imports=False)

arch = 'small'
embed_dims = 384  # TNT-Ti 192, TNT-S 384, TNT-B 640
num_classes = 150
crop_size = (512, 512)
patch_size = 16
pretrained = 'checkpoints/tnt_s_official.pth'  # converted with tools/model_converters/tnt2mm.py

model = dict(
    data_preprocessor=dict(
        # The official TNT weights were trained on inputs normalised with mean = std = 0.5.
        mean=[127.5, 127.5, 127.5],
        std=[127.5, 127.5, 127.5],
        size=crop_size,
        # Test images are padded here to a multiple of the patch size and the padding is cut
        # off the prediction; the backbone would otherwise pad them itself, and the resized
        # logits would be shifted against the image.
        test_cfg=dict(size_divisor=patch_size)),
    pretrained=None,  # the backbone loads its own weights (init_cfg), strictly
    backbone=dict(
        _delete_=True,
        type='tnt_mm.TNT',
        arch=arch,
        out_type='pyramid',
        out_indices=(2, 5, 8, 11),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[embed_dims] * 4, num_classes=num_classes),
    auxiliary_head=dict(in_channels=embed_dims, num_classes=num_classes))  # level 2: stride 16

# mmseg's DeiT-S recipe: AdamW lr 6e-5, weight decay 0.01 (none on position embeddings, class
# token and norms), linear warm-up over 1500 iterations, then poly (power 1). Batch 2 x 8 GPUs.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        custom_keys={
            '.cls_token': dict(decay_mult=0.0),
            '.patch_pos': dict(decay_mult=0.0),
            '.pixel_pos': dict(decay_mult=0.0),
        }),
    clip_grad=None)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
auto_scale_lr = dict(enable=False, base_batch_size=16)
custom_hooks = [dict(type='tnt_mm.SafeCheckpointHook')]
