"""Shared check: the golden model against LiteRT's reference kernels, every tensor, bit for bit."""

import numpy as np

from haneul.firmware import tflite
from haneul.sim import golden
from haneul.sim.reference import ReferenceInterpreter


def assert_bit_exact(model, inputs, ref=None, graph=None):
    """Run ``model`` (bytes or path) on both; assert every operator output is identical. Returns the outputs."""
    graph = graph if graph is not None else (tflite.loads(model) if isinstance(model, bytes) else tflite.load(model))
    ref = ref if ref is not None else ReferenceInterpreter(model)
    ref_out = ref.run(inputs)
    outs, values = golden.run(graph, inputs, intermediates=True)
    for op in graph.operators:
        t = op.outputs[0]
        expected = ref.tensor(t.index).reshape(t.shape)
        got = values[t.index]
        if not np.array_equal(expected, got):
            diff = np.argwhere(expected != got)
            first = tuple(diff[0])
            raise AssertionError(
                f"{op.describe()}: {len(diff)} of {expected.size} values differ from LiteRT; first at {first}: "
                f"golden {got[first]} vs reference {expected[first]}")
    for e, g in zip(ref_out, outs):
        assert np.array_equal(e.reshape(g.shape), g)
    return outs
