"""A user's mistake on the command line reads as one ``error:`` line naming the bad value and a
non-zero exit code (2 for a bad argument), not a traceback; ``--debug`` or ``TNT_MM_DEBUG=1``
shows the traceback. Programming errors keep theirs."""
import os
import subprocess
import sys

import pytest
import torch
from helpers import load_tool

from tnt_mm.utils.cli import run_cli

CLS = 'configs/demo/cls_shapes.py'


def cases(tmp):
    """(tool, argv, exit code, text the message must hold) for each mistake."""
    nowhere = f'{tmp}/nowhere'
    return [
        ('tools/train.py', ['configs/nope.py'], 2, 'config configs/nope.py does not exist'),
        ('tools/train.py', [CLS, '--cfg-options', f'train_dataloader.dataset.data_root={nowhere}'],
         1, f"data_root='{nowhere}' is not a directory"),
        ('tools/train.py', [CLS, '--cfg-options', 'train_cfg.max_epochs.x=1'], 2,
         'train_cfg.max_epochs.x=1: train_cfg.max_epochs is 12'),
        ('tools/train.py', [CLS, '--cfg-options', 'train_cfg.max_epochs=two'], 2,
         'train_cfg.max_epochs=two: expected a number'),
        ('tools/train.py', [CLS, '--cfg-options', 'train_cfg.max_epochs'], 2,
         'train_cfg.max_epochs: expected KEY=VALUE'),
        ('tools/train.py', [CLS, '--cfg-options', 'param_scheduler.5.end=1'], 2,
         'param_scheduler is a list of 2 entries'),
        ('tools/train.py', [CLS, '--resume', f'{nowhere}.pth'], 2,
         f'--resume {nowhere}.pth does not exist'),
        ('tools/train.py', ['configs/faster_rcnn_tnt_ti_fpn.py', '--cfg-options',
                            f'model.backbone.init_cfg.checkpoint={nowhere}.pth'], 1,
         f'model.backbone.init_cfg.checkpoint: {nowhere}.pth does not exist'),
        ('tools/test.py', [CLS, f'{nowhere}.pth'], 2, f'checkpoint {nowhere}.pth does not exist'),
        ('tools/model_converters/tnt2mm.py', [f'{tmp}/other.pth', f'{tmp}/out.pth'], 1,
         'other.pth: not a TNT checkpoint'),
        ('tools/model_converters/tnt2mm.py', [f'{nowhere}.pth', f'{tmp}/out.pth'], 2,
         f'checkpoint {nowhere}.pth does not exist'),
        ('tools/analysis/get_flops.py', ['--config', 'configs/nope.py'], 2,
         'config configs/nope.py does not exist'),
        ('tools/demo/detect_image.py', ['configs/demo/det_shapes.py', f'{tmp}/other.pth',
                                        f'{nowhere}.png'], 2, f'image {nowhere}.png does not exist'),
        ('tools/demo/backbone_demo.py', ['--image', f'{nowhere}.png'], 2,
         f'--image {nowhere}.png does not exist'),
    ]


@pytest.fixture
def other_checkpoint(tmp_path):
    """A checkpoint of some other network: the converter cannot convert it."""
    torch.save({'conv.weight': torch.zeros(2, 3, 1, 1)}, tmp_path / 'other.pth')
    return str(tmp_path / 'other.pth')


@pytest.mark.parametrize('index', range(len(cases('TMP'))))
def test_user_mistake_is_one_error_line(index, tmp_path, other_checkpoint, capsys):
    tool, argv, code, text = cases(str(tmp_path))[index]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(load_tool(tool).main, argv)
    assert exit_info.value.code == code
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), lines
    assert text in lines[0], lines


def test_programming_errors_keep_their_traceback():
    def main(argv):
        return {}['missing']
    with pytest.raises(KeyError):
        run_cli(main, [])


def run_converter(src, tmp_path, *extra, env=None):
    return subprocess.run([sys.executable, 'tools/model_converters/tnt2mm.py', src,
                           str(tmp_path / 'out.pth'), *extra], capture_output=True, text=True,
                          env=dict(os.environ, **(env or {})), timeout=300)


@pytest.mark.slow
def test_command_line_prints_no_traceback(tmp_path, other_checkpoint):
    result = run_converter(other_checkpoint, tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f'error: {other_checkpoint}: not a TNT'), \
        result.stderr
    assert 'Traceback' not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize('how', ['--debug', 'TNT_MM_DEBUG=1'])
def test_debug_shows_the_traceback(how, tmp_path, other_checkpoint):
    if how == '--debug':
        result = run_converter(other_checkpoint, tmp_path, '--debug')
    else:
        result = run_converter(other_checkpoint, tmp_path, env=dict(TNT_MM_DEBUG='1'))
    assert result.returncode != 0
    assert 'Traceback' in result.stderr and 'CheckpointFormatError' in result.stderr, \
        result.stderr
