"""frozen_stages, as mmdet and mmpretrain backbones have it: -1 nothing, 0 the embeddings, k the
embeddings and the first k blocks; frozen parts get no gradient, keep their weights through an
optimizer step, and stay in eval mode (no dropout, no stochastic depth) through train()."""
import pytest
import torch

from tnt_mm.models import TNT

ARCH = dict(inner_dim=12, inner_heads=2, outer_dim=96, outer_heads=2, depth=4)
EMBEDDINGS = ('pixel_embed.', 'norm1_proj.', 'proj.', 'norm2_proj.', 'cls_token', 'patch_pos',
              'pixel_pos')


def frozen_names(model):
    return {n for n, p in model.named_parameters() if not p.requires_grad}


def expected_frozen(model, stages):
    if stages < 0:
        return set()
    return {n for n, _ in model.named_parameters()
            if n.startswith(EMBEDDINGS) or (n.startswith('blocks.')
                                            and int(n.split('.')[1]) < stages)}


@pytest.mark.parametrize('stages', [-1, 0, 1, 3])
def test_frozen_parameters_and_modes(stages):
    model = TNT(ARCH, out_type='pyramid', frozen_stages=stages, drop_path_rate=0.2)
    assert frozen_names(model) == expected_frozen(model, stages)
    model.train()
    for i, block in enumerate(model.blocks):
        assert block.training == (i >= stages), i
        assert all(m.training == (i >= stages) for m in block.modules())
    assert model.pixel_embed.training == (stages < 0)
    assert model.pyramid.training  # never frozen


def test_a_training_step_leaves_frozen_weights_alone():
    torch.manual_seed(0)
    # no stochastic depth: a block whose branch happens to be dropped for the whole batch would
    # get zero gradients and look frozen
    model = TNT(ARCH, out_type='featmap', out_indices=(1, 3), frozen_stages=2).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = sum(f.square().mean() for f in model(torch.randn(2, 3, 48, 64)))
    loss.backward()
    optimizer.step()
    frozen = expected_frozen(model, 2)
    for name, param in model.named_parameters():
        if name in frozen:
            assert param.grad is None and torch.equal(param, before[name]), name
        else:
            assert param.grad is not None and not torch.equal(param, before[name]), name


def test_frozen_blocks_run_without_dropout_in_training():
    """The output of the last frozen block does not depend on the random state in train mode
    (its dropout and stochastic depth are off); the first unfrozen block's does."""
    torch.manual_seed(0)
    model = TNT(ARCH, out_type='featmap', out_indices=(1, 2), frozen_stages=2,
                drop_path_rate=0.5, drop_rate=0.2).train()
    x = torch.randn(1, 3, 48, 64)
    runs = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        with torch.no_grad():
            runs.append(model(x))
    assert torch.equal(runs[0][0], runs[1][0])  # block 2 of 4, frozen
    assert not torch.equal(runs[0][1], runs[1][1])  # block 3, training


def test_out_of_range_says_what_is_allowed():
    with pytest.raises(ValueError, match=r'frozen_stages=5 is out of range: -1 \(nothing\), 0 '
                                         r'\(the embeddings\) or 1..4'):
        TNT(ARCH, frozen_stages=5)
    with pytest.raises(ValueError, match='frozen_stages=-2'):
        TNT(ARCH, frozen_stages=-2)
