"""Builds small TFLite flatbuffers (one operator, chosen quantisation) for per-op tests and bad-input tests.

Written with the official TFLite schema object API that ships with LiteRT, so LiteRT itself loads the result.
"""

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

_TYPES = {np.dtype(np.int8): schema.TensorType.INT8, np.dtype(np.int32): schema.TensorType.INT32,
          np.dtype(np.float32): schema.TensorType.FLOAT32, np.dtype(np.uint8): schema.TensorType.UINT8,
          np.dtype(np.int64): schema.TensorType.INT64, np.dtype(np.int16): schema.TensorType.INT16}

_OPTIONS = {
    "CONV_2D": (schema.BuiltinOptions.Conv2DOptions, schema.Conv2DOptionsT),
    "DEPTHWISE_CONV_2D": (schema.BuiltinOptions.DepthwiseConv2DOptions, schema.DepthwiseConv2DOptionsT),
    "FULLY_CONNECTED": (schema.BuiltinOptions.FullyConnectedOptions, schema.FullyConnectedOptionsT),
    "ADD": (schema.BuiltinOptions.AddOptions, schema.AddOptionsT),
    "AVERAGE_POOL_2D": (schema.BuiltinOptions.Pool2DOptions, schema.Pool2DOptionsT),
    "MAX_POOL_2D": (schema.BuiltinOptions.Pool2DOptions, schema.Pool2DOptionsT),
    "RESHAPE": (schema.BuiltinOptions.ReshapeOptions, schema.ReshapeOptionsT),
    "SOFTMAX": (schema.BuiltinOptions.SoftmaxOptions, schema.SoftmaxOptionsT),
    "PAD": (schema.BuiltinOptions.PadOptions, schema.PadOptionsT),
    "CONCATENATION": (schema.BuiltinOptions.ConcatenationOptions, schema.ConcatenationOptionsT),
    "MUL": (schema.BuiltinOptions.MulOptions, schema.MulOptionsT),
    "TANH": (0, None),
}

PADDING = {"SAME": schema.Padding.SAME, "VALID": schema.Padding.VALID}
ACT = {name: getattr(schema.ActivationFunctionType, name) for name in
       ("NONE", "RELU", "RELU6", "RELU_N1_TO_1", "TANH", "SIGN_BIT")}


class ModelBuilder:
    """Accumulates tensors and operators, then :meth:`build` returns the flatbuffer bytes."""

    def __init__(self):
        self.tensors = []
        self.buffers = [schema.BufferT()]          # buffer 0 is the empty sentinel
        self.opcodes = []
        self.operators = []

    def tensor(self, shape, dtype=np.int8, scale=None, zero_point=None, data=None, name=None, axis=0):
        t = schema.TensorT()
        t.shape = list(shape)
        t.type = _TYPES[np.dtype(dtype)]
        t.name = (name or f"t{len(self.tensors)}").encode()
        if scale is not None:
            q = schema.QuantizationParametersT()
            q.scale = [float(s) for s in np.atleast_1d(scale)]
            zp = np.atleast_1d(zero_point if zero_point is not None else 0)
            q.zeroPoint = [int(z) for z in np.broadcast_to(zp, (len(q.scale),))]
            q.quantizedDimension = axis
            t.quantization = q
        if data is not None:
            b = schema.BufferT()
            b.data = np.frombuffer(np.ascontiguousarray(np.asarray(data, dtype=dtype)).tobytes(), dtype=np.uint8)
            self.buffers.append(b)
            t.buffer = len(self.buffers) - 1
        else:
            t.buffer = 0
        self.tensors.append(t)
        return len(self.tensors) - 1

    def op(self, name, inputs, outputs, **options):
        code = getattr(schema.BuiltinOperator, name)
        if code not in [c.builtinCode for c in self.opcodes]:
            oc = schema.OperatorCodeT()
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(code, 127)
            oc.version = 1
            self.opcodes.append(oc)
        o = schema.OperatorT()
        o.opcodeIndex = [c.builtinCode for c in self.opcodes].index(code)
        o.inputs = list(inputs)
        o.outputs = list(outputs)
        kind, cls = _OPTIONS.get(name, (0, None))
        if cls is not None:
            opts = cls()
            for k, v in options.items():
                setattr(opts, k, v)
            o.builtinOptionsType = kind
            o.builtinOptions = opts
        self.operators.append(o)

    def build(self, inputs, outputs):
        sg = schema.SubGraphT()
        sg.tensors = self.tensors
        sg.operators = self.operators
        sg.inputs = list(inputs)
        sg.outputs = list(outputs)
        sg.name = b"main"
        m = schema.ModelT()
        m.version = 3
        m.operatorCodes = self.opcodes
        m.subgraphs = [sg]
        m.buffers = self.buffers
        m.description = b"haneul test model"
        b = flatbuffers.Builder(1024)
        b.Finish(m.Pack(b), file_identifier=b"TFL3")
        return bytes(b.Output())
