# Shared by the CPU demos on generated shapes (tools/data/make_shapes.py), so that their
# results compare and the classifier's checkpoint initialises the detector's backbone.
classes = ('circle', 'square', 'triangle', 'cross', 'ring', 'star')
# TNT-Ti widths with 6 blocks instead of 12: twice the optimiser steps per minute
demo_arch = dict(inner_dim=12, inner_heads=2, outer_dim=192, outer_heads=3, depth=6)
demo_seed = 0
