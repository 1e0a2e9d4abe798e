"""LiteRT with its reference kernels (``OpResolverType.BUILTIN_REF``): the bit-exact reference for Haneul.

LiteRT's default (XNNPACK) and optimised kernels round differently from the reference kernels on some operators;
the reference kernels are what TFLite Micro runs and what the golden model and the NPU reproduce bit for bit.
"""

import numpy as np

__all__ = ["ReferenceInterpreter"]


class ReferenceInterpreter:
    """A LiteRT interpreter on the reference kernels that keeps every intermediate tensor.

    Parameters
    ----------
    model : str or bytes
        Path of a ``.tflite`` file, or its contents.
    """

    def __init__(self, model):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
        kwargs = dict(experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
                      experimental_preserve_all_tensors=True)
        if isinstance(model, (bytes, bytearray)):
            self._interp = Interpreter(model_content=bytes(model), **kwargs)
        else:
            self._interp = Interpreter(model_path=str(model), **kwargs)
        self._interp.allocate_tensors()
        self._inputs = self._interp.get_input_details()
        self._outputs = self._interp.get_output_details()

    def run(self, inputs):
        """Run on ``inputs`` (one array per model input); return the list of outputs."""
        if isinstance(inputs, np.ndarray):
            inputs = [inputs]
        for detail, x in zip(self._inputs, inputs):
            self._interp.set_tensor(detail["index"], np.asarray(x).reshape(detail["shape"]))
        self._interp.invoke()
        return [self._interp.get_tensor(d["index"]).copy() for d in self._outputs]

    def tensor(self, index):
        """The value of tensor ``index`` after the last :meth:`run` (every tensor is preserved)."""
        return self._interp.get_tensor(index).copy()
