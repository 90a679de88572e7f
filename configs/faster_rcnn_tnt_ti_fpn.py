# Faster R-CNN + FPN with TNT-Ti. No TNT-Ti ImageNet weights are published anywhere: train one
# with configs/tnt_ti_in1k.py and point `pretrained` at its checkpoint (the backbone is read
# from under `backbone.`), or set the init_cfg to None to train from scratch.
_base_ = './faster_rcnn_tnt_s_fpn.py'

arch = 'tiny'
embed_dims = 192
pretrained = 'work_dirs/tnt_ti_in1k/epoch_300.pth'
model = dict(
    backbone=dict(arch=arch, init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[embed_dims] * 4))
