"""Compiled kernels: optional accelerations with a reference PyTorch path beside each."""
from .cpu_kernels import (inner_kernel_applies, inner_transformer, kernel_applies,
                          load_extension, reference_attention, word_attention)

__all__ = ['inner_kernel_applies', 'inner_transformer', 'kernel_applies', 'load_extension',
           'reference_attention', 'word_attention']
