"""The body model behind one interface (smplx underneath), and its file readers and converters."""

from multiroi.body.files import (
    BodyModelData,
    BodyModelError,
    read_body_model,
    resolve_body_model_path,
    write_body_model,
)
from multiroi.body.mean_params import MeanParams, load_mean_params
from multiroi.body.model import BodyModel, BodyOutput, load_body_model

__all__ = [
    "BodyModel",
    "BodyModelData",
    "BodyModelError",
    "BodyOutput",
    "MeanParams",
    "load_body_model",
    "load_mean_params",
    "read_body_model",
    "resolve_body_model_path",
    "write_body_model",
]
