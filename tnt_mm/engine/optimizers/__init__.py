from .layer_decay_constructor import LayerDecayOptimWrapperConstructor
from .merged_groups_constructor import (MergedGroupsOptimWrapperConstructor,
                                        merge_checkpoint_groups, merge_param_groups)

__all__ = ['LayerDecayOptimWrapperConstructor', 'MergedGroupsOptimWrapperConstructor',
           'merge_checkpoint_groups', 'merge_param_groups']
