# TNT-Ti on ImageNet-1k, the recipe of configs/tnt_s_in1k.py (no TNT-Ti weights are published).
_base_ = './tnt_s_in1k.py'

arch = 'tiny'
embed_dims = 192
model = dict(backbone=dict(arch=arch), head=dict(in_channels=embed_dims))
