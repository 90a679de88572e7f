"""Deployment: ONNX export of tnt_mm models (``tools/deployment/pytorch2onnx.py``)."""
from .onnx_export import (ExportError, build_from_config, export_onnx, tensor_path,
                          verify_onnx)

__all__ = ['ExportError', 'build_from_config', 'export_onnx', 'tensor_path', 'verify_onnx']
