"""The typed graph IR that the importer produces and the golden model, compiler and simulators consume.

A :class:`Graph` holds :class:`Tensor` objects (shape, dtype, optional constant data, per-tensor or per-channel
:class:`Quantization`) and :class:`Operator` objects in execution order. Operator attributes are one small frozen
dataclass per operator type, so a reader sees what each operator carries in one place.
"""

import enum
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

__all__ = [
    "OpType", "Padding", "Activation", "Quantization", "Tensor", "Operator", "Graph",
    "Conv2DOptions", "DepthwiseConv2DOptions", "FullyConnectedOptions", "Pool2DOptions", "AddOptions",
    "SoftmaxOptions", "ConcatenationOptions", "ReshapeOptions", "PadOptions",
]


class OpType(enum.Enum):
    """The operators Haneul runs (names as in the TFLite schema)."""
    CONV_2D = "CONV_2D"
    DEPTHWISE_CONV_2D = "DEPTHWISE_CONV_2D"
    FULLY_CONNECTED = "FULLY_CONNECTED"
    ADD = "ADD"
    AVERAGE_POOL_2D = "AVERAGE_POOL_2D"
    MAX_POOL_2D = "MAX_POOL_2D"
    RESHAPE = "RESHAPE"
    SOFTMAX = "SOFTMAX"
    PAD = "PAD"
    CONCATENATION = "CONCATENATION"


class Padding(enum.Enum):
    SAME = "SAME"
    VALID = "VALID"


class Activation(enum.Enum):
    """Fused activation functions; each becomes an integer clamp of the quantised output."""
    NONE = "NONE"
    RELU = "RELU"
    RELU_N1_TO_1 = "RELU_N1_TO_1"
    RELU6 = "RELU6"


@dataclass(frozen=True, eq=False)
class Quantization:
    """Affine quantisation ``real = scale * (q - zero_point)``.

    ``scale`` is float32 (as stored in the flatbuffer; the reference kernels compute with these exact values),
    ``zero_point`` int64; both have one element (per-tensor) or one per channel along ``axis`` (per-channel).
    """
    scale: np.ndarray
    zero_point: np.ndarray
    axis: int = 0

    @property
    def per_channel(self):
        return self.scale.size > 1

    def __repr__(self):
        if self.per_channel:
            return f"Quantization(per-channel x{self.scale.size}, axis={self.axis})"
        return f"Quantization(scale={float(self.scale[0])!r}, zero_point={int(self.zero_point[0])})"


@dataclass(eq=False)
class Tensor:
    """A tensor of the graph: activations have ``data is None``; weights, biases and shapes are constants."""
    index: int
    name: str
    shape: tuple
    dtype: np.dtype
    quant: Optional[Quantization] = None
    data: Optional[np.ndarray] = None

    @property
    def is_constant(self):
        return self.data is not None

    @property
    def scale(self):
        """Per-tensor scale as a Python float (widened from float32)."""
        return float(self.quant.scale[0])

    @property
    def zero_point(self):
        return int(self.quant.zero_point[0])

    @property
    def size(self):
        return int(np.prod(self.shape, dtype=np.int64))

    def __repr__(self):
        return f"Tensor({self.index}, {self.name!r}, {'x'.join(map(str, self.shape))} {self.dtype})"


@dataclass(frozen=True)
class Conv2DOptions:
    stride_h: int = 1
    stride_w: int = 1
    padding: Padding = Padding.SAME
    activation: Activation = Activation.NONE
    dilation_h: int = 1
    dilation_w: int = 1


@dataclass(frozen=True)
class DepthwiseConv2DOptions:
    stride_h: int = 1
    stride_w: int = 1
    padding: Padding = Padding.SAME
    activation: Activation = Activation.NONE
    dilation_h: int = 1
    dilation_w: int = 1
    depth_multiplier: int = 1


@dataclass(frozen=True)
class FullyConnectedOptions:
    activation: Activation = Activation.NONE
    keep_num_dims: bool = False


@dataclass(frozen=True)
class Pool2DOptions:
    filter_h: int = 1
    filter_w: int = 1
    stride_h: int = 1
    stride_w: int = 1
    padding: Padding = Padding.VALID
    activation: Activation = Activation.NONE


@dataclass(frozen=True)
class AddOptions:
    activation: Activation = Activation.NONE


@dataclass(frozen=True)
class SoftmaxOptions:
    beta: float = 1.0


@dataclass(frozen=True)
class ConcatenationOptions:
    axis: int = 0
    activation: Activation = Activation.NONE


@dataclass(frozen=True)
class ReshapeOptions:
    pass


@dataclass(frozen=True)
class PadOptions:
    pass


@dataclass(eq=False)
class Operator:
    """One operator: its type, attributes and tensors. Optional inputs (a missing bias) are ``None``."""
    index: int
    type: OpType
    options: object
    inputs: list
    outputs: list

    @property
    def macs(self):
        """Multiply-accumulates of the convolution, depthwise and fully connected operators (0 for the others)."""
        if self.type is OpType.CONV_2D:
            out, w = self.outputs[0].shape, self.inputs[1].shape
            return int(np.prod(out, dtype=np.int64)) * w[1] * w[2] * w[3]
        if self.type is OpType.DEPTHWISE_CONV_2D:
            out, w = self.outputs[0].shape, self.inputs[1].shape
            return int(np.prod(out, dtype=np.int64)) * w[1] * w[2]
        if self.type is OpType.FULLY_CONNECTED:
            out, w = self.outputs[0].shape, self.inputs[1].shape
            return int(np.prod(out, dtype=np.int64)) * w[1]
        return 0

    def describe(self):
        """One human-readable line: type, shapes, attributes, quantisation, MACs."""
        def shape(t):
            return "x".join(map(str, t.shape)) if t is not None else "-"
        parts = [f"#{self.index:<3d}{self.type.value:<18s}"]
        ins = [t for t in self.inputs if t is not None and not t.is_constant]
        parts.append("in=" + ",".join(shape(t) for t in ins))
        if self.type in (OpType.CONV_2D, OpType.DEPTHWISE_CONV_2D, OpType.FULLY_CONNECTED):
            parts.append("w=" + shape(self.inputs[1]))
        parts.append("out=" + ",".join(shape(t) for t in self.outputs))
        o = self.options
        if hasattr(o, "filter_h"):
            parts.append(f"filter={o.filter_h}x{o.filter_w}")
        if hasattr(o, "stride_h"):
            parts.append(f"stride={o.stride_h}x{o.stride_w}")
        if hasattr(o, "padding"):
            parts.append(f"pad={o.padding.value}")
        if getattr(o, "dilation_h", 1) != 1 or getattr(o, "dilation_w", 1) != 1:
            parts.append(f"dilation={o.dilation_h}x{o.dilation_w}")
        if getattr(o, "depth_multiplier", 1) != 1:
            parts.append(f"depth_mult={o.depth_multiplier}")
        if hasattr(o, "activation"):
            parts.append(f"act={o.activation.value}")
        if self.type is OpType.SOFTMAX:
            parts.append(f"beta={o.beta:g}")
        if self.type is OpType.CONCATENATION:
            parts.append(f"axis={o.axis}")
        if self.type in (OpType.CONV_2D, OpType.DEPTHWISE_CONV_2D, OpType.FULLY_CONNECTED):
            q = self.inputs[1].quant
            parts.append(f"quant=per-channel({q.scale.size})" if q.per_channel else "quant=per-tensor")
        else:
            parts.append("quant=per-tensor")
        parts.append(f"MACs={self.macs:,}")
        return " ".join(parts)


@dataclass(eq=False)
class Graph:
    """A whole model: tensors, operators in execution order, graph inputs and outputs."""
    tensors: list
    operators: list
    inputs: list
    outputs: list
    name: str = ""
    description: str = field(default="", repr=False)

    @property
    def macs(self):
        return sum(op.macs for op in self.operators)
