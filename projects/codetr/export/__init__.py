"""Deployment: ONNX export of the detectors (see ``export_onnx``) and the narrow interface the
exporter reads them through (``codetr.export.adapters``).

Importing ``codetr.export.onnx_export`` needs ``onnxscript`` (torch's dynamo ONNX exporter);
the adapters need only torch.
"""
from .adapters import ExportableDetector, UnsupportedModelError, exportable

__all__ = ["ExportableDetector", "UnsupportedModelError", "exportable", "export_onnx"]


def export_onnx(*args, **kwargs):
    """See ``codetr.export.onnx_export.export_onnx``."""
    from .onnx_export import export_onnx as _export_onnx

    return _export_onnx(*args, **kwargs)
