# TNT-B on ImageNet-1k, the recipe of configs/tnt_s_in1k.py.
_base_ = './tnt_s_in1k.py'

arch = 'base'
embed_dims = 640
model = dict(backbone=dict(arch=arch), head=dict(in_channels=embed_dims))
