# Classification demo: the recipe of configs/tnt_s_in1k.py scaled to 2 CPU cores, trained from
# scratch on generated shapes (`make demo-cls`).
_base_ = ['../tnt_s_in1k.py', '../_base_/demo_shapes.py']

embed_dims = _base_.demo_arch['outer_dim']
img_size = 64
num_classes = len(_base_.classes)
data_root = 'data/shapes_cls'
# batch 64 rather than 16: a transformer from scratch learns this data far faster per image
batch_size = 64
max_epochs = 12
warmup_epochs = 1  # 150 iterations: transformers from scratch stall without a real warm-up
lr = 1e-3

model = dict(
    # _delete_: a dict replaces the base's arch name instead of merging into it
    # recompute_inner=False: at 64x64 the activations are small, and recomputing costs 10%
    backbone=dict(arch=dict(_delete_=True, **_base_.demo_arch), pretrain_img_size=img_size,
                  drop_path_rate=0.0, recompute_inner=False),
    # no label smoothing, Mixup or CutMix: regularisers for 300 ImageNet epochs only slow a
    # run this short
    head=dict(num_classes=num_classes, in_channels=embed_dims,
              loss=dict(_delete_=True, type='CrossEntropyLoss', loss_weight=1.0)),
    train_cfg=dict(_delete_=True))
data_preprocessor = dict(num_classes=num_classes)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),  # the one augmentation kept
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=img_size, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='PackInputs'),
]
dataset = dict(type='CustomDataset', data_root=data_root, classes=_base_.classes,
               with_label=True)
train_dataloader = dict(
    batch_size=batch_size,
    # one worker decodes 64 small PNGs per iteration easily; a second one only takes CPU time
    # from the two compute threads
    num_workers=1,
    persistent_workers=True,
    # stack the images in the worker: one tensor crosses to the main process per batch
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

# beta2 0.95: the second-moment estimate follows a short run's gradients faster than at 0.999;
# fused: one AdamW kernel for all parameters
optim_wrapper = dict(optimizer=dict(lr=lr, betas=(0.9, 0.95), fused=True))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=True, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=warmup_epochs,
         convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
# no EMA: with decay 0.99996, a run of a few thousand steps would validate the initial weights
custom_hooks = [hook for hook in _base_.custom_hooks if hook.type != 'EMAHook']
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
randomness = dict(seed=_base_.demo_seed)
