"""The glTF 2.0 binary container (.glb): a JSON document and one binary buffer, built up one
accessor and node at a time (``GlbBuilder``), then written as header, JSON chunk and BIN chunk.
What goes in it (skeletons, meshes, animation) is ``realtime.gltf``'s.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

FLOAT, UINT, USHORT, UBYTE = 5126, 5125, 5123, 5121  # accessor component types
ARRAY, ELEMENTS = 34962, 34963  # buffer view targets: vertex attributes, indices
_SIZES = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}
_DTYPES = {FLOAT: np.float32, UINT: np.uint32, USHORT: np.uint16, UBYTE: np.uint8}


class GlbBuilder:
    """The JSON document and the one binary buffer of a .glb under construction."""

    def __init__(self, generator: str = "multiroi realtime.gltf") -> None:
        self.doc: dict[str, Any] = {
            "asset": {"version": "2.0", "generator": generator},
            "scene": 0,
            "scenes": [{"nodes": []}],
            "nodes": [],
            "meshes": [],
            "materials": [],
            "skins": [],
            "accessors": [],
            "bufferViews": [],
            "buffers": [{"byteLength": 0}],
        }
        self._bin = bytearray()

    def accessor(
        self,
        data: np.ndarray,
        kind: str,
        component: int,
        target: int | None = None,
        bounds: bool = False,
    ) -> int:
        """Add ``data`` [N, size] (or [N]) as one accessor in its own buffer view; bounds: write
        min and max (required for positions and animation times). Returns its index."""
        arr = np.ascontiguousarray(np.asarray(data).astype(_DTYPES[component]))
        arr = arr.reshape(len(arr), -1)
        if arr.shape[1] != _SIZES[kind]:
            raise ValueError(
                f"a {kind} accessor needs {_SIZES[kind]} values a row, got {arr.shape}"
            )
        self._bin += b"\0" * (-len(self._bin) % 4)  # every view starts 4-byte aligned
        view: dict[str, Any] = {
            "buffer": 0,
            "byteOffset": len(self._bin),
            "byteLength": arr.nbytes,
        }
        if target is not None:
            view["target"] = target
        self._bin += arr.tobytes()
        self.doc["bufferViews"].append(view)
        acc: dict[str, Any] = {
            "bufferView": len(self.doc["bufferViews"]) - 1,
            "componentType": component,
            "count": len(arr),
            "type": kind,
        }
        if bounds:
            cast = float if component == FLOAT else int
            acc["min"] = [cast(v) for v in arr.min(0)]
            acc["max"] = [cast(v) for v in arr.max(0)]
        self.doc["accessors"].append(acc)
        return len(self.doc["accessors"]) - 1

    def node(self, node: dict[str, Any], root: bool = False) -> int:
        self.doc["nodes"].append(node)
        idx = len(self.doc["nodes"]) - 1
        if root:
            self.doc["scenes"][0]["nodes"].append(idx)
        return idx

    def glb(self) -> bytes:
        """The binary file: header, JSON chunk (space-padded), BIN chunk (zero-padded)."""
        doc = {k: v for k, v in self.doc.items() if v != []}
        binary = bytes(self._bin) + b"\0" * (-len(self._bin) % 4)
        doc["buffers"] = [{"byteLength": len(binary)}]
        text = json.dumps(doc, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 4)
        total = 12 + 8 + len(text) + 8 + len(binary)
        return b"".join(
            [
                struct.pack("<III", 0x46546C67, 2, total),
                struct.pack("<II", len(text), 0x4E4F534A),
                text,
                struct.pack("<II", len(binary), 0x004E4942),
                binary,
            ]
        )
