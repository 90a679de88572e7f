# The detection demo started from the classification demo's backbone: the pretrain-to-dense-task
# chain in miniature (`make demo-chain` runs `make demo-cls` first). Both use the same 6-block
# TNT with TNT-Ti widths. The weights are read from under "backbone." of the classifier's
# checkpoint, its 4x4 position embedding resampled to the 6x8 patches of these images; the
# classifier's final norm and head are left out, and the pyramid starts from its initialisation.
_base_ = './det_shapes.py'

model = dict(backbone=dict(init_cfg=dict(
    _delete_=True, type='Pretrained', checkpoint='work_dirs/demo_cls/epoch_12.pth')))
