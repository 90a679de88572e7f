# No weight decay on the position embeddings, the class token and the norms, as the official
# TNT trains. Configs take the whole paramwise_cfg or only its custom_keys (tnt_no_decay).
tnt_no_decay = {
    '.cls_token': dict(decay_mult=0.0),
    '.patch_pos': dict(decay_mult=0.0),
    '.pixel_pos': dict(decay_mult=0.0),
}
tnt_paramwise_cfg = dict(norm_decay_mult=0.0, custom_keys=tnt_no_decay)
