"""Compiled kernels: optional accelerations with a reference PyTorch path beside each."""
from .cpu_kernels import kernel_applies, load_extension, reference_attention, word_attention

__all__ = ['kernel_applies', 'load_extension', 'reference_attention', 'word_attention']
