#!/usr/bin/env python
"""Draw what a TNT attends to, as in the paper's visualisation section.

    python tools/visualize_attention.py configs/tnt_s_in1k.py checkpoints/tnt_s.pth img.jpg

Writes three PNGs to ``--out-dir``:

- ``inner_attention.png``: for a few patches, the inner-transformer attention of chosen query
  words over the 16 words of their patch (the paper's Figure: similar-looking words attend to
  each other);
- ``outer_attention.png``: for chosen blocks, the attention from chosen patches to all patches;
- ``cls_attention.png``: the class token's attention over the image in chosen blocks, overlaid
  on the picture.

The image goes through the config's test pipeline and data preprocessor, so the network sees
what it sees in evaluation. Head-averaged attention; red crosses mark the queries.
"""
import argparse
import os
import os.path as osp
from typing import Dict, List

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.dataset import Compose, default_collate  # noqa: E402
from mmengine.registry import MODELS, init_default_scope  # noqa: E402
from mmengine.runner import load_checkpoint  # noqa: E402

import tnt_mm  # noqa: E402,F401
from tnt_mm.models import TNT  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('image')
    parser.add_argument('--out-dir', default='work_dirs/attention')
    parser.add_argument('--blocks', type=int, nargs='+', default=[1, 6, 12],
                        help='blocks to show, counted from 1 (default: 1 6 12)')
    parser.add_argument('--patches', type=int, nargs='+',
                        help='query patches (row-major index); default: a few across the image')
    parser.add_argument('--words', type=int, nargs='+', default=[0, 5, 10, 15],
                        help='query words inside a patch, 0..15 (default: 0 5 10 15)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries')
    return parser.parse_args(argv)


def load_model_and_input(args):
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    model = MODELS.build(cfg.model)
    load_checkpoint(model, args.checkpoint, map_location='cpu', strict=True)
    model.eval()
    backbone = model.backbone if hasattr(model, 'backbone') else model
    if not isinstance(backbone, TNT):
        raise SystemExit(f'{args.config} has no tnt_mm.TNT backbone '
                         f'(found {type(backbone).__name__})')
    dataset_cfg = cfg.test_dataloader.dataset
    pipeline = Compose(dataset_cfg.get('pipeline') or cfg.test_pipeline)
    sample = pipeline(dict(img_path=args.image, img_shape=None, sample_idx=0))
    data = model.data_preprocessor(default_collate([sample]), False)
    return model, backbone, data['inputs']


def capture_attention(backbone: TNT, image: torch.Tensor) -> Dict[str, List[torch.Tensor]]:
    """Run the backbone once; return per-block inner and outer attention probabilities
    (``None`` for a block without an inner transformer)."""
    depth = len(backbone.blocks)
    attention: Dict[str, List[torch.Tensor]] = {'inner': [None] * depth, 'outer': [None] * depth}

    def inner_recorder(index):
        def hook(block, args):
            # the inner transformer is one op (possibly a fused kernel): its attention input
            # is the block's input words after the first inner norm
            words = args[0]
            attention['inner'][index] = block.attn_in.attention_weights(block.norm_in(words))
        return hook

    def outer_recorder(index):
        def hook(module, args):
            attention['outer'][index] = module.attention_weights(args[0])
        return hook

    handles = []
    for i, block in enumerate(backbone.blocks):
        if block.has_inner:
            handles.append(block.register_forward_pre_hook(inner_recorder(i)))
        handles.append(block.attn_out.register_forward_pre_hook(outer_recorder(i)))
    with torch.no_grad():
        backbone(image)
    for handle in handles:
        handle.remove()
    return attention


def to_picture(image: torch.Tensor) -> np.ndarray:
    picture = image[0].permute(1, 2, 0).float()
    picture = (picture - picture.min()) / (picture.max() - picture.min() + 1e-6)
    return picture.numpy()


def overlay(ax, picture, heat, title, marks=()):
    height, width = picture.shape[:2]
    heat = F.interpolate(heat[None, None], size=(height, width), mode='bilinear',
                         align_corners=False)[0, 0].numpy()
    ax.imshow(picture)
    ax.imshow(heat, cmap='jet', alpha=0.5)
    for y, x in marks:
        ax.plot(x, y, 'r+', markersize=12, markeredgewidth=2)
    ax.set_title(title, fontsize=8)
    ax.axis('off')


def main(argv=None) -> List[str]:
    args = parse_args(argv)
    model, backbone, image = load_model_and_input(args)
    depth = len(backbone.blocks)
    blocks = [b for b in args.blocks if 1 <= b <= depth]
    if not blocks:
        raise SystemExit(f'--blocks {args.blocks}: this TNT has blocks 1..{depth}')
    attention = capture_attention(backbone, image)
    p = backbone.patch_size
    hp, wp = -(-image.shape[-2] // p), -(-image.shape[-1] // p)
    patches = args.patches or sorted({(hp // 4) * wp + wp // 4, (hp // 2) * wp + wp // 2,
                                      (3 * hp // 4) * wp + 3 * wp // 4})
    bad = [i for i in patches if not 0 <= i < hp * wp]
    if bad:
        raise SystemExit(f'--patches {bad} out of range: the image has {hp}x{wp} = {hp * wp}')
    picture = to_picture(F.pad(image, (0, wp * p - image.shape[-1], 0, hp * p - image.shape[-2])))
    side = backbone.pixel_embed.word_grid
    os.makedirs(args.out_dir, exist_ok=True)
    written = []

    # (a) inner attention: query words over the words of their patch
    inner_block = next((b for b in reversed(blocks) if attention['inner'][b - 1] is not None),
                       None)
    if inner_block is not None:
        weights = attention['inner'][inner_block - 1].mean(1)  # (B*N, m, m), heads averaged
        fig, axes = plt.subplots(len(patches), len(args.words) + 1,
                                 figsize=(2 * (len(args.words) + 1), 2 * len(patches)),
                                 squeeze=False)
        for row, patch in enumerate(patches):
            y0, x0 = (patch // wp) * p, (patch % wp) * p
            crop = picture[y0:y0 + p, x0:x0 + p]
            axes[row, 0].imshow(crop)
            axes[row, 0].set_title(f'patch {patch}', fontsize=8)
            axes[row, 0].axis('off')
            for col, word in enumerate(args.words, start=1):
                heat = weights[patch, word].reshape(side, side)
                mark = ((word // side + 0.5) * p / side, (word % side + 0.5) * p / side)
                overlay(axes[row, col], crop, heat, f'block {inner_block}, word {word}', [mark])
        written.append(osp.join(args.out_dir, 'inner_attention.png'))
        fig.tight_layout()
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)

    # (b) outer attention: chosen patches to all patches, (c) class token to all patches
    for name, queries in (('outer_attention.png', patches), ('cls_attention.png', [None])):
        fig, axes = plt.subplots(len(queries), len(blocks),
                                 figsize=(3 * len(blocks), 3 * len(queries)), squeeze=False)
        for row, patch in enumerate(queries):
            token = 0 if patch is None else 1 + patch
            for col, block in enumerate(blocks):
                weights = attention['outer'][block - 1][0].mean(0)  # (T, T)
                heat = weights[token, 1:].reshape(hp, wp)
                if patch is None:
                    overlay(axes[row, col], picture, heat, f'class token, block {block}')
                else:
                    mark = ((patch // wp + 0.5) * p, (patch % wp + 0.5) * p)
                    overlay(axes[row, col], picture, heat, f'patch {patch}, block {block}',
                            [mark])
        written.append(osp.join(args.out_dir, name))
        fig.tight_layout()
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)
    for path in written:
        print(f'wrote {path}')
    return written


if __name__ == '__main__':
    main()
