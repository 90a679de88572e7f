"""Fixtures shared by the whole suite."""
import os
import os.path as osp
import sys

import pytest

# Triton kernels run in Triton's interpreter on CPU tensors, which needs the switch set before
# anything imports Triton. The suite never runs kernels on a GPU (the GPU checks are the
# benchmark's); the ahead-of-time compile test runs its tool in a process without the switch.
os.environ.setdefault('TRITON_INTERPRET', '1')

try:  # and compute bfloat16 there as a GPU does (Triton 3.8's interpreter does not)
    from tnt_mm.ops.triton_kernels import fix_interpreter_bf16
    fix_interpreter_bf16()
except ImportError:  # no Triton: its tests say so
    pass

# Let the test modules in sub-folders import tests/helpers.py.
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

from helpers import kept_default_scope, load_tool  # noqa: E402


@pytest.fixture(autouse=True)
def _no_scope_leak():
    """mmengine keeps the default registry scope process-wide; a Runner built by one test must
    not decide which library's classes a later test builds."""
    with kept_default_scope():
        yield


@pytest.fixture(scope='session')
def toy_cls_data(tmp_path_factory) -> str:
    """A tiny classification dataset in the ImageNet layout (24 train, 12 val images of 32x32),
    made once per session; the tests only read it."""
    root = str(tmp_path_factory.mktemp('toy_cls') / 'shapes')
    load_tool('tools/data/make_shapes.py').main(
        ['imagenet', root, '--num-train', '24', '--num-val', '12', '--size', '32'])
    return root
