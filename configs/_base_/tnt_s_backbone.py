# TNT-S as the backbone of a detector or segmentor: blocks 3/6/9/12 rescaled to strides 4, 8,
# 16 and 32 for an FPN (paper Section 5), stochastic depth 0.1, the official weights loaded
# strictly. Configs take it as `backbone=dict(_base_.tnt_s_backbone, _delete_=True, ...)`.
tnt_s_backbone = dict(
    type='tnt_mm.TNT',
    arch='small',
    out_type='pyramid',
    out_indices=(2, 5, 8, 11),
    drop_path_rate=0.1,
    # converted with tools/model_converters/tnt2mm.py; or 'hf-hub:timm/tnt_s_patch16_224.in1k'
    init_cfg=dict(type='Pretrained', checkpoint='checkpoints/tnt_s_official.pth'))
