"""Inference runtimes behind one seam.

``create_backend(name_or_path, ...)(RoiBatch) -> HmrOutput``, one small class per runtime.
"""

from multiroi.backends.base import Backend, BackendError, check_batch, empty_output
from multiroi.backends.registry import (
    available_backends,
    backend_for_path,
    create_backend,
    register_backend,
    resolve_backend_name,
)

__all__ = [
    "Backend",
    "BackendError",
    "available_backends",
    "backend_for_path",
    "check_batch",
    "create_backend",
    "empty_output",
    "register_backend",
    "resolve_backend_name",
]
