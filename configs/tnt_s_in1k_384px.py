# TNT-S fine-tuned on ImageNet-1k at 384x384 from the 224 classifier, as DeiT fine-tunes at 384:
# 30 epochs, AdamW lr 1e-5 at batch 1024 (DeiT's 5e-6 per 512 images), weight decay 1e-8, no
# warm-up, the same augmentation; evaluated at 384 without a crop margin. The sentence position
# embedding, learnt on the 14x14 grid at 224, is resampled (bicubic) to 24x24 when the 224
# checkpoint loads; the head comes from the same checkpoint.
_base_ = './tnt_s_in1k.py'

img_size = 384
# a 224 classifier: the official weights converted by tools/model_converters/tnt2mm.py (which
# keeps the head), or a checkpoint of configs/tnt_s_in1k.py
pretrained = 'checkpoints/tnt_s_official.pth'

model = dict(
    backbone=dict(pretrain_img_size=img_size,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    head=dict(init_cfg=dict(_delete_=True, type='Pretrained', checkpoint=pretrained,
                            prefix='head')))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=img_size, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandAugment', policies='timm_increasing', num_policies=2, total_level=10,
         magnitude_level=9, magnitude_std=0.5,
         hparams=dict(pad_val=_base_.bgr_mean, interpolation='bicubic')),
    dict(type='RandomErasing', erase_prob=0.25, mode='rand', min_area_ratio=0.02,
         max_area_ratio=1 / 3, fill_color=_base_.bgr_mean, fill_std=_base_.bgr_std),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=img_size, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='PackInputs'),
]
batch_size = 64  # per GPU; 16 GPUs give 1024 (the activations at 384 are 2.9x those at 224)
train_dataloader = dict(batch_size=batch_size, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=batch_size, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(lr=1e-5, weight_decay=1e-8))
max_epochs = 30
param_scheduler = [dict(type='CosineAnnealingLR', eta_min=1e-6, by_epoch=True, begin=0,
                        end=max_epochs, convert_to_iter_based=True)]
train_cfg = dict(max_epochs=max_epochs)
