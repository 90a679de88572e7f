"""Sizes as the paper counts them (params with the classifier, MACs at 224)."""
import os.path as osp
import subprocess
import sys

import pytest
import torch

from tnt_mm.models import TNT
from tnt_mm.utils.complexity import complexity_table, count_macs

# The arithmetic of the official layout (trainable params, MACs at 224): ../PAPER.md.
ARITHMETIC = {'tiny': (6.08, 1.40), 'small': (23.77, 5.22), 'base': (65.43, 14.05)}


@pytest.fixture(scope='module')
def table():
    return {row['model']: row for row in complexity_table(224)}


def test_params_and_macs_match_the_paper(table):
    for name, row in table.items():
        # the paper rounds to one decimal
        assert abs(row['paper_count'] / 1e6 - row['paper_params']) <= 0.05 + 1e-9, row
        # TNT-B is 14.049 GMACs, the arithmetic's 14.05, which the paper prints as 14.1
        assert abs(row['macs'] / 1e9 - row['paper_gmacs']) < 0.06, row
    for name, (params, gmacs) in ARITHMETIC.items():
        assert round(table[name]['params'] / 1e6, 2) == params
        assert round(table[name]['macs'] / 1e9, 2) == gmacs


def test_macs_follow_the_paper_formula():
    """Per extra block: FLOPs_TNT = 2nmc(6c + m) + nmcd + 2nd(6d + n) (n = sentence tokens)."""
    arch = dict(inner_dim=24, inner_heads=4, outer_dim=384, outer_heads=6, depth=2)
    x = (torch.zeros(1, 3, 224, 224),)
    one, two = (count_macs(TNT({**arch, 'depth': d}, out_type='cls_token'), x) for d in (1, 2))
    n, m, c, d = 196, 16, 24, 384
    formula = 2 * n * m * c * (6 * c + m) + n * m * c * d + 2 * (n + 1) * d * (6 * d + n + 1)
    assert two - one == formula


def test_faster_rcnn_sizes_match_the_paper():
    """Supplement Table 2: Faster R-CNN + FPN with TNT-S 48.1M, with DeiT-S 46.4M; both
    backbones go through the same rescaling layers, which fixes their weight."""
    import timm
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    register_all_modules()
    import mmdet
    cfg = Config.fromfile(osp.join(osp.dirname(mmdet.__file__),
                                   '.mim/configs/faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'))
    cfg.model.backbone = dict(type='tnt_mm.TNT', arch='small')
    cfg.model.neck.in_channels = [384] * 4
    detector = MODELS.build(cfg.model)

    def count(module):
        return sum(p.numel() for p in module.parameters())
    assert round(count(detector) / 1e6, 1) == 48.1
    deit = timm.create_model('deit_small_patch16_224', num_classes=0)
    deit_detector = (count(detector) - count(detector.backbone) + count(detector.backbone.pyramid)
                     + count(deit) - count(deit.norm))
    assert round(deit_detector / 1e6, 1) == 46.4


@pytest.mark.slow
def test_get_flops_tool():
    result = subprocess.run([sys.executable, 'tools/analysis/get_flops.py', '--arch', 'tiny',
                             '--shape', '96', '160'], capture_output=True, text=True, check=True)
    assert "TNT-tiny backbone, out_type='pyramid', input 96x160" in result.stdout
