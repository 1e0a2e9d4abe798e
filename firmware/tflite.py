"""TFLite INT8 model import: flatbuffer -> :class:`haneul.firmware.ir.Graph`.

The flatbuffer is read with the official TFLite schema bindings that ship with LiteRT
(``ai_edge_litert.schema_py_generated``, on the ``flatbuffers`` runtime). This module checks everything Haneul relies
on (fully int8 activations, int8 weights, int32 biases, supported operators and attributes, consistent shapes) and
reports the first problem as a :class:`~haneul.errors.ModelError` naming the operator or tensor and the reason.
"""

from pathlib import Path

import numpy as np

from haneul.errors import ModelError, UnsupportedError
from . import ir
from .ir import Activation, OpType, Padding

try:
    from ai_edge_litert import schema_py_generated as schema
except ImportError:  # pragma: no cover - a dependency of the package
    raise ImportError("haneul.firmware.tflite needs ai-edge-litert (pip install ai-edge-litert)")

__all__ = ["load", "loads", "output_size"]

_BUILTIN_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
_TYPE_NAMES = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
_NUMPY_TYPES = {
    schema.TensorType.INT8: np.int8, schema.TensorType.UINT8: np.uint8, schema.TensorType.INT16: np.int16,
    schema.TensorType.INT32: np.int32, schema.TensorType.INT64: np.int64, schema.TensorType.FLOAT32: np.float32,
    schema.TensorType.FLOAT16: np.float16, schema.TensorType.BOOL: np.bool_,
}
_ACTIVATIONS = {
    schema.ActivationFunctionType.NONE: Activation.NONE,
    schema.ActivationFunctionType.RELU: Activation.RELU,
    schema.ActivationFunctionType.RELU_N1_TO_1: Activation.RELU_N1_TO_1,
    schema.ActivationFunctionType.RELU6: Activation.RELU6,
}
_ACTIVATION_NAMES = {v: k for k, v in vars(schema.ActivationFunctionType).items() if not k.startswith("_")}
_PADDINGS = {schema.Padding.SAME: Padding.SAME, schema.Padding.VALID: Padding.VALID}
_SUPPORTED = {getattr(schema.BuiltinOperator, t.value): t for t in OpType}


def load(path):
    """Read a ``.tflite`` file and return its :class:`~haneul.firmware.ir.Graph`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelError(f"cannot read model file {str(path)!r}: {e.strerror}") from None
    return loads(data, name=path.name)


def loads(data, name="model"):
    """Parse the bytes of a TFLite flatbuffer into a :class:`~haneul.firmware.ir.Graph`."""
    data = bytes(data)
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelError(f"{name}: not a TFLite flatbuffer (file identifier 'TFL3' missing)")
    try:
        model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
    except Exception as e:  # the flatbuffer runtime raises assorted errors on corrupt offsets
        raise ModelError(f"{name}: malformed TFLite flatbuffer ({type(e).__name__}: {e})") from None
    return _Importer(model, data, name).graph()


def output_size(in_size, filter_size, stride, dilation, padding):
    """Output extent of a convolution or pooling window (TFLite ``ComputeOutSize``)."""
    effective = (filter_size - 1) * dilation + 1
    if padding is Padding.SAME:
        return (in_size + stride - 1) // stride
    return (in_size - effective + stride) // stride


class _Importer:
    def __init__(self, model, data, name):
        self.model = model
        self.data = data
        self.name = name

    def graph(self):
        model = self.model
        if not model.subgraphs:
            raise ModelError(f"{self.name}: the model has no subgraph")
        if len(model.subgraphs) > 1:
            raise UnsupportedError(f"{self.name}: {len(model.subgraphs)} subgraphs (control flow) are not supported; "
                                   "Haneul runs single-subgraph models")
        sg = model.subgraphs[0]
        self.sg = sg
        tensors = [self._tensor(i, t) for i, t in enumerate(sg.tensors or [])]
        self.tensors = tensors
        operators = [self._operator(i, op) for i, op in enumerate(sg.operators or [])]
        inputs = [self._tensor_ref(i, "graph input") for i in (sg.inputs if sg.inputs is not None else [])]
        outputs = [self._tensor_ref(i, "graph output") for i in (sg.outputs if sg.outputs is not None else [])]
        if not inputs or not outputs:
            raise ModelError(f"{self.name}: the graph declares no inputs or no outputs")
        for t in inputs + outputs:
            self._check_activation(t, f"graph {'input' if t in inputs else 'output'}")
        desc = model.description.decode(errors="replace") if isinstance(model.description, bytes) else ""
        return ir.Graph(tensors=tensors, operators=operators, inputs=inputs, outputs=outputs,
                        name=self.name, description=desc)

    # -- tensors ----------------------------------------------------------------------------------------------

    def _tensor_ref(self, index, what):
        if not 0 <= index < len(self.tensors):
            raise ModelError(f"{self.name}: {what} refers to tensor {index}, but the graph has "
                             f"{len(self.tensors)} tensors")
        return self.tensors[index]

    def _tensor(self, index, t):
        name = t.name.decode(errors="replace") if isinstance(t.name, bytes) else str(t.name or f"t{index}")
        shape = tuple(int(d) for d in (t.shape if t.shape is not None else []))
        if any(d < 0 for d in shape):
            raise UnsupportedError(f"tensor {index} '{name}' has a dynamic shape {list(shape)}")
        if t.type not in _NUMPY_TYPES:
            raise UnsupportedError(f"tensor {index} '{name}' has type {_TYPE_NAMES.get(t.type, t.type)}, "
                                   "which Haneul does not support")
        dtype = np.dtype(_NUMPY_TYPES[t.type])
        quant = None
        q = t.quantization
        if q is not None and q.scale is not None and len(q.scale) > 0:
            scale = np.asarray(q.scale, dtype=np.float32).reshape(-1)
            zp = np.asarray(q.zeroPoint if q.zeroPoint is not None else [0] * scale.size, dtype=np.int64).reshape(-1)
            if zp.size != scale.size:
                raise ModelError(f"tensor {index} '{name}': {scale.size} scales but {zp.size} zero points")
            if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
                raise ModelError(f"tensor {index} '{name}': quantisation scale must be positive and finite")
            quant = ir.Quantization(scale=scale, zero_point=zp, axis=int(q.quantizedDimension))
        data = self._buffer(index, name, t, shape, dtype)
        return ir.Tensor(index=index, name=name, shape=shape, dtype=dtype, quant=quant, data=data)

    def _buffer(self, index, name, t, shape, dtype):
        buffers = self.model.buffers or []
        if t.buffer <= 0:
            return None
        if t.buffer >= len(buffers):
            raise ModelError(f"tensor {index} '{name}' refers to buffer {t.buffer}, but the model has "
                             f"{len(buffers)} buffers")
        b = buffers[t.buffer]
        if b.offset and b.offset > 1:
            raw = self.data[b.offset:b.offset + b.size]
        elif b.data is not None and len(b.data) > 0:
            raw = np.asarray(b.data, dtype=np.uint8).tobytes()
        else:
            return None
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if len(raw) != expected:
            raise ModelError(f"tensor {index} '{name}': buffer holds {len(raw)} bytes, but shape {list(shape)} "
                             f"of {dtype} needs {expected}")
        return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()

    def _check_activation(self, t, what):
        if t.dtype == np.int8 and t.quant is not None:
            return
        if t.dtype == np.float32:
            weights = [w for w in self.tensors if w.is_constant and w.dtype == np.int8]
            kind = ("a dynamic-range quantised model (float32 activations, int8 weights)" if weights
                    else "a float model")
            raise UnsupportedError(f"{what} tensor {t.index} '{t.name}' is float32: this is {kind}; Haneul runs "
                                   "fully int8-quantised models (convert with full-integer quantisation)")
        if t.dtype == np.uint8:
            raise UnsupportedError(f"{what} tensor {t.index} '{t.name}' is uint8: Haneul runs int8 models only "
                                   "(the legacy uint8 quantisation scheme is not supported)")
        if t.dtype == np.int8:
            raise ModelError(f"{what} tensor {t.index} '{t.name}' is int8 but has no quantisation parameters")
        raise UnsupportedError(f"{what} tensor {t.index} '{t.name}' has type {t.dtype}; Haneul runs int8 "
                               "activations only")

    # -- operators --------------------------------------------------------------------------------------------

    def _operator(self, index, op):
        codes = self.model.operatorCodes or []
        if not 0 <= op.opcodeIndex < len(codes):
            raise ModelError(f"{self.name}: operator {index} refers to opcode {op.opcodeIndex}, but the model has "
                             f"{len(codes)} opcodes")
        oc = codes[op.opcodeIndex]
        code = max(int(oc.builtinCode), int(oc.deprecatedBuiltinCode))
        if code == schema.BuiltinOperator.CUSTOM:
            cname = oc.customCode.decode(errors="replace") if oc.customCode else "?"
            raise UnsupportedError(f"operator {index}: custom operator '{cname}' is not supported")
        opname = _BUILTIN_NAMES.get(code, f"builtin #{code}")
        if code not in _SUPPORTED:
            raise UnsupportedError(f"operator {index} ({opname}): operator {opname} is not supported; Haneul runs "
                                   + ", ".join(t.value for t in OpType))
        optype = _SUPPORTED[code]
        where = f"operator {index} ({opname})"
        inputs = [None if i < 0 else self._tensor_ref(i, f"{where} input") for i in (op.inputs if op.inputs is not None else [])]
        outputs = [self._tensor_ref(i, f"{where} output") for i in (op.outputs if op.outputs is not None else [])]
        if len(outputs) != 1:
            raise ModelError(f"{where}: expected 1 output, found {len(outputs)}")
        options = getattr(self, "_" + optype.value.lower())(where, op.builtinOptions, inputs, outputs)
        return ir.Operator(index=index, type=optype, options=options, inputs=inputs, outputs=outputs)

    def _activation(self, where, code):
        if code not in _ACTIVATIONS:
            raise UnsupportedError(f"{where}: fused activation {_ACTIVATION_NAMES.get(code, code)} is not supported "
                                   "(NONE, RELU, RELU6, RELU_N1_TO_1 are)")
        return _ACTIVATIONS[code]

    def _padding(self, where, code):
        if code not in _PADDINGS:
            raise UnsupportedError(f"{where}: padding {code} is not supported")
        return _PADDINGS[code]

    def _n_inputs(self, where, inputs, lo, hi=None):
        hi = lo if hi is None else hi
        if not lo <= len(inputs) <= hi:
            want = str(lo) if lo == hi else f"{lo} to {hi}"
            raise ModelError(f"{where}: expected {want} inputs, found {len(inputs)}")
        for i, t in enumerate(inputs[:lo]):
            if t is None:
                raise ModelError(f"{where}: input {i} is missing")

    def _act_tensor(self, where, t, what):
        self._check_activation(t, f"{where} {what}")
        if t.is_constant:
            raise UnsupportedError(f"{where}: constant {what} tensor '{t.name}' is not supported")

    def _rank(self, where, t, what, rank):
        if len(t.shape) != rank:
            raise ModelError(f"{where}: {what} '{t.name}' must have rank {rank}, found shape {list(t.shape)}")

    def _weights(self, where, w, out_channels, axis):
        if not w.is_constant:
            raise UnsupportedError(f"{where}: non-constant weights '{w.name}' are not supported")
        if w.dtype != np.int8:
            raise UnsupportedError(f"{where}: weights '{w.name}' are {w.dtype}; Haneul runs int8 weights only")
        if w.quant is None:
            raise ModelError(f"{where}: weights '{w.name}' have no quantisation parameters")
        if w.quant.per_channel:
            if w.quant.scale.size != out_channels or w.quant.axis != axis:
                raise ModelError(f"{where}: weights '{w.name}' have {w.quant.scale.size} per-channel scales on axis "
                                 f"{w.quant.axis}, expected {out_channels} on axis {axis}")
        if np.any(w.quant.zero_point != 0):
            raise UnsupportedError(f"{where}: weights '{w.name}' have a non-zero zero point; int8 weights must be "
                                   "symmetric")

    def _bias(self, where, b, out_channels):
        if b is None:
            return
        if not b.is_constant:
            raise UnsupportedError(f"{where}: non-constant bias '{b.name}' is not supported")
        if b.dtype != np.int32:
            raise UnsupportedError(f"{where}: bias '{b.name}' is {b.dtype}; Haneul needs int32 biases")
        if b.size != out_channels:
            raise ModelError(f"{where}: bias '{b.name}' has {b.size} elements, expected {out_channels}")

    def _check_shape(self, where, out, expected):
        if tuple(out.shape) != tuple(expected):
            raise ModelError(f"{where}: output '{out.name}' has shape {list(out.shape)}, but the operator "
                             f"produces {list(expected)}")

    def _conv_2d(self, where, o, inputs, outputs):
        self._n_inputs(where, inputs, 2, 3)
        x, w, b = inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None
        out = outputs[0]
        self._act_tensor(where, x, "input")
        self._check_activation(out, f"{where} output")
        self._rank(where, x, "input", 4)
        self._rank(where, w, "filter", 4)
        self._weights(where, w, w.shape[0], 0)
        self._bias(where, b, w.shape[0])
        if w.shape[3] == 0 or x.shape[3] % w.shape[3] != 0 or x.shape[3] != w.shape[3]:
            raise UnsupportedError(f"{where}: input has {x.shape[3]} channels but the filter expects {w.shape[3]} "
                                   "(grouped convolution is not supported)")
        opts = ir.Conv2DOptions(stride_h=o.strideH, stride_w=o.strideW, padding=self._padding(where, o.padding),
                                activation=self._activation(where, o.fusedActivationFunction),
                                dilation_h=o.dilationHFactor, dilation_w=o.dilationWFactor)
        self._check_window(where, opts)
        oh = output_size(x.shape[1], w.shape[1], opts.stride_h, opts.dilation_h, opts.padding)
        ow = output_size(x.shape[2], w.shape[2], opts.stride_w, opts.dilation_w, opts.padding)
        self._check_shape(where, out, (x.shape[0], oh, ow, w.shape[0]))
        return opts

    def _depthwise_conv_2d(self, where, o, inputs, outputs):
        self._n_inputs(where, inputs, 2, 3)
        x, w, b = inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None
        out = outputs[0]
        self._act_tensor(where, x, "input")
        self._check_activation(out, f"{where} output")
        self._rank(where, x, "input", 4)
        self._rank(where, w, "filter", 4)
        if w.shape[0] != 1:
            raise ModelError(f"{where}: depthwise filter '{w.name}' must have shape [1, H, W, C], found "
                             f"{list(w.shape)}")
        self._weights(where, w, w.shape[3], 3)
        self._bias(where, b, w.shape[3])
        opts = ir.DepthwiseConv2DOptions(
            stride_h=o.strideH, stride_w=o.strideW, padding=self._padding(where, o.padding),
            activation=self._activation(where, o.fusedActivationFunction),
            dilation_h=o.dilationHFactor, dilation_w=o.dilationWFactor, depth_multiplier=max(1, o.depthMultiplier))
        self._check_window(where, opts)
        if x.shape[3] * opts.depth_multiplier != w.shape[3]:
            raise ModelError(f"{where}: input has {x.shape[3]} channels and depth multiplier "
                             f"{opts.depth_multiplier}, but the filter has {w.shape[3]} output channels")
        oh = output_size(x.shape[1], w.shape[1], opts.stride_h, opts.dilation_h, opts.padding)
        ow = output_size(x.shape[2], w.shape[2], opts.stride_w, opts.dilation_w, opts.padding)
        self._check_shape(where, out, (x.shape[0], oh, ow, w.shape[3]))
        return opts

    def _check_window(self, where, opts):
        for attr in ("stride_h", "stride_w", "dilation_h", "dilation_w", "filter_h", "filter_w"):
            v = getattr(opts, attr, 1)
            if v < 1:
                raise ModelError(f"{where}: {attr.replace('_', ' ')} must be at least 1, found {v}")

    def _fully_connected(self, where, o, inputs, outputs):
        self._n_inputs(where, inputs, 2, 3)
        x, w, b = inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None
        out = outputs[0]
        self._act_tensor(where, x, "input")
        self._check_activation(out, f"{where} output")
        self._rank(where, w, "weights", 2)
        if o.weightsFormat != schema.FullyConnectedOptionsWeightsFormat.DEFAULT:
            raise UnsupportedError(f"{where}: shuffled weights format is not supported")
        self._weights(where, w, w.shape[0], 0)
        self._bias(where, b, w.shape[0])
        if w.shape[1] == 0 or x.size % w.shape[1] != 0:
            raise ModelError(f"{where}: input of {x.size} elements does not divide into rows of {w.shape[1]}")
        opts = ir.FullyConnectedOptions(activation=self._activation(where, o.fusedActivationFunction),
                                        keep_num_dims=bool(o.keepNumDims))
        batches = x.size // w.shape[1]
        if out.size != batches * w.shape[0]:
            raise ModelError(f"{where}: output '{out.name}' has shape {list(out.shape)}, but the operator produces "
                             f"{batches}x{w.shape[0]} values")
        return opts

    def _add(self, where, o, inputs, outputs):
        self._n_inputs(where, inputs, 2)
        for i, t in enumerate(inputs):
            self._act_tensor(where, t, f"input {i}")
        self._check_activation(outputs[0], f"{where} output")
        try:
            shape = np.broadcast_shapes(inputs[0].shape, inputs[1].shape)
        except ValueError:
            raise ModelError(f"{where}: input shapes {list(inputs[0].shape)} and {list(inputs[1].shape)} do not "
                             "broadcast") from None
        self._check_shape(where, outputs[0], shape)
        return ir.AddOptions(activation=self._activation(where, o.fusedActivationFunction if o else 0))

    def _pool(self, where, o, inputs, outputs):
        self._n_inputs(where, inputs, 1)
        x, out = inputs[0], outputs[0]
        self._act_tensor(where, x, "input")
        self._check_activation(out, f"{where} output")
        self._rank(where, x, "input", 4)
        if x.scale != out.scale or x.zero_point != out.zero_point:
            raise UnsupportedError(f"{where}: input and output quantisation differ; int8 pooling needs equal scale "
                                   "and zero point")
        opts = ir.Pool2DOptions(filter_h=o.filterHeight, filter_w=o.filterWidth, stride_h=o.strideH,
                                stride_w=o.strideW, padding=self._padding(where, o.padding),
                                activation=self._activation(where, o.fusedActivationFunction))
        self._check_window(where, opts)
        oh = output_size(x.shape[1], opts.filter_h, opts.stride_h, 1, opts.padding)
        ow = output_size(x.shape[2], opts.filter_w, opts.stride_w, 1, opts.padding)
        self._check_shape(where, out, (x.shape[0], oh, ow, x.shape[3]))
        return opts

    _average_pool_2d = _pool
    _max_pool_2d = _pool

    def _reshape(self, where, o, inputs, outputs):
        self._n_inputs(where, inputs, 1, 2)
        x, out = inputs[0], outputs[0]
        self._act_tensor(where, x, "input")
        self._check_activation(out, f"{where} output")
        if x.size != out.size:
            raise ModelError(f"{where}: cannot reshape {list(x.shape)} ({x.size} elements) to {list(out.shape)}")
        if x.scale != out.scale or x.zero_point != out.zero_point:
            raise UnsupportedError(f"{where}: input and output quantisation differ")
        return ir.ReshapeOptions()

    def _softmax(self, where, o, inputs, outputs):
        self._n_inputs(where, inputs, 1)
        x, out = inputs[0], outputs[0]
        self._act_tensor(where, x, "input")
        self._check_activation(out, f"{where} output")
        self._check_shape(where, out, x.shape)
        if out.zero_point != -128 or abs(out.scale - 1 / 256) > 0.001 / 256:
            raise UnsupportedError(f"{where}: int8 softmax output must have scale 1/256 and zero point -128, found "
                                   f"{out.scale} and {out.zero_point}")
        return ir.SoftmaxOptions(beta=float(o.beta) if o else 1.0)

    def _pad(self, where, o, inputs, outputs):
        self._n_inputs(where, inputs, 2)
        x, p, out = inputs[0], inputs[1], outputs[0]
        self._act_tensor(where, x, "input")
        self._check_activation(out, f"{where} output")
        if not p.is_constant or p.data.shape != (len(x.shape), 2):
            raise UnsupportedError(f"{where}: paddings must be a constant [{len(x.shape)}, 2] tensor")
        if np.any(p.data < 0):
            raise ModelError(f"{where}: negative paddings {p.data.tolist()}")
        if x.scale != out.scale or x.zero_point != out.zero_point:
            raise UnsupportedError(f"{where}: input and output quantisation differ")
        expected = tuple(int(d + a + b) for d, (a, b) in zip(x.shape, p.data.tolist()))
        self._check_shape(where, out, expected)
        return ir.PadOptions()

    def _concatenation(self, where, o, inputs, outputs):
        if len(inputs) < 1:
            raise ModelError(f"{where}: no inputs")
        out = outputs[0]
        for i, t in enumerate(inputs):
            if t is None:
                raise ModelError(f"{where}: input {i} is missing")
            self._check_activation(t, f"{where} input {i}")
            if len(t.shape) != len(out.shape):
                raise ModelError(f"{where}: input {i} has rank {len(t.shape)}, output rank {len(out.shape)}")
            if t.scale != out.scale or t.zero_point != out.zero_point:
                raise UnsupportedError(f"{where}: input {i} quantisation differs from the output; int8 "
                                       "concatenation needs equal scale and zero point")
        self._check_activation(out, f"{where} output")
        axis = int(o.axis)
        if axis < 0:
            axis += len(out.shape)
        if not 0 <= axis < len(out.shape):
            raise ModelError(f"{where}: axis {o.axis} out of range for rank {len(out.shape)}")
        expected = list(inputs[0].shape)
        expected[axis] = sum(t.shape[axis] for t in inputs)
        for i, t in enumerate(inputs):
            if any(a != b for k, (a, b) in enumerate(zip(t.shape, inputs[0].shape)) if k != axis):
                raise ModelError(f"{where}: input {i} shape {list(t.shape)} does not match input 0 "
                                 f"{list(inputs[0].shape)} outside axis {axis}")
        self._check_shape(where, out, expected)
        return ir.ConcatenationOptions(axis=axis, activation=self._activation(where, o.fusedActivationFunction))
