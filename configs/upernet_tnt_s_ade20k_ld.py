# UperNet with TNT-S on ADE20K, fine-tuned with layer-wise learning-rate decay as BEiT fine-tunes
# a 12-block ViT-B on ADE20K: rate 0.65, so block i trains at 0.65 ** (12 - i) of the lr, the
# embeddings at 0.65 ** 13, and the pyramid, the neck and the heads at the base lr. Everything
# else is upernet_tnt_s_ade20k.py's recipe, the no-decay rules included.
_base_ = './upernet_tnt_s_ade20k.py'

optim_wrapper = dict(
    constructor='tnt_mm.LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.65))
