"""BirdNET's TFLite file with some layers' weights replaced by those of a (fine-tuned) Keras model.

A fine-tuned BirdNET (``birdnet_finetune``) differs from BirdNET V2.4 only in the weights of its last
blocks, and every weight of the converted Keras model is one TFLite constant in another layout
(``keras_model.build_model``).  Writing the trained weights back gives a TFLite model that LiteRT
runs with XNNPACK as fast as BirdNET itself, with no TensorFlow or Keras in the process.

Layouts (Keras → TFLite), per layer, in ``layer.get_weights()`` order:

- ``Conv2D``: kernel (h, w, in, out) → (out, h, w, in); bias (out,);
- ``DepthwiseConv2D``: kernel (h, w, in, m) → (1, h, w, in × m); bias (in × m,);
- ``Dense``: kernel (in, out) → (out, in); bias (out,);
- ``Affine``: scale or offset (C,) → the constant of the MUL or ADD (its shape if it has C values,
  else (C,)).

The result carries BirdNET's licence, CC BY-NC-SA 4.0 (``runtime.LICENSE_NOTE``).
"""
from __future__ import annotations

import copy
from collections import Counter
from typing import NamedTuple

import numpy as np

from birdcore.models.birdnet.tflite_graph import Graph, plan, read_graph

WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MUL", "ADD")


def weight_tensors(g: Graph) -> dict[str, list[int]]:
    """Layer name → the TFLite constant tensors holding its weights, in Keras ``get_weights`` order,
    for every converted layer that has weights (the spectrogram layers excepted)."""
    return {layer: w.tensors for layer, w in _weighted(g).items()}


class _Weighted(NamedTuple):
    index: int  # the layer's operator in the subgraph
    op: str  # its TFLite operator
    tensors: list[int]  # its weight tensors, in Keras ``get_weights`` order


def _weighted(g: Graph) -> dict[str, _Weighted]:
    """Layer name → its operator and weight tensors, for every converted layer that has weights."""
    out = {}
    for s in plan(g):
        if s.op not in WEIGHTED_OPS:
            continue
        if s.op in ("MUL", "ADD"):
            if len(s.data) == 1:  # an ``Affine``: x · constant or x + constant
                out[s.layer] = _Weighted(s.index, s.op, [i for i in s.ins if i in g.consts][:1])
        else:
            out[s.layer] = _Weighted(s.index, s.op, [s.ins[1]] + ([s.ins[2]] if len(s.ins) > 2 else []))
    return out


def to_tflite(op: str, position: int, keras_array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """One Keras weight (the ``position``-th of its layer) in the layout of the TFLite constant of
    shape ``shape`` that operator ``op`` reads; ValueError when the sizes do not fit."""
    a = np.asarray(keras_array, np.float32)
    if position == 0 and op == "CONV_2D":
        a = a.transpose(3, 0, 1, 2)
    elif position == 0 and op == "DEPTHWISE_CONV_2D":
        a = a.reshape(1, a.shape[0], a.shape[1], -1)
    elif position == 0 and op == "FULLY_CONNECTED":
        a = a.T
    if a.shape == tuple(shape):
        return np.ascontiguousarray(a)
    if op in ("MUL", "ADD") and a.ndim == 1 and int(np.prod(shape)) in (1, a.size):
        return a.reshape(shape) if int(np.prod(shape)) == a.size else a  # a broadcast constant becomes (C,)
    raise ValueError(f"a weight of shape {np.shape(keras_array)} does not fit BirdNET's {op} constant {shape}")


def differing_layers(weights: dict[str, list[np.ndarray]], g: Graph | None = None) -> list[str]:
    """The layers of ``weights`` (name → Keras arrays) whose values differ from BirdNET's own in the
    graph ``g`` (default: ``read_graph()``); ValueError for a layer it lacks or arrays that do not fit."""
    g = g or read_graph()
    weighted = _weighted(g)
    differ = []
    for layer, arrays in weights.items():
        _check(layer, arrays, weighted)
        w = weighted[layer]
        same = all(np.array_equal(to_tflite(w.op, k, a, g.shapes[t]).ravel(),
                                  np.broadcast_to(g.consts[t].ravel(), (np.size(a),)))
                   for k, (t, a) in enumerate(zip(w.tensors, arrays)))
        if not same:
            differ.append(layer)
    return differ


def _check(layer: str, arrays: list, weighted: dict[str, _Weighted]) -> None:
    if layer not in weighted:
        raise ValueError(f"BirdNET has no layer {layer!r} with weights")
    if len(arrays) != len(weighted[layer].tensors):
        raise ValueError(f"BirdNET layer {layer}: {len(arrays)} weights given, it has {len(weighted[layer].tensors)}")


def with_weights(weights: dict[str, list[np.ndarray]], g: Graph | None = None) -> bytes:
    """BirdNET's TFLite model (the graph ``g``, default ``read_graph()``; its ``model`` is edited in
    place) with the named layers' weights replaced by ``weights`` (layer name → Keras arrays,
    ``get_weights`` order), as flatbuffer bytes for ``ai_edge_litert``'s
    ``Interpreter(model_content=...)``.  ValueError for an unknown layer or arrays that do not fit.

    TFLite shares one constant tensor between operators whose weights are equal (31 in BirdNET V2.4,
    e.g. ``BLOCK_4-4_CONV_3``'s bias is ``BLOCK_4-1_CONV_3``'s): a shared weight is replaced by a new
    tensor read by this layer's operator only, so the other operators keep BirdNET's values; a weight
    of one operator gets a new buffer, and a buffer nothing reads any more is emptied (the file stays
    the size of BirdNET's)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    g = g or read_graph()
    weighted = _weighted(g)
    model = g.model
    subgraph = model.subgraphs[0]
    readers = Counter(i for _, _, ins, _ in g.ops for i in ins)  # operators reading each tensor
    keep = {int(m.buffer) for m in model.metadata or []}  # buffers the file's metadata points at
    holders = Counter(int(t.buffer) for t in subgraph.tensors)
    for layer, arrays in weights.items():
        _check(layer, arrays, weighted)
        index, op, tensors = weighted[layer]
        operator = subgraph.operators[index]
        for k, (t, a) in enumerate(zip(tensors, arrays)):
            value = to_tflite(op, k, a, g.shapes[t]).astype("<f4")
            buffer = schema.BufferT()
            buffer.data = np.frombuffer(value.tobytes(), np.uint8)
            model.buffers.append(buffer)
            if readers[t] == 1:  # this operator's own: its tensor takes the new buffer
                tensor = subgraph.tensors[t]
                old = int(tensor.buffer)
                holders[old] -= 1
                if holders[old] == 0 and old not in keep:
                    model.buffers[old].data = None
            else:  # shared: a new tensor for this operator alone
                tensor = copy.copy(subgraph.tensors[t])
                tensor.name = tensor.name + f";{layer}/trained{k}".encode()
                subgraph.tensors.append(tensor)
                inputs = [int(i) for i in operator.inputs]
                inputs[g.ops[index][2].index(t)] = len(subgraph.tensors) - 1
                operator.inputs = np.asarray(inputs, np.int32)
            tensor.buffer = len(model.buffers) - 1
            holders[tensor.buffer] += 1
            tensor.shape = np.asarray(value.shape, np.int32)
            if tensor.shapeSignature is not None:
                tensor.shapeSignature = np.asarray(value.shape, np.int32)
    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
