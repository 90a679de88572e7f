# Faster R-CNN + FPN with TNT-S, fine-tuned with layer-wise learning-rate decay as ViTDet
# fine-tunes a 12-block ViT-B on COCO: rate 0.7, so block i trains at 0.7 ** (12 - i) of the lr
# (0.7 for the last block, 0.014 for the first), the embeddings at 0.7 ** 13, and the pyramid,
# the FPN and the heads at the base lr. Everything else is faster_rcnn_tnt_s_fpn.py's recipe,
# the no-decay rules included.
_base_ = './faster_rcnn_tnt_s_fpn.py'

optim_wrapper = dict(
    constructor='tnt_mm.LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.7))
