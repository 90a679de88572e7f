"""Shared helpers for the tests."""
import contextlib
import os.path as osp

import torch
import torch.nn as nn


def randomise_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter random values at the scale of a trained network.

    Norm weights and all biases are randomised too (an initialised model has them at 1 and 0,
    which hides any mix-up between them); matrices keep a small std so that activations stay
    at the size of a real network's (std 2-5 after 12 blocks).
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=gen)
            if param.dim() == 1 and name.endswith('weight'):  # norm scales
                param.copy_(1 + 0.2 * noise)
            elif name.endswith('bias'):
                param.copy_(0.05 * noise)
            elif 'pos' in name or 'cls_token' in name:
                param.copy_(0.1 * noise)
            else:
                param.copy_(0.03 * noise)
    return model


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def load_tool(relative_path: str):
    """Import a script under tools/ as a module (tools/ is not a package)."""
    import importlib.util
    import os.path as osp
    root = osp.dirname(osp.dirname(osp.abspath(__file__)))
    path = osp.join(root, relative_path)
    spec = importlib.util.spec_from_file_location(osp.splitext(osp.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def toy_cls_options(data_root: str, max_epochs: int = 2) -> list:
    """``--cfg-options`` that shrink configs/demo/cls_shapes.py to seconds: data written by
    ``make_shapes.py imagenet DATA --num-train 24 --num-val 12 --size 32``, no worker
    processes, a checkpoint every epoch."""
    return [f'train_cfg.max_epochs={max_epochs}', 'train_cfg.val_interval=1',
            'train_dataloader.num_workers=0', 'val_dataloader.num_workers=0',
            'train_dataloader.persistent_workers=False', 'val_dataloader.persistent_workers=False',
            # the configs copy val_dataloader into test_dataloader when they are read
            'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False',
            'train_dataloader.batch_size=12', 'default_hooks.checkpoint.interval=1',
            'default_hooks.checkpoint.max_keep_ckpts=-1',
            'param_scheduler.0.end=1', 'param_scheduler.1.begin=1',
            'model.backbone.pretrain_img_size=32',
            f'train_dataloader.dataset.data_root={data_root}',
            f'val_dataloader.dataset.data_root={data_root}',
            f'test_dataloader.dataset.data_root={data_root}']


def toy_det_options(data_root: str) -> list:
    """``--cfg-options`` that shrink the detection demos (configs/demo/det_shapes.py,
    mask_shapes.py) to seconds: data written by ``make_shapes.py coco DATA --num-train 8
    --num-val 4 --size 96``, 2 epochs of batch 4, no worker processes, a checkpoint every
    epoch."""
    ann = osp.join(data_root, 'annotations', 'instances_val2017.json')
    return [
        'train_cfg.max_epochs=2', 'train_cfg.val_interval=2', 'train_dataloader.batch_size=4',
        'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
        'val_dataloader.num_workers=0', 'val_dataloader.persistent_workers=False',
        'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False',
        'default_hooks.checkpoint.interval=1', 'param_scheduler.1.end=2',
        f'train_dataloader.dataset.data_root={data_root}',
        f'val_dataloader.dataset.data_root={data_root}',
        f'test_dataloader.dataset.data_root={data_root}', f'val_evaluator.ann_file={ann}',
        f'test_evaluator.ann_file={ann}']


def train_toy_detector(config: str, root) -> tuple:
    """Generate the toy COCO shapes under ``root`` and train ``config`` on them through
    tools/train.py with :func:`toy_det_options`: (work_dir, data_root, options)."""
    data, work_dir = str(root / 'shapes_coco'), str(root / 'work')
    load_tool('tools/data/make_shapes.py').main(
        ['coco', data, '--num-train', '8', '--num-val', '4', '--size', '96'])
    options = toy_det_options(data)
    load_tool('tools/train.py').main([config, '--work-dir', work_dir, '--cfg-options', *options])
    return work_dir, data, options


@contextlib.contextmanager
def kept_default_scope():
    """Undo the default registry scope that a Runner or ``init_default_scope`` sets inside the
    block. mmengine keeps it process-wide: left behind, it decides which library's classes a
    later test builds (an mmseg head would get mmpretrain's CrossEntropyLoss)."""
    from mmengine.registry import DefaultScope
    before = dict(DefaultScope._instance_dict)
    try:
        yield
    finally:
        DefaultScope._instance_dict.clear()
        DefaultScope._instance_dict.update(before)


def assert_same_state(a: dict, b: dict, where: str) -> None:
    """Two training checkpoints hold the same state: iteration, schedulers, weights, optimizer
    moments and the logged learning rates, bit for bit."""
    assert a['meta']['epoch'] == b['meta']['epoch'] and a['meta']['iter'] == b['meta']['iter'], \
        where
    assert a['param_schedulers'] == b['param_schedulers'], where
    for name in a['state_dict']:
        assert torch.equal(a['state_dict'][name], b['state_dict'][name]), f'{where}: {name}'
    state_a, state_b = a['optimizer']['state'], b['optimizer']['state']
    assert state_a.keys() == state_b.keys(), where
    for index in state_a:
        for key in ('step', 'exp_avg', 'exp_avg_sq'):
            assert torch.equal(torch.as_tensor(state_a[index][key]),
                               torch.as_tensor(state_b[index][key])), f'{where}: {index}.{key}'
    lr_a = a['message_hub']['log_scalars']['train/lr']['log']
    lr_b = b['message_hub']['log_scalars']['train/lr']['log']
    assert torch.equal(lr_a, lr_b), where
