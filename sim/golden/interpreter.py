"""Runs a whole :class:`~haneul.firmware.ir.Graph` on the golden kernels."""

import numpy as np

from haneul.errors import InputError, ModelError
from haneul.firmware.ir import OpType
from . import kernels
from .params import prepare

__all__ = ["run", "check_inputs"]


def check_inputs(graph, inputs):
    """Validate user inputs against the graph's input tensors; return them as a list of int8 arrays."""
    if isinstance(inputs, np.ndarray):
        inputs = [inputs]
    inputs = list(inputs)
    if len(inputs) != len(graph.inputs):
        raise InputError(f"the model has {len(graph.inputs)} input(s), {len(inputs)} given")
    checked = []
    for t, x in zip(graph.inputs, inputs):
        x = np.asarray(x)
        if x.dtype != np.int8:
            raise InputError(f"input tensor '{t.name}' must be int8, got {x.dtype} (quantise it with scale "
                             f"{t.scale:g} and zero point {t.zero_point} first)")
        if tuple(x.shape) != tuple(t.shape):
            if x.size == t.size:
                x = x.reshape(t.shape)
            else:
                raise InputError(f"input tensor '{t.name}' must have shape {list(t.shape)} ({t.size} values), "
                                 f"got {list(x.shape)} ({x.size} values)")
        checked.append(x)
    return checked


def _value(values, t):
    return t.data if t.is_constant else values[t.index]


def _run_op(op, values):
    p = prepare(op)
    ins = [None if t is None else _value(values, t) for t in op.inputs]
    out = op.outputs[0]
    if op.type is OpType.CONV_2D:
        return kernels.conv_2d(ins[0], ins[1], ins[2] if len(ins) > 2 else None, p)
    if op.type is OpType.DEPTHWISE_CONV_2D:
        return kernels.depthwise_conv_2d(ins[0], ins[1], ins[2] if len(ins) > 2 else None, p)
    if op.type is OpType.FULLY_CONNECTED:
        return kernels.fully_connected(ins[0], ins[1], ins[2] if len(ins) > 2 else None, p).reshape(out.shape)
    if op.type is OpType.AVERAGE_POOL_2D:
        return kernels.average_pool_2d(ins[0], p)
    if op.type is OpType.MAX_POOL_2D:
        return kernels.max_pool_2d(ins[0], p)
    if op.type is OpType.ADD:
        return kernels.add(ins[0], ins[1], p)
    if op.type is OpType.SOFTMAX:
        return kernels.softmax(ins[0], p)
    if op.type is OpType.RESHAPE:
        return kernels.reshape(ins[0], out.shape)
    if op.type is OpType.PAD:
        return kernels.pad(ins[0], op.inputs[1].data, out.zero_point)
    if op.type is OpType.CONCATENATION:
        return kernels.concatenation(ins, op.options.axis)
    raise ModelError(f"operator {op.index}: no golden kernel for {op.type.value}")  # pragma: no cover


def run(graph, inputs, *, intermediates=False):
    """Run ``graph`` on ``inputs`` (one int8 array per graph input).

    Returns the list of output arrays, or, with ``intermediates=True``, ``(outputs, values)`` where ``values`` maps
    every activation tensor index to its int8 array.
    """
    values = {t.index: x for t, x in zip(graph.inputs, check_inputs(graph, inputs))}
    for op in graph.operators:
        try:
            result = _run_op(op, values)
        except ValueError as e:
            raise ModelError(f"operator {op.index} ({op.type.value}): {e}") from None
        out = op.outputs[0]
        assert result.shape == tuple(out.shape), (op, result.shape, out.shape)
        values[out.index] = result
    outputs = [_value(values, t) for t in graph.outputs]
    return (outputs, values) if intermediates else outputs
