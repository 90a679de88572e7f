"""An interrupted tools/test.py or converter leaves nothing under the output name that a later
run could take for a complete file (both write a temporary file, then rename it)."""
import os
import os.path as osp

import pytest
import timm
import torch
from helpers import load_tool, toy_cls_options

make_shapes = load_tool('tools/data/make_shapes.py')
test = load_tool('tools/test.py')
tnt2mm = load_tool('tools/model_converters/tnt2mm.py')


def interrupt_after_writing(monkeypatch, module, name):
    """Make ``module.name(obj, file)`` write half a file, then die as on Ctrl-C."""
    def half_write(obj, file, *args, **kwargs):
        with open(file, 'wb') as f:
            f.write(b'PK\x03\x04 half a file')
        raise KeyboardInterrupt
    monkeypatch.setattr(module, name, half_write)


def test_converter_interrupted_while_writing(tmp_path, monkeypatch):
    src = tmp_path / 'timm.pth'
    torch.save(timm.create_model('tnt_s_patch16_224').state_dict(), src)
    dst = tmp_path / 'converted.pth'
    interrupt_after_writing(monkeypatch, tnt2mm.torch, 'save')
    with pytest.raises(KeyboardInterrupt):
        tnt2mm.main([str(src), str(dst)])
    assert os.listdir(tmp_path) == ['timm.pth']  # no destination, no temporary file left


@pytest.mark.slow  # runs a Runner
def test_test_tool_interrupted_while_dumping(tmp_path, monkeypatch):
    from mmengine.evaluator import metric as dump_results  # DumpResults calls its dump()
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    data = str(tmp_path / 'shapes')
    make_shapes.main(['imagenet', data, '--num-train', '6', '--num-val', '6', '--size', '16'])
    options = toy_cls_options(data)
    # a checkpoint of the model as the config builds it
    cfg = test.build_config(test.parse_args(['configs/demo/cls_shapes.py', 'unused.pth',
                                             '--work-dir', str(tmp_path / 'w'),
                                             '--cfg-options', *options]))
    init_default_scope('mmpretrain')
    checkpoint = str(tmp_path / 'model.pth')
    torch.save(dict(state_dict=MODELS.build(cfg.model).state_dict()), checkpoint)

    out = str(tmp_path / 'preds.pkl')
    interrupt_after_writing(monkeypatch, dump_results, 'dump')
    with pytest.raises(KeyboardInterrupt):
        test.main(['configs/demo/cls_shapes.py', checkpoint, '--work-dir', str(tmp_path / 'w'),
                   '--out', out, '--cfg-options', *options])
    assert not osp.exists(out)
