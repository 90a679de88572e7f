"""tools/analysis/optimizer_step.py on the CPU: both constructors' wrappers over one model,
timed alternately, reported as a table and a JSON line."""
import json

import pytest
from helpers import load_tool


def test_times_both_constructors_of_a_config(capsys):
    tool = load_tool('tools/analysis/optimizer_step.py')
    rows = tool.main(['configs/demo/cls_shapes.py', '--device', 'cpu', '--warmup', '1',
                      '--steps', '2'])
    out = capsys.readouterr().out
    assert json.loads(out.strip().splitlines()[-1]) == dict(optimizer_step=rows)
    mmengine, merged = rows
    assert mmengine['constructor'] == 'DefaultOptimWrapperConstructor'
    assert merged['constructor'] == 'tnt_mm.MergedGroupsOptimWrapperConstructor'
    assert mmengine['groups'] == mmengine['tensors'] == merged['tensors'] > 100
    assert merged['groups'] == 3
    assert all(r['step_ms'] > 0 for r in rows)
    with pytest.raises(SystemExit):
        tool.main(['configs/demo/cls_shapes.py', '--steps', '0'])
