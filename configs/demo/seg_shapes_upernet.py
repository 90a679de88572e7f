# Segmentation demo with UperNet + auxiliary FCN head (the model of
# configs/upernet_tnt_s_ade20k.py) at CPU scale, on the data and schedule of the Trans2Seg demo
# (configs/demo/seg_shapes.py), so that the two heads compare. `make demo-seg` runs it: from
# scratch it reaches mIoU 61 in 1600 iterations (13.5 min on 2 cores), Trans2Seg 34.
#
#   python tools/train.py configs/demo/seg_shapes_upernet.py --work-dir work_dirs/demo_seg
_base_ = './seg_shapes.py'

embed_dims = 192
num_classes = 6
norm_cfg = dict(type='BN', requires_grad=True)

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
        loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0, avg_non_ignore=True)),
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
        loss_decode=dict(type='CrossEntropyLoss', loss_weight=0.4, avg_non_ignore=True)))
