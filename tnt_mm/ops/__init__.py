"""TNT's inner transformer: the reference implementation, the fused kernels, and the one place
(:mod:`.dispatch`) that picks between them (``TNT_MM_INNER_BACKEND`` = auto | reference | cpu |
triton).
"""
from .cpu_kernels import load_extension
from .dispatch import (BACKENDS, BackendUnavailableError, inner_backend, inner_transformer,
                       patch_update, reference_attention, requested_backend, select)
from .params import InnerTransformerParams
from .triton_kernels import fused_norm

__all__ = ['BACKENDS', 'BackendUnavailableError', 'InnerTransformerParams', 'fused_norm',
           'inner_backend', 'inner_transformer', 'load_extension', 'patch_update',
           'reference_attention', 'requested_backend', 'select']
