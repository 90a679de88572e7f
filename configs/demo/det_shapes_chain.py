# The detection demo started from the classification demo's backbone: the pretrain-to-dense-task
# chain in miniature (`make demo-chain`); the position embedding is resampled to 6x8 patches.
_base_ = './det_shapes.py'

model = dict(backbone=dict(init_cfg=dict(
    _delete_=True, type='Pretrained', checkpoint='work_dirs/demo_cls/epoch_12.pth')))
