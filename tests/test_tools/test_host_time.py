"""tools/analysis/host_time.py: the narrow models' training steps on CPU tensors, the Triton
backend's autograd path run with its launches skipped, and nothing left patched."""
import json

import pytest
import torch
from helpers import load_tool

from tnt_mm.ops import triton_kernels


def test_times_each_row_against_deit(tmp_path, capsys):
    tool = load_tool('tools/analysis/host_time.py')
    launch, interpreting = triton_kernels._launch, triton_kernels.interpreting
    threads = torch.get_num_threads()
    out = tmp_path / 'host.json'
    rows = tool.main(['--backends', 'triton', 'reference', '--rounds', '1', '--steps', '1',
                      '--json', str(out)])
    assert triton_kernels._launch is launch and triton_kernels.interpreting is interpreting
    assert torch.get_num_threads() == threads
    triton, reference, deit = (rows[f'{tool.OURS} [triton]'], rows[f'{tool.OURS} [reference]'],
                               rows[tool.DEIT])
    assert deit['ratio'] == 1 and all(r['ms'] > 0 for r in rows.values())
    # the kernels are one autograd node for the whole inner transformer: the Triton path ran
    assert deit['autograd_nodes'] < triton['autograd_nodes'] < reference['autograd_nodes']
    assert json.loads(out.read_text())['rows'] == rows
    assert '| timm DeiT-S |' in capsys.readouterr().out
    with pytest.raises(SystemExit):
        tool.main(['--rounds', '0'])
