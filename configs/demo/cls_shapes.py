# Classification demo: the TNT recipe of configs/tnt_s_in1k.py, scaled to a CPU. It trains a
# TNT-Ti on the synthetic shapes dataset (tools/data/make_shapes.py imagenet data/shapes_cls
# --num-train 9600) and reports top-1; `make demo-cls` runs it. What changes from the ImageNet
# recipe, and why:
# - 64x64 images (4x4 patches), 6 blocks, 12 epochs of 9600 images: the budget of 2 cores;
# - batch 64 at lr 1e-3, one warm-up epoch (150 iterations): a transformer trained from scratch
#   learns this data far faster per image at batch 64 than at 16 (plain-PyTorch runs of 1500
#   iterations reached 83-85% top-1 at batch 64, against under 50% for the same images at batch
#   16), and 9600 distinct images generalise better than 1200 seen eight times as often (19200
#   are no better than 9600 at 1800 iterations: 89.0% against 89.2%);
# - no Mixup / CutMix / RandAugment / random crops / repeated augmentation / label smoothing:
#   regularisers for 300 ImageNet epochs, they only slow a run this short (a horizontal flip is
#   kept);
# - no EMA: with decay 0.99996, a few thousand steps would validate the initial weights;
# - AdamW's beta2 0.95 instead of 0.999: its second-moment estimate follows the gradients of a
#   short run from scratch faster (plain-PyTorch runs of 1800 iterations, horizontal flips: 89.0%
#   top-1 against 84.7%);
# - the fused AdamW step (one kernel for all parameters instead of a loop over them).
_base_ = '../tnt_s_in1k.py'

# TNT-Ti widths with 6 blocks instead of 12: twice the optimiser steps per minute, which is
# what a transformer trained from scratch needs most on a CPU budget.
demo_arch = dict(inner_dim=12, inner_heads=2, outer_dim=192, outer_heads=3, depth=6)
embed_dims = 192
img_size = 64
num_classes = 6
data_root = 'data/shapes_cls'
batch_size = 64
max_epochs = 12
warmup_epochs = 1  # 150 iterations: transformers from scratch stall without a real warm-up
lr = 1e-3
classes = ('circle', 'square', 'triangle', 'cross', 'ring', 'star')

model = dict(
    # _delete_: a dict replaces the base's arch name instead of merging into it
    # recompute_inner=False: at 64x64 the activations are small, and recomputing costs 10%
    backbone=dict(arch=dict(_delete_=True, **demo_arch), pretrain_img_size=img_size,
                  drop_path_rate=0.0, recompute_inner=False),
    head=dict(num_classes=num_classes, in_channels=embed_dims,
              loss=dict(_delete_=True, type='CrossEntropyLoss', loss_weight=1.0)),
    train_cfg=dict(_delete_=True))
data_preprocessor = dict(num_classes=num_classes)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    # plain-PyTorch runs of 1800 iterations: 89.2% top-1 with the flip, 83.8% without; adding
    # a vertical flip gave 93.0% there but 89.0% in one run of this config (README)
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=img_size, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='PackInputs'),
]
dataset = dict(type='CustomDataset', data_root=data_root, classes=classes, with_label=True)
train_dataloader = dict(
    batch_size=batch_size,
    # one worker decodes 64 small PNGs per iteration easily; a second one only takes CPU time
    # from the two compute threads
    num_workers=1,
    persistent_workers=True,
    # stack the images in the worker: one tensor crosses to the main process per batch instead
    # of 64 (0.20 against 0.27 s per iteration here)
    collate_fn=dict(type='default_collate'),
    sampler=dict(_delete_=True, type='DefaultSampler', shuffle=True),
    dataset=dict(_delete_=True, ann_file='meta/train.txt', data_prefix='train',
                 pipeline=train_pipeline, **dataset))
val_dataloader = dict(
    batch_size=64,
    num_workers=2,
    persistent_workers=True,
    dataset=dict(_delete_=True, ann_file='meta/val.txt', data_prefix='val',
                 pipeline=test_pipeline, **dataset))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, 3))
test_evaluator = val_evaluator

# The paper's lr 1e-3 is for batch 1024; here it is the best of 7e-4 / 1e-3 / 1.5e-3 / 2e-3 at
# batch 64 (79 / 83-85 / 76 / 81% after 1500 iterations, beta2 0.999). With beta2 0.95, 1.5e-3
# gave 90.5% against 89.2% after 1800 (plain PyTorch, one run each: within the run-to-run spread).
optim_wrapper = dict(optimizer=dict(lr=lr, betas=(0.9, 0.95), fused=True))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=True, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=warmup_epochs,
         convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
custom_hooks = [dict(type='tnt_mm.SafeCheckpointHook')]
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
randomness = dict(seed=0)
