# TNT-S + SE (supplement Table 1: 24.7M params, 81.7 top-1), the recipe of tnt_s_in1k.py.
_base_ = './tnt_s_in1k.py'

model = dict(backbone=dict(with_se=True))
