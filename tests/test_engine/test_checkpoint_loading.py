"""Checkpoints are read safely on every path of this package (its Pretrained path, its tools,
the converter), trusted per file only, and strictly: a pickle that would run code is refused
there and never runs. Importing the package changes no loader of mmengine's."""
import os
import pickle
import subprocess
import sys

import pytest
import torch
from helpers import load_tool, toy_cls_options
from mmengine.runner import load_checkpoint
from mmengine.runner.checkpoint import CheckpointLoader

import tnt_mm  # noqa: F401  (adds the trusted:// and hf-hub: prefixes)
from tnt_mm.engine.checkpoint import (TRUSTED_PREFIX, load_checkpoint_safely,
                                      safe_checkpoint_loading)
from tnt_mm.models import TNT

train = load_tool('tools/train.py')
test = load_tool('tools/test.py')
CONFIG = 'configs/demo/cls_shapes.py'
REFUSED = r"holds Python objects besides tensors \(it refers to posix.mkdir\)"


class Payload:
    """Unpickling this calls ``os.mkdir(marker)``: a stand-in for ``os.system(...)``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


@pytest.fixture
def malicious(tmp_path, monkeypatch):
    """A converted TNT checkpoint that also carries the payload; returns (path, marker).

    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` makes torch default to ``weights_only=False`` as torch
    < 2.6 does, so only an explicit ``weights_only=True`` protects (mmengine's own loader
    passes none).
    """
    marker = str(tmp_path / 'payload_ran')
    state = {f'backbone.{k}': v for k, v in TNT('tiny', out_type='cls_token').state_dict().items()}
    path = str(tmp_path / 'malicious.pth')
    torch.save(dict(state_dict=state, meta=dict(note=Payload(marker))), path)
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    yield path, marker
    assert not os.path.exists(marker), 'the payload ran'


def test_safe_loading_refuses(malicious):
    path, _ = malicious
    with pytest.raises(pickle.UnpicklingError, match=REFUSED + r'.*"trusted://'):
        load_checkpoint_safely(path)
    with safe_checkpoint_loading():  # mmengine's loaders and public API within the block
        with pytest.raises(pickle.UnpicklingError, match=REFUSED):
            CheckpointLoader.load_checkpoint(path)
        with pytest.raises(pickle.UnpicklingError, match=REFUSED):
            load_checkpoint(TNT('tiny', out_type='cls_token'), path)


def test_import_changes_no_loader_of_mmengine():
    """In a fresh process: after importing the package and every module the configs name,
    mmengine's loader of a plain path is mmengine's own function, every other loader is as it
    was, and only this package's prefixes were added; the safe loader is in place within
    ``safe_checkpoint_loading()`` only. Triton's interpreter is left as it is (the tests fix
    its bfloat16 explicitly, tests/conftest.py)."""
    code = (
        'import mmengine.runner.checkpoint as c\n'
        'before = dict(c.CheckpointLoader._schemes)\n'
        'import tnt_mm, tnt_mm.models, tnt_mm.engine, tnt_mm.evaluation, tnt_mm.registry\n'
        'from tnt_mm.engine.checkpoint import load_local, safe_checkpoint_loading\n'
        'after = dict(c.CheckpointLoader._schemes)\n'
        'assert after[""] is c.load_from_local, after[""]\n'
        'assert all(after[k] is v for k, v in before.items())\n'
        'assert set(after) - set(before) == {"trusted://", "hf-hub:"}, set(after) - set(before)\n'
        'with safe_checkpoint_loading():\n'
        '    assert c.CheckpointLoader._schemes[""] is load_local\n'
        'assert c.CheckpointLoader._schemes[""] is c.load_from_local\n'
        'from tnt_mm.ops import triton_kernels\n'
        'triton_kernels.kernels()  # the kernels defined, in the interpreter\n'
        'import triton.runtime.interpreter as i\n'
        'assert not getattr(i.InterpreterBuilder, "_tnt_mm_bf16", False)\n'
        'print("ok")\n')
    env = dict(os.environ, TRITON_INTERPRET='1')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            env=env)
    assert result.returncode == 0 and result.stdout.strip() == 'ok', result.stderr[-2000:]


def test_backbone_init_cfg_refuses(malicious):
    path, _ = malicious
    model = TNT('tiny', out_type='cls_token', init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(pickle.UnpicklingError, match=REFUSED):
        model.init_weights()


@pytest.mark.slow
def test_converter_refuses(malicious, tmp_path):
    path, _ = malicious
    result = subprocess.run([sys.executable, 'tools/model_converters/tnt2mm.py', path,
                             str(tmp_path / 'out.pth')], capture_output=True, text=True,
                            env=dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD='1'))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and 'posix.mkdir' in lines[0] and '--trust-pickle' in lines[0], \
        result.stderr
    assert not (tmp_path / 'out.pth').exists()


def test_test_tool_and_resume_refuse(malicious, toy_cls_data, tmp_path):
    path, _ = malicious
    options = toy_cls_options(toy_cls_data)
    with pytest.raises(pickle.UnpicklingError, match=REFUSED):
        test.main([CONFIG, path, '--work-dir', str(tmp_path), '--cfg-options', *options])
    with pytest.raises(pickle.UnpicklingError, match=REFUSED):
        train.main([CONFIG, '--work-dir', str(tmp_path), '--resume', path,
                    '--cfg-options', *options])


def test_trusted_prefix_is_a_per_file_opt_in(tmp_path):
    """``trusted://`` loads a file with other Python objects (here the argparse settings that
    the official training checkpoints carry); the same file without it is still refused."""
    import argparse
    path = str(tmp_path / 'official.pth.tar')
    torch.save(dict(state_dict={'w': torch.ones(2)}, args=argparse.Namespace(lr=0.1)), path)
    with pytest.raises(pickle.UnpicklingError, match='it refers to argparse.Namespace'):
        load_checkpoint_safely(path)
    loaded = load_checkpoint_safely(TRUSTED_PREFIX + path)
    assert loaded['args'].lr == 0.1
    assert CheckpointLoader.load_checkpoint(TRUSTED_PREFIX + path)['args'].lr == 0.1
    with pytest.raises(pickle.UnpicklingError):  # trusting one file trusted nothing else
        load_checkpoint_safely(path)


@pytest.mark.slow
@pytest.mark.parametrize('damage', ['truncated', 'garbage'])
def test_damaged_checkpoint_named(tmp_path, damage):
    """The Runner's loader and the converter name a damaged file as such (a garbage file fails
    unpickling, which must not read as "holds Python objects")."""
    path = tmp_path / 'damaged.pth'
    torch.save(dict(state_dict=TNT('tiny', out_type='cls_token').state_dict()), path)
    path.write_bytes(path.read_bytes()[:4000] if damage == 'truncated' else b'garbage' * 100)
    with pytest.raises(RuntimeError, match=r'cannot read .*damaged.pth as a PyTorch checkpoint; '
                                           r'it may be truncated or corrupted'):
        load_checkpoint_safely(str(path))
    result = subprocess.run([sys.executable, 'tools/model_converters/tnt2mm.py', str(path),
                             str(tmp_path / 'out.pth')], capture_output=True, text=True)
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1, result.stderr
    assert 'cannot read' in lines[0] and 'truncated or corrupted' in lines[0], lines


def test_load_from_is_strict(toy_cls_data, tmp_path):
    """tools/test.py with a checkpoint of another architecture: mmengine's Runner would warn
    and score random weights; here it stops with the list of differences."""
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    options = toy_cls_options(toy_cls_data)
    cfg = test.build_config(test.parse_args([CONFIG, 'unused.pth', '--cfg-options', *options,
                                             'model.backbone.arch.depth=4']))
    init_default_scope('mmpretrain')
    other = MODELS.build(cfg.model)  # 4 blocks instead of 6
    path = str(tmp_path / 'other.pth')
    torch.save(dict(state_dict=other.state_dict(), meta=dict()), path)
    with pytest.raises(RuntimeError, match=r'does not match the model ImageClassifier.*\n'
                                           r'  missing from the checkpoint \(\d+\): '
                                           r"\['backbone.blocks.4."):
        test.main([CONFIG, path, '--work-dir', str(tmp_path), '--cfg-options', *options])
