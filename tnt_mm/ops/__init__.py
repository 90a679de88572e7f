"""TNT's inner transformer: the reference implementation, the fused kernels, and the one place
(:mod:`.dispatch`) that picks between them (``TNT_MM_INNER_BACKEND`` = auto | reference | cpu |
triton), and the Triton kernels' opt-ins (``TNT_MM_TRITON_FUSED_NORM``,
``TNT_MM_TRITON_LAUNCH``).
"""
from .cpu_kernels import load_extension
from .dispatch import (BACKENDS, BackendUnavailableError, inner_backend, inner_transformer,
                       patch_update, reference_attention, requested_backend, select)
from .params import InnerTransformerParams
from .triton_kernels import fused_norm, launch_settings

__all__ = ['BACKENDS', 'BackendUnavailableError', 'InnerTransformerParams', 'fused_norm',
           'inner_backend', 'inner_transformer', 'launch_settings', 'load_extension',
           'patch_update', 'reference_attention', 'requested_backend', 'select']
