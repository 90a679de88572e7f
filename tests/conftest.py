import os.path as osp
import sys

# Let the test modules in sub-folders import tests/helpers.py.
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
