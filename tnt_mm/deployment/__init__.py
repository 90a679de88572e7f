"""Deployment: ONNX export of tnt_mm models (``tools/deployment/pytorch2onnx.py``), whole
detectors included (:mod:`.detector_export`)."""
from .onnx_export import (ExportError, build_from_config, export_module, export_onnx,
                          read_metadata, verify_onnx)

__all__ = ['ExportError', 'build_from_config', 'export_module', 'export_onnx', 'read_metadata',
           'verify_onnx']
