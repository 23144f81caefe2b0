"""A TensorFlow Lite graph of convolution ops as a PyTorch module (for pretrained backbones).

``read_tflite(path, outputs)`` parses a ``.tflite`` flatbuffer (PyPI ``tflite``, the schema's
generated reader) into a *spec*, a JSON-ready description of the ops needed for ``outputs``
(no weights), and the weights as numpy arrays in PyTorch's layout. ``GraphNet(spec)`` runs that
spec in NCHW with ordinary PyTorch ops, so it trains, exports to ONNX and builds TensorRT
engines like any other backbone; ``GraphNet.load_tflite_weights(weights)`` fills it.

Supported ops (what MediaPipe's BlazePose landmark and pose detection models use): CONV_2D,
DEPTHWISE_CONV_2D (SAME or VALID padding with TensorFlow's rule: the odd pixel of SAME goes
after), ADD, PAD (spatial zero padding), MAX_POOL_2D, RESIZE_BILINEAR (half-pixel centres or
aligned corners), DEPTH_TO_SPACE, fused NONE/RELU/RELU6 activations, and DEQUANTIZE and
DENSIFY of float16 weights (sparse weights stored row by row, CSR on the last dimension).
Anything else raises :class:`TFLiteGraphError` naming the op; the reshapes and concatenations
of a detector's heads are left to the caller (ask for the head convolutions as outputs).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class TFLiteGraphError(ValueError):
    """The .tflite file cannot be read or uses an op this converter does not support."""


_ACTIVATIONS = {0: "none", 1: "relu", 3: "relu6"}
_PADDING = {0: "same", 1: "valid"}
_TFLITE_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8}


def read_tflite(
    path: str | Path, outputs: list[str]
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Parse ``path`` -> (spec, weights) for the ops that ``outputs`` (tensor names) need.

    spec: {"input": name, "input_shape": [H, W, C], "outputs": [...], "ops": [...]}, each op a
    dict with "op", "inputs", "output" and its attributes; tensors are named "t<index>".
    weights: "<output tensor>.weight" f32[O, I/groups, kh, kw] and "<output tensor>.bias" f32[O]
    for every convolution.
    """
    try:
        import tflite
    except ImportError as exc:
        raise TFLiteGraphError(
            "reading a .tflite file needs the 'tflite' package: pip install tflite"
        ) from exc
    try:
        buf = Path(path).read_bytes()
        model = tflite.Model.GetRootAsModel(buf, 0)
        graph = model.Subgraphs(0)
    except OSError as exc:
        raise TFLiteGraphError(f"cannot read {path}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - a corrupt flatbuffer fails in many ways
        raise TFLiteGraphError(f"{path} is not a TensorFlow Lite model ({exc})") from exc
    return _Reader(tflite, model, graph).spec(outputs)


class _Reader:
    def __init__(self, tflite: Any, model: Any, graph: Any) -> None:
        self.tfl, self.model, self.graph = tflite, model, graph
        self.op_names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if k.isupper()}
        self.producer: dict[int, int] = {}
        for i in range(graph.OperatorsLength()):
            for t in graph.Operators(i).OutputsAsNumpy():
                self.producer[int(t)] = i

    def tensor_name(self, index: int) -> str:
        return self.graph.Tensors(index).Name().decode()

    def constant(self, index: int) -> np.ndarray:
        """The value of a constant tensor, following DEQUANTIZE and DENSIFY of weights."""
        if index in self.producer:
            op = self.graph.Operators(self.producer[index])
            if self.op_name(op) == "DENSIFY":
                return self.constant(int(op.Inputs(0)))
            if self.op_name(op) != "DEQUANTIZE":
                raise TFLiteGraphError(f"tensor {self.tensor_name(index)} is not a constant")
            return self.constant(int(op.Inputs(0))).astype(np.float32)
        t = self.graph.Tensors(index)
        if t.Sparsity() is not None:
            return self.densify(t)
        data = self.model.Buffers(t.Buffer()).DataAsNumpy()
        if isinstance(data, int):  # an empty buffer reads as 0
            raise TFLiteGraphError(f"tensor {self.tensor_name(index)} has no data")
        dtype = _TFLITE_DTYPES.get(t.Type())
        if dtype is None:
            raise TFLiteGraphError(
                f"tensor {self.tensor_name(index)}: unsupported type {t.Type()}"
            )
        return np.frombuffer(data.tobytes(), dtype=dtype).reshape(t.ShapeAsNumpy())

    def densify(self, t: Any) -> np.ndarray:
        """A sparse constant as a dense array: the layout TensorFlow's converter writes for
        pruned weights (dimensions in order, no blocks, all dense but the last, which is CSR)."""
        sp, name = t.Sparsity(), t.Name().decode()
        shape = [int(s) for s in t.ShapeAsNumpy()]
        order = [int(i) for i in np.atleast_1d(sp.TraversalOrderAsNumpy())]
        dims = [sp.DimMetadata(d) for d in range(sp.DimMetadataLength())]
        dense_ok = all(
            d.Format() == 0 and d.DenseSize() == n
            for d, n in zip(dims[:-1], shape[:-1], strict=False)
        )
        if (order != list(range(len(shape))) or sp.BlockMapLength() or len(dims) != len(shape)
                or not dense_ok or dims[-1].Format() != 1):  # fmt: skip
            raise TFLiteGraphError(f"tensor {name}: this sparse layout is not supported")
        dtype = _TFLITE_DTYPES.get(t.Type())
        if dtype is None:
            raise TFLiteGraphError(f"tensor {name}: unsupported type {t.Type()}")
        values = np.frombuffer(self.model.Buffers(t.Buffer()).DataAsNumpy().tobytes(), dtype)
        last = dims[-1]
        segments = self.index_vector(last.ArraySegmentsType(), last.ArraySegments(), name)
        indices = self.index_vector(last.ArrayIndicesType(), last.ArrayIndices(), name)
        rows = int(np.prod(shape[:-1]))
        if len(segments) != rows + 1 or len(indices) != len(values) or segments[-1] != len(values):
            raise TFLiteGraphError(f"tensor {name}: inconsistent sparse data")
        dense = np.zeros((rows, shape[-1]), dtype)
        dense[np.repeat(np.arange(rows), np.diff(segments)), indices] = values
        return dense.reshape(shape)

    def index_vector(self, kind: int, table: Any, name: str) -> np.ndarray:
        classes = {1: "Int32Vector", 2: "Uint16Vector", 3: "Uint8Vector"}
        if kind not in classes or table is None:
            raise TFLiteGraphError(f"tensor {name}: unsupported sparse index type {kind}")
        vec = getattr(self.tfl, classes[kind])()
        vec.Init(table.Bytes, table.Pos)
        return np.asarray(vec.ValuesAsNumpy(), np.int64).reshape(-1)

    def op_name(self, op: Any) -> str:
        code = self.model.OperatorCodes(op.OpcodeIndex())
        return self.op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")

    def options(self, op: Any, cls_name: str) -> Any:
        table = op.BuiltinOptions()
        opts = getattr(self.tfl, cls_name)()
        opts.Init(table.Bytes, table.Pos)
        return opts

    def spec(self, outputs: list[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        by_name = {self.tensor_name(i): i for i in range(self.graph.TensorsLength())}
        missing = [o for o in outputs if o not in by_name]
        if missing:
            raise TFLiteGraphError(f"no tensor named {missing} in the model")
        inputs = [int(i) for i in self.graph.InputsAsNumpy()]
        if len(inputs) != 1:
            raise TFLiteGraphError(f"expected a model with one input, got {len(inputs)}")
        needed: set[int] = set()
        stack = [by_name[o] for o in outputs]
        while stack:  # the ops that the outputs depend on, through activations only
            t = stack.pop()
            if t in self.producer and self.producer[t] not in needed:
                op_index = self.producer[t]
                needed.add(op_index)
                op = self.graph.Operators(op_index)
                acts = list(op.InputsAsNumpy())
                if self.op_name(op) != "ADD":  # the rest are constants (weights, sizes)
                    acts = acts[:1]
                stack += [int(a) for a in acts if a >= 0]
        ops, weights = [], {}
        for i in sorted(needed):
            op = self.graph.Operators(i)
            entry, w = self.convert(op)
            ops.append(entry)
            weights.update(w)
        shape = [int(s) for s in self.graph.Tensors(inputs[0]).ShapeAsNumpy()]
        spec = {
            "input": f"t{inputs[0]}",
            "input_shape": shape[1:],
            "outputs": [f"t{by_name[o]}" for o in outputs],
            "ops": ops,
        }
        return spec, weights

    def convert(self, op: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        name = self.op_name(op)
        ins = [int(t) for t in op.InputsAsNumpy()]
        out = f"t{int(op.Outputs(0))}"
        entry: dict[str, Any] = {"op": name.lower(), "inputs": [f"t{ins[0]}"], "output": out}
        weights: dict[str, np.ndarray] = {}
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            w = self.constant(ins[1]).astype(np.float32)
            b = self.constant(ins[2]).astype(np.float32) if len(ins) > 2 and ins[2] >= 0 else None
            if name == "CONV_2D":
                o = self.options(op, "Conv2DOptions")
                weight = w.transpose(0, 3, 1, 2)  # [O,kh,kw,I] -> [O,I,kh,kw]
                groups = 1
            else:
                o = self.options(op, "DepthwiseConv2DOptions")
                weight = w.transpose(3, 0, 1, 2)  # [1,kh,kw,O] -> [O,1,kh,kw]
                in_ch = int(self.graph.Tensors(ins[0]).ShapeAsNumpy()[-1])
                groups = in_ch
            entry.update(
                op="conv", groups=groups, in_channels=int(weight.shape[1] * groups),
                out_channels=int(weight.shape[0]), kernel=[int(s) for s in weight.shape[2:]],
                stride=[o.StrideH(), o.StrideW()],
                dilation=[o.DilationHFactor(), o.DilationWFactor()],
                padding=self.enum(_PADDING, o.Padding(), name),
                activation=self.enum(_ACTIVATIONS, o.FusedActivationFunction(), name),
            )  # fmt: skip
            weights[f"{out}.weight"] = np.ascontiguousarray(weight)
            weights[f"{out}.bias"] = b if b is not None else np.zeros(weight.shape[0], np.float32)
        elif name == "ADD":
            o = self.options(op, "AddOptions")
            entry.update(
                inputs=[f"t{t}" for t in ins[:2]],
                activation=self.enum(_ACTIVATIONS, o.FusedActivationFunction(), name),
            )
        elif name == "PAD":
            pads = self.constant(ins[1]).reshape(-1, 2).tolist()
            if len(pads) != 4 or pads[0] != [0, 0] or pads[3] != [0, 0]:
                raise TFLiteGraphError(f"PAD: only spatial padding of NHWC is supported: {pads}")
            entry.update(pads=[int(pads[1][0]), int(pads[1][1]), int(pads[2][0]), int(pads[2][1])])
        elif name == "MAX_POOL_2D":
            o = self.options(op, "Pool2DOptions")
            entry.update(
                op="max_pool", kernel=[o.FilterHeight(), o.FilterWidth()],
                stride=[o.StrideH(), o.StrideW()], padding=self.enum(_PADDING, o.Padding(), name),
                activation=self.enum(_ACTIVATIONS, o.FusedActivationFunction(), name),
            )  # fmt: skip
        elif name == "RESIZE_BILINEAR":
            o = self.options(op, "ResizeBilinearOptions")
            if not (o.AlignCorners() or o.HalfPixelCenters()):
                raise TFLiteGraphError(
                    "RESIZE_BILINEAR without half-pixel centres or aligned corners "
                    "(TensorFlow 1 sampling) is not supported"
                )
            in_hw = [int(s) for s in self.graph.Tensors(ins[0]).ShapeAsNumpy()[1:3]]
            entry.update(op="resize", size=[int(s) for s in self.constant(ins[1])],
                         in_size=in_hw, align_corners=bool(o.AlignCorners()))  # fmt: skip
        elif name == "DEPTH_TO_SPACE":
            entry.update(op="depth_to_space", block=int(self.options(op, "DepthToSpaceOptions")
                                                        .BlockSize()))  # fmt: skip
        else:
            raise TFLiteGraphError(f"unsupported TensorFlow Lite op {name}")
        return entry, weights

    @staticmethod
    def enum(table: dict[int, str], value: int, op: str) -> str:
        if value not in table:
            raise TFLiteGraphError(f"{op}: unsupported option value {value}")
        return table[value]


def _same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's SAME padding of one axis: (before, after), the odd pixel after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _activate(x: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "relu":
        return F.relu(x)
    if activation == "relu6":
        return F.relu6(x)
    return x


class GraphNet(nn.Module):
    """Runs a spec of :func:`read_tflite` in NCHW.

    forward(x f32[N,C,H,W]) -> list of the spec's outputs, each f32[N,C,h,w]. Convolutions are
    ``nn.Conv2d`` modules named after their output tensor (``convs["t204"]``); a fresh GraphNet
    is randomly initialised.
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__()
        self.spec = spec
        self.convs = nn.ModuleDict()
        for op in spec["ops"]:
            if op["op"] == "conv":
                self.convs[op["output"]] = nn.Conv2d(
                    op["in_channels"], op["out_channels"], tuple(op["kernel"]),
                    stride=tuple(op["stride"]), dilation=tuple(op["dilation"]),
                    groups=op["groups"], bias=True,
                )  # fmt: skip
            elif op["op"] not in ("add", "pad", "max_pool", "resize", "depth_to_space"):
                raise TFLiteGraphError(f"unsupported op in spec: {op['op']}")
        # after op i, the tensors whose last reader it is are dropped (inference memory: a
        # 64-crop batch otherwise holds every 128x128 activation until the end)
        last_use = {t: i for i, op in enumerate(spec["ops"]) for t in op.get("inputs", [])}
        keep = set(spec["outputs"])
        self._free_after = [
            [t for t in dict.fromkeys(op.get("inputs", [])) if last_use[t] == i and t not in keep]
            for i, op in enumerate(spec["ops"])
        ]

    def load_tflite_weights(self, weights: dict[str, np.ndarray]) -> int:
        """Copy ``weights`` of :func:`read_tflite` into the convolutions; returns the count.
        Raises TFLiteGraphError on a missing tensor or a shape mismatch."""
        n = 0
        for name, conv in self.convs.items():
            for key, param in (("weight", conv.weight), ("bias", conv.bias)):
                value = weights.get(f"{name}.{key}")
                if value is None or tuple(value.shape) != tuple(param.shape):
                    got = None if value is None else list(value.shape)
                    raise TFLiteGraphError(
                        f"weights for {name}.{key}: expected {list(param.shape)}, got {got}"
                    )
                with torch.no_grad():
                    param.copy_(torch.from_numpy(np.asarray(value, np.float32)))
                n += 1
        return n

    def subgraph(self, start: str) -> GraphNet:
        """The ops after the one that writes tensor ``start``, as a GraphNet whose input is
        ``start`` (same outputs), with copies of their weights: e.g. the last layers of a
        backbone, to be trained apart from the shared ones. Raises TFLiteGraphError when
        ``start`` is no op's output or a later op reads a tensor from before it."""
        ops = self.spec["ops"]
        at = next((i for i, op in enumerate(ops) if op["output"] == start), None)
        if at is None:
            raise TFLiteGraphError(f"no op of the graph writes tensor {start!r}")
        tail = ops[at + 1 :]
        known = {start} | {op["output"] for op in tail}
        outside = sorted({t for op in tail for t in op.get("inputs", [])} - known)
        if outside or not set(self.spec["outputs"]) <= known:
            raise TFLiteGraphError(f"the graph after {start!r} also reads {outside}: it cannot "
                                   "start there")  # fmt: skip
        spec = dict(self.spec, input=start, ops=tail)
        spec.pop("input_shape", None)
        sub = GraphNet(spec)
        sub.load_state_dict({k: v for k, v in self.state_dict().items()
                             if k.split(".")[1] in sub.convs})  # fmt: skip
        return sub

    def forward(self, x: torch.Tensor, taps: tuple[str, ...] = ()) -> list[torch.Tensor]:
        """x f32[N,C,H,W] -> the spec's outputs, then the tensors named in ``taps`` (inner
        tensors kept for the caller, e.g. where a :meth:`subgraph` starts)."""
        values = {self.spec["input"]: x}
        kept = {}
        for op, free in zip(self.spec["ops"], self._free_after, strict=True):
            a = values[op["inputs"][0]]
            kind = op["op"]
            if kind == "conv":
                conv = self.convs[op["output"]]
                if op["padding"] == "same":
                    a = self._pad_same(a, op["kernel"], op["stride"], op["dilation"])
                y = _activate(conv(a), op["activation"])
            elif kind == "add":
                y = _activate(a + values[op["inputs"][1]], op["activation"])
            elif kind == "pad":
                top, bottom, left, right = op["pads"]
                y = F.pad(a, (left, right, top, bottom))
            elif kind == "max_pool":
                if op["padding"] == "same":  # TF pads max pooling with -inf
                    a = self._pad_same(a, op["kernel"], op["stride"], [1, 1], value=-math.inf)
                y = _activate(F.max_pool2d(a, tuple(op["kernel"]), tuple(op["stride"])),
                              op["activation"])  # fmt: skip
            elif kind == "depth_to_space":  # TensorFlow's order: channel = (row * b + col) * C + c
                b = op["block"]
                n, c, h, w = a.shape
                y = (a.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
                     .reshape(n, c // (b * b), h * b, w * b))  # fmt: skip
            else:  # resize
                size = [int(a.shape[2 + k]) * op["size"][k] // op["in_size"][k] for k in (0, 1)]
                y = F.interpolate(a, size=size, mode="bilinear",
                                  align_corners=op["align_corners"])  # fmt: skip
            values[op["output"]] = y
            if op["output"] in taps:
                kept[op["output"]] = y
            for t in free:
                del values[t]
        missing = [t for t in taps if t not in kept]
        if missing:
            raise TFLiteGraphError(f"no op of the graph writes tensor(s) {missing}")
        return [values[o] for o in self.spec["outputs"]] + [kept[t] for t in taps]

    @staticmethod
    def _pad_same(x: torch.Tensor, kernel, stride, dilation, value: float = 0.0) -> torch.Tensor:
        top, bottom = _same_pads(int(x.shape[-2]), kernel[0], stride[0], dilation[0])
        left, right = _same_pads(int(x.shape[-1]), kernel[1], stride[1], dilation[1])
        if top == bottom == left == right == 0:
            return x
        return F.pad(x, (left, right, top, bottom), value=value)
