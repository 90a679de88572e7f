"""MergedGroupsOptimWrapperConstructor: every parameter keeps the settings mmengine's
constructor gives it, in one group per setting; training is the same, step for step; a run
saved with one group per parameter resumes."""
import copy

import pytest
import torch
from mmengine.optim import DefaultOptimWrapperConstructor

from tnt_mm.engine import MergedGroupsOptimWrapperConstructor
from tnt_mm.engine.optimizers import merge_param_groups
from tnt_mm.models import TNT

OPTIM = dict(type='OptimWrapper',
             optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05, foreach=True))
PARAMWISE = dict(norm_decay_mult=0.0, bias_decay_mult=0.0,
                 custom_keys={'.cls_token': dict(decay_mult=0.0),
                              'head': dict(lr_mult=10.0)})


class Classifier(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = TNT(dict(inner_dim=12, inner_heads=2, outer_dim=48, outer_heads=2,
                                 depth=2), pretrain_img_size=32, out_type='cls_token')
        self.head = torch.nn.Linear(48, 3)

    def loss(self, images, labels):
        return torch.nn.functional.cross_entropy(self.head(self.backbone(images)[0]), labels)


def settings_by_name(model, optimizer):
    """Parameter name -> its group's settings (all but the parameters)."""
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: {k: v for k, v in g.items() if k != 'params'}
            for g in optimizer.param_groups for p in g['params']}


def train(model, wrapper, steps, seed=0):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        images = torch.randn(4, 3, 32, 32, generator=generator)
        labels = torch.randint(0, 3, (4,), generator=generator)
        wrapper.update_params(model.loss(images, labels))


def build(constructor, model):
    return constructor(copy.deepcopy(OPTIM), copy.deepcopy(PARAMWISE))(model)


def test_merge_keeps_order_and_settings():
    a, b, c, d = (torch.nn.Parameter(torch.zeros(1)) for _ in range(4))
    lr = torch.tensor(0.1)
    groups = [dict(params=[a], lr=1.0), dict(params=[b], lr=2.0), dict(params=[c], lr=1.0),
              dict(params=[d], lr=1.0, decay_mult=0.0), dict(params=[a], lr=lr),
              dict(params=[b], lr=torch.tensor(0.1))]
    merged = merge_param_groups(groups)
    assert [[id(p) for p in g['params']] for g in merged] == \
        [[id(a), id(c)], [id(b)], [id(d)], [id(a)], [id(b)]]
    assert [{k: v for k, v in g.items() if k != 'params'} for g in merged[:3]] == \
        [dict(lr=1.0), dict(lr=2.0), dict(lr=1.0, decay_mult=0.0)]
    assert merged[3]['lr'] is lr  # a tensor setting merges only with itself
    assert len(groups[0]['params']) == 1  # the input is left as it was


def test_same_settings_as_mmengine_in_few_groups():
    model = Classifier()
    default = build(DefaultOptimWrapperConstructor, model).optimizer
    merged = build(MergedGroupsOptimWrapperConstructor, model).optimizer
    expected = settings_by_name(model, default)
    assert len(default.param_groups) == len(expected) == len(list(model.parameters()))
    assert settings_by_name(model, merged) == expected
    distinct = {tuple(sorted(s.items())) for s in expected.values()}
    assert len(merged.param_groups) == len(distinct) == 4
    assert all(type(g) is dict for g in merged.param_groups)


@pytest.mark.parametrize('clip', [None, dict(max_norm=0.01)])
def test_training_is_the_same_step_for_step(clip):
    """Bit for bit; with clipping the total norm sums the parameters in another order."""
    torch.manual_seed(0)
    model = Classifier()
    twin = copy.deepcopy(model)
    optim = dict(OPTIM, clip_grad=clip) if clip else OPTIM
    train(model, DefaultOptimWrapperConstructor(copy.deepcopy(optim),
                                                copy.deepcopy(PARAMWISE))(model), steps=3)
    train(twin, MergedGroupsOptimWrapperConstructor(copy.deepcopy(optim),
                                                    copy.deepcopy(PARAMWISE))(twin), steps=3)
    for (name, param), other in zip(model.named_parameters(), twin.parameters()):
        if clip:
            torch.testing.assert_close(param, other, rtol=0, atol=1e-6, msg=name)
        else:
            assert torch.equal(param, other), name


def test_resumes_a_run_saved_with_one_group_per_parameter():
    """Two steps with mmengine's groups, saved, resumed with merged groups for two more: the
    same weights as four steps with mmengine's. A state dict of another model is refused."""
    torch.manual_seed(0)
    model = Classifier()
    reference = copy.deepcopy(model)
    unmerged = build(DefaultOptimWrapperConstructor, reference)
    train(reference, unmerged, steps=2)
    train(reference, unmerged, steps=2, seed=1)

    first = build(DefaultOptimWrapperConstructor, model)
    train(model, first, steps=2)
    resumed = build(MergedGroupsOptimWrapperConstructor, model)
    resumed.load_state_dict(copy.deepcopy(first.state_dict()))
    assert len(resumed.optimizer.param_groups) == 4
    assert resumed.optimizer.state[model.head.weight]['step'] == 2
    train(model, resumed, steps=2, seed=1)
    for (name, param), other in zip(model.named_parameters(), reference.parameters()):
        assert torch.equal(param, other), name

    other = DefaultOptimWrapperConstructor(copy.deepcopy(OPTIM), dict(norm_decay_mult=0.0))
    with pytest.raises(ValueError, match='parameter group'):
        resumed.load_state_dict(other(torch.nn.Linear(2, 2)).state_dict())


def schedulers_of(wrapper):
    from mmengine.optim import CosineAnnealingLR, LinearLR
    # short cosine periods: its restarts (steps 3 and 7) read the schedulers' base values
    return [LinearLR(wrapper, start_factor=0.1, end=2, by_epoch=False),
            CosineAnnealingLR(wrapper, T_max=2, begin=0, end=12, by_epoch=False)]


def run(model, wrapper, schedulers, steps, seed):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        images = torch.randn(4, 3, 32, 32, generator=generator)
        labels = torch.randint(0, 3, (4,), generator=generator)
        wrapper.update_params(model.loss(images, labels))
        for scheduler in schedulers:
            scheduler.step()


def test_a_runner_checkpoint_with_one_group_per_parameter_resumes_with_its_lrs():
    """A training checkpoint (model, optimizer, lr schedulers) from mmengine's constructor,
    with the head at 10x the lr, resumed through SafeCheckpointHook into merged groups: the
    same lrs and weights as the run that went on unmerged. The schedulers' per-group lists
    are cut with the groups (else the head's group would take the first parameter's lr)."""
    from types import SimpleNamespace

    from tnt_mm.engine import SafeCheckpointHook
    torch.manual_seed(0)
    model = Classifier()
    wrapper = build(DefaultOptimWrapperConstructor, model)
    schedulers = schedulers_of(wrapper)
    run(model, wrapper, schedulers, steps=3, seed=0)
    checkpoint = copy.deepcopy(dict(state_dict=model.state_dict(),
                                    optimizer=wrapper.state_dict(),
                                    param_schedulers=[s.state_dict() for s in schedulers]))
    run(model, wrapper, schedulers, steps=6, seed=1)  # the uninterrupted run

    resumed = Classifier()
    resumed.load_state_dict(checkpoint['state_dict'])
    merged = build(MergedGroupsOptimWrapperConstructor, resumed)
    merged_schedulers = schedulers_of(merged)
    runner = SimpleNamespace(optim_wrapper=merged, model=resumed)
    SafeCheckpointHook(strict=False).after_load_checkpoint(runner, checkpoint)
    assert len(checkpoint['optimizer']['param_groups']) == 4
    # one entry per merged group, and the last for mmengine's OptimWrapper's base settings
    assert all(len(s['base_values']) == 5 for s in checkpoint['param_schedulers'])
    merged.load_state_dict(checkpoint['optimizer'])
    for scheduler, state in zip(merged_schedulers, checkpoint['param_schedulers']):
        scheduler.load_state_dict(state)
    run(resumed, merged, merged_schedulers, steps=6, seed=1)

    lrs = settings_by_name(model, wrapper.optimizer)
    assert {n: s['lr'] for n, s in settings_by_name(resumed, merged.optimizer).items()} == \
        {n: s['lr'] for n, s in lrs.items()}
    assert lrs['head.weight']['lr'] == pytest.approx(10 * lrs['backbone.cls_token']['lr'])
    for (name, param), other in zip(model.named_parameters(), resumed.parameters()):
        assert torch.equal(param, other), name
