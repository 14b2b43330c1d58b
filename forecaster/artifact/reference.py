"""The tutorial's LSTM gate equations in NumPy: an independent oracle.

Weights come from the ONNX file's own graph, the scaling (scaling.py, the
same formulas training used) from its metadata; no torch and no ONNX Runtime
are involved. For each step t:

    I_t  = sigmoid(X_t W_xi + H_{t-1} W_hi + b_i)      input gate
    F_t  = sigmoid(X_t W_xf + H_{t-1} W_hf + b_f)      forget gate
    O_t  = sigmoid(X_t W_xo + H_{t-1} W_ho + b_o)      output gate
    C~_t = tanh(X_t W_xc + H_{t-1} W_hc + b_c)         candidate memory
    C_t  = F_t * C_{t-1} + I_t * C~_t
    H_t  = O_t * tanh(C_t)

ONNX stores the four blocks in the order (i, o, f, c) and the bias as two
halves (input and recurrent) that are added.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import ForecasterError, ModelFileError
from ..intervals import Calibration
from ..scaling import Scaling, from_metadata
from .model_file import METADATA_PREFIX


@dataclass
class LSTMLayer:
    W: np.ndarray  # (4H, F) input weights, ONNX gate order i, o, f, c
    R: np.ndarray  # (4H, H) recurrent weights
    b: np.ndarray  # (4H,)   input bias + recurrent bias


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def lstm_layer(x: np.ndarray, layer: LSTMLayer) -> np.ndarray:
    """(B, T, F) -> (B, T, H), zero initial state."""
    batch, steps, _ = x.shape
    hidden = layer.R.shape[1]
    W_i, W_o, W_f, W_c = np.split(layer.W, 4)
    R_i, R_o, R_f, R_c = np.split(layer.R, 4)
    b_i, b_o, b_f, b_c = np.split(layer.b, 4)
    H = np.zeros((batch, hidden))
    C = np.zeros((batch, hidden))
    out = np.empty((batch, steps, hidden))
    for t in range(steps):
        X = x[:, t]
        I = sigmoid(X @ W_i.T + H @ R_i.T + b_i)
        F = sigmoid(X @ W_f.T + H @ R_f.T + b_f)
        O = sigmoid(X @ W_o.T + H @ R_o.T + b_o)
        C_tilde = np.tanh(X @ W_c.T + H @ R_c.T + b_c)
        C = F * C + I * C_tilde
        H = O * np.tanh(C)
        out[:, t] = H
    return out


@dataclass
class ReferenceModel:
    layers: list[LSTMLayer]
    head_weight: np.ndarray  # (1, H)
    head_bias: np.ndarray  # (1,)
    scaling: Scaling
    calibration: Calibration | None = None  # the interval bounds, when the file has them
    seq_len: int | None = None  # the network's rows, the newest of a longer input (None: all of it)

    def bounds(self, ohlc: np.ndarray, next_close: np.ndarray) -> list[np.ndarray] | None:
        """[lo80, hi80, lo95, hi95] around `next_close`, from the window (float64)."""
        if self.calibration is None:
            return None
        return self.calibration.bounds(next_close, np.asarray(ohlc, dtype=np.float64))

    def __call__(self, ohlc: np.ndarray, ticker_index: np.ndarray | None = None) -> np.ndarray:
        """Next close in price units for raw windows (B, T, 4), in float64,
        from the newest seq_len rows (the rest are the volatility's)."""
        x = np.asarray(ohlc, dtype=np.float64)[:, -self.seq_len :] if self.seq_len else np.asarray(ohlc, np.float64)
        c = self.scaling.constants()
        h = self.scaling.scale_inputs(x, c, ticker_index)
        for layer in self.layers:
            h = lstm_layer(h, layer)
        y = h[:, -1] @ self.head_weight.T[:, 0] + self.head_bias[0]
        return self.scaling.unscale(y, x, c, ticker_index)


# Nodes that only move or reshape data between the top LSTM and the head.
SHAPE_ONLY = {"Squeeze", "Unsqueeze", "Reshape", "Transpose", "Gather", "Identity", "Slice", "Flatten"}


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    consts = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in graph.initializer}
    for node in graph.node:  # some exporters keep weights in Constant nodes
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t).astype(np.float64)
    return consts


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _lstm_layer(node: onnx.NodeProto, consts: dict) -> LSTMLayer:
    attrs = _attrs(node)
    if attrs.get("direction", b"forward") not in (b"forward", "forward") or attrs.get("layout", 0) != 0:
        raise ModelFileError(f"LSTM node {node.name} is not a forward, batch-second LSTM")
    if len(node.input) > 7 and node.input[7]:
        raise ModelFileError(f"LSTM node {node.name} has peepholes, which the tutorial's LSTM does not")
    try:
        W, R = consts[node.input[1]][0], consts[node.input[2]][0]
        B = consts[node.input[3]][0] if len(node.input) > 3 and node.input[3] else np.zeros(2 * R.shape[0])
    except KeyError as exc:
        raise ModelFileError(f"LSTM node {node.name}: weight {exc} is not a constant in the file") from None
    return LSTMLayer(W, R, B[: R.shape[0]] + B[R.shape[0] :])


def _head(graph: onnx.GraphProto, top: onnx.NodeProto, consts: dict, hidden: int) -> tuple[np.ndarray, np.ndarray]:
    """The linear head: the Gemm, or MatMul (+ Add), that the top LSTM's output
    reaches through shape-only nodes. Found by structure, not by name: an
    exporter names constants as it likes, and drops an all-zero bias."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    frontier, seen, heads = [o for o in top.output if o], set(), []
    while frontier:
        name = frontier.pop()
        for node in consumers.get(name, []):
            if node.op_type in ("Gemm", "MatMul"):
                heads.append((node, name))
            elif node.op_type in SHAPE_ONLY and node.input[0] == name and id(node) not in seen:
                seen.add(id(node))
                frontier.extend(node.output)
    if len(heads) != 1:
        raise ModelFileError(f"expected one Gemm or MatMul reading the top LSTM's output, found {len(heads)}")
    node, fed = heads[0]
    if node.input[0] != fed or node.input[1] not in consts:
        raise ModelFileError(f"head node {node.name}: its weight is not a constant in the file")
    weight = consts[node.input[1]]
    attrs = _attrs(node)
    if node.op_type == "Gemm":
        if attrs.get("transA", 0):
            raise ModelFileError(f"head node {node.name}: a transposed input is not a linear head")
        weight = (weight if attrs.get("transB", 0) else weight.T) * attrs.get("alpha", 1.0)
        bias = consts[node.input[2]] * attrs.get("beta", 1.0) if len(node.input) > 2 and node.input[2] else np.zeros(1)
    else:
        weight = weight.T
        adds = [n for n in consumers.get(node.output[0], []) if n.op_type == "Add"]
        biases = [consts[i] for n in adds for i in n.input if i in consts]
        bias = biases[0] if len(adds) == 1 and len(biases) == 1 else np.zeros(1)
    if weight.shape != (1, hidden):
        raise ModelFileError(f"head node {node.name}: weight of shape {weight.shape}, expected (1, {hidden})")
    return weight, np.broadcast_to(bias, (1,)).astype(np.float64)


def from_onnx(model: onnx.ModelProto) -> ReferenceModel:
    """Read the LSTM stack, the linear head and the scaling out of an exported file."""
    consts = _constants(model.graph)
    nodes = [n for n in model.graph.node if n.op_type == "LSTM"]
    if not nodes:
        raise ModelFileError("the graph has no LSTM node")
    layers = [_lstm_layer(n, consts) for n in nodes]
    head_w, head_b = _head(model.graph, nodes[-1], consts, layers[-1].R.shape[1])
    meta = {p.key[len(METADATA_PREFIX) :]: p.value for p in model.metadata_props if p.key.startswith(METADATA_PREFIX)}
    if "scaling" not in meta:
        raise ModelFileError("the file has no forecaster scaling metadata")
    try:
        scaling = from_metadata(json.loads(meta["scaling"]))
    except (ValueError, KeyError, TypeError, ForecasterError) as exc:
        raise ModelFileError(f"the file's scaling metadata is unreadable ({exc})") from None
    try:
        calibration = Calibration.from_metadata(json.loads(meta["intervals"])) if "intervals" in meta else None
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelFileError(f"the file's interval metadata is unreadable ({exc})") from None
    seq_len = int(meta["seq_len"]) if "seq_len" in meta else None
    return ReferenceModel(layers, head_w, head_b, scaling, calibration, seq_len)
