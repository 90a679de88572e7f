# Segmentation demo with the UperNet + auxiliary FCN head of configs/upernet_tnt_s_ade20k.py, on
# the data and schedule of the Trans2Seg demo so that the two heads compare (`make demo-seg`).
_base_ = './seg_shapes.py'

embed_dims = _base_.embed_dims
num_classes = _base_.num_classes
class_weight = _base_.class_weight
norm_cfg = _base_.norm_cfg

model = dict(
    # the four-level pyramid of the detection configs: blocks 2/3/5/6 of 6 (as 3/6/9/12 of 12)
    # at strides 4/8/16/32
    backbone=dict(out_indices=(1, 2, 4, 5), pyramid_scales=(4.0, 2.0, 1.0, 0.5)),
    decode_head=dict(
        _delete_=True,
        type='UPerHead',
        in_channels=[embed_dims] * 4,
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6),
        channels=64,  # mmseg's 512 would cost many times the backbone at this size
        dropout_ratio=0.1,
        num_classes=num_classes,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='tnt_mm.ClassWeightedCrossEntropyLoss', loss_weight=1.0,
                         class_weight=class_weight)),
    auxiliary_head=dict(
        type='FCNHead',
        in_channels=embed_dims,
        in_index=2,  # stride 16
        channels=32,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=num_classes,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='tnt_mm.ClassWeightedCrossEntropyLoss', loss_weight=0.4,
                         class_weight=class_weight)))
