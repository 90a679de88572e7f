# Faster R-CNN + FPN with TNT-B (official tnt_b_82.9.pth.tar, converted with tnt2mm.py).
_base_ = './faster_rcnn_tnt_s_fpn.py'

arch = 'base'
embed_dims = 640
pretrained = 'checkpoints/tnt_b_official.pth'
model = dict(
    backbone=dict(arch=arch, init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[embed_dims] * 4))
