"""Shared helpers for the tests."""
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
