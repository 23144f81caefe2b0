"""Export: checkpoint -> ONNX (verified, self-describing) -> TensorRT engine / torch-tensorrt
module / Triton model repository. Command line: ``python -m export {onnx,trt,torch-trt,triton}``.
"""

from export.metadata import (
    ExportError,
    ExportMetadata,
    NotMultiRoiModelError,
    read_onnx_metadata,
)
from export.onnx_export import ExportResult, OnnxExportConfig, export_checkpoint, export_onnx

__all__ = [
    "ExportError",
    "ExportMetadata",
    "ExportResult",
    "NotMultiRoiModelError",
    "OnnxExportConfig",
    "export_checkpoint",
    "export_onnx",
    "read_onnx_metadata",
]
