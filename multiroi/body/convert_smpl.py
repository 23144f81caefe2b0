"""Convert an official SMPL ``.pkl`` to our ``.npz`` layout, with no chumpy and no code execution.

SMPL's pickles hold chumpy arrays and a scipy sparse joint regressor. A restricted unpickler maps
those classes to inert stand-ins that only record their state, allows numpy's array reconstruction,
and refuses every other global, so a tampered file cannot run code.

    python -m multiroi.body.convert_smpl SMPL_NEUTRAL.pkl --out smpl_neutral.npz
"""

from __future__ import annotations

import argparse
import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from multiroi.body.files import EXTRA_NAMES, SMPL_JOINT_NAMES, write_body_model

log = logging.getLogger(__name__)

# smplx's VERTEX_IDS["smplh"], valid for SMPL's 6890-vertex topology.
SMPL_EXTRA_VERTEX_IDS = {
    "nose": 332, "reye": 6260, "leye": 2800, "rear": 4071, "lear": 583, "rthumb": 6191,
    "rindex": 5782, "rmiddle": 5905, "rring": 6016, "rpinky": 6133, "lthumb": 2746,
    "lindex": 2319, "lmiddle": 2445, "lring": 2556, "lpinky": 2673, "LBigToe": 3216,
    "LSmallToe": 3226, "LHeel": 3387, "RBigToe": 6617, "RSmallToe": 6624, "RHeel": 6787,
}  # fmt: skip


class _Inert:
    """Stand-in for chumpy / scipy objects: keeps the pickled state, runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._args = args

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state


class _ChumpyStub(_Inert):
    pass


class _SparseStub(_Inert):
    pass


def _safe_reconstructor(cls: type, base: type, state: Any) -> Any:
    if not (isinstance(cls, type) and issubclass(cls, _Inert)):
        raise pickle.UnpicklingError(f"refusing to reconstruct {cls!r}")
    return cls.__new__(cls)


_NUMPY_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}  # fmt: skip


class RestrictedUnpickler(pickle.Unpickler):
    """Allows numpy arrays; turns chumpy and scipy.sparse objects into inert stubs; refuses the
    rest (``pickle.UnpicklingError`` naming the global)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_ALLOWED:
            return super().find_class(module, name)
        if module.startswith("chumpy"):
            return _ChumpyStub
        if module.startswith("scipy.sparse"):
            return _SparseStub
        if (module, name) in (("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor")):
            return _safe_reconstructor
        if (module, name) in (("__builtin__", "object"), ("builtins", "object")):
            return object
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in an SMPL file")


def _to_array(obj: Any) -> np.ndarray:
    """An ndarray from an array, a chumpy stub (its ``x``) or a scipy sparse stub (densified)."""
    if isinstance(obj, np.ndarray):
        return obj
    if isinstance(obj, _ChumpyStub):
        state = obj.__dict__.get("_state", {})
        if isinstance(state, dict) and "x" in state:
            return np.asarray(state["x"])
    if isinstance(obj, _SparseStub):
        s = obj.__dict__.get("_state", {})
        shape = s.get("_shape") or s.get("shape")
        dense = np.zeros(shape, np.float64)
        data, indices, indptr = s["data"], s["indices"], s["indptr"]
        for col in range(shape[1]):  # CSC: columns are compressed
            rows = indices[indptr[col] : indptr[col + 1]]
            dense[rows, col] = data[indptr[col] : indptr[col + 1]]
        return dense
    return np.asarray(obj)


def load_smpl_pickle(path: str | Path) -> dict[str, np.ndarray]:
    """Read an official SMPL pickle safely into plain arrays."""
    with open(path, "rb") as fh:
        raw = RestrictedUnpickler(fh, encoding="latin1").load()
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a dict in the SMPL pickle, found {type(raw).__name__}")
    return {k: _to_array(v) for k, v in raw.items() if k in _KEYS}


_KEYS = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table")


def convert(pkl: str | Path, out: str | Path, gender: str | None = None) -> Path:
    """Convert ``pkl`` to a body-model ``.npz`` at ``out``."""
    d = load_smpl_pickle(pkl)
    missing = [k for k in _KEYS if k not in d]
    if missing:
        raise ValueError(f"{pkl}: not an SMPL model file (missing {missing})")
    v = d["v_template"].astype(np.float32)
    kintree = d["kintree_table"].astype(np.int64)
    kintree[0, 0] = -1
    arrays = {
        "v_template": v, "faces": d["f"].astype(np.int64),
        "shapedirs": d["shapedirs"][:, :, :10].astype(np.float32),
        "posedirs": d["posedirs"].astype(np.float32),
        "J_regressor": d["J_regressor"].astype(np.float32),
        "weights": d["weights"].astype(np.float32), "kintree_table": kintree,
        "joint_names": np.array(SMPL_JOINT_NAMES),
        "model_id": np.array(f"smpl-{gender or Path(pkl).stem.lower()}"),
        "license": np.array("SMPL Model License (non-commercial; see smpl.is.tue.mpg.de)"),
    }  # fmt: skip
    if len(v) == 6890:
        arrays["extra_names"] = np.array(EXTRA_NAMES)
        arrays["extra_vertex_ids"] = np.array([SMPL_EXTRA_VERTEX_IDS[n] for n in EXTRA_NAMES])
    return write_body_model(out, arrays)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m multiroi.body.convert_smpl",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("pkl", type=Path, help="official SMPL .pkl (e.g. SMPL_NEUTRAL.pkl)")
    ap.add_argument("--out", type=Path, required=True, help="output .npz")
    ap.add_argument("--gender", default=None, help="neutral|male|female (model id only)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        out = convert(args.pkl, args.out, args.gender)
    except (OSError, ValueError, pickle.UnpicklingError) as exc:
        raise SystemExit(f"error: {exc}") from None
    log.info("wrote %s; use it with --body-model %s or MULTIROI_BODY_MODEL=%s", out, out, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
