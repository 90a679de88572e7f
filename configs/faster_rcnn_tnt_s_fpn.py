# Faster R-CNN + FPN with a TNT-S backbone on COCO 2017, 1x schedule (12 epochs): supplement
# Table 2 (TNT-S 48.1M params, 41.5 AP on minival). Blocks 3/6/9/12 are rescaled to strides
# 4/8/16/32 by the backbone's pyramid (deconvolutions up, pooling down, 3x3 conv + LN each).
#
#   python tools/model_converters/tnt2mm.py tnt_s_81.5.pth.tar checkpoints/tnt_s_official.pth
#   python tools/train.py configs/faster_rcnn_tnt_s_fpn.py            # COCO under data/coco/
#   python tools/test.py configs/faster_rcnn_tnt_s_fpn.py work_dirs/faster_rcnn_tnt_s_fpn/epoch_12.pth
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['tnt_mm'], allow_failed_imports=False)

arch = 'small'
embed_dims = 384  # TNT-Ti 192, TNT-S 384, TNT-B 640
pretrained = 'checkpoints/tnt_s_official.pth'  # converted with tools/model_converters/tnt2mm.py

model = dict(
    # The official TNT weights were trained on inputs normalised with mean = std = 0.5.
    data_preprocessor=dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5]),
    backbone=dict(
        _delete_=True,
        type='tnt_mm.TNT',
        arch=arch,
        out_type='pyramid',
        out_indices=(2, 5, 8, 11),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[embed_dims] * 4))

# AdamW as mmdet trains transformer backbones; no weight decay on the position embeddings, the
# class token and the norms. Batch 16 in total (2 per GPU x 8), scaled by auto_scale_lr.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        custom_keys={
            '.cls_token': dict(decay_mult=0.0),
            '.patch_pos': dict(decay_mult=0.0),
            '.pixel_pos': dict(decay_mult=0.0),
        }),
    clip_grad=None)
train_dataloader = dict(batch_size=2)
auto_scale_lr = dict(enable=False, base_batch_size=16)
custom_hooks = [dict(type='tnt_mm.SafeCheckpointHook')]
