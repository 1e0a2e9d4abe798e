"""Processing element of the weight-stationary systolic array.

A processing element (PE) holds one weight of the current tile and performs one multiply-accumulate per cycle::

            psum_in (from the PE above)
                  |
    act_in ---> [ PE ] ---> act_out (to the PE on the right, one cycle later)
                  |
            psum_out = psum_in + act_in.value * weight   (to the PE below, one cycle later)

The weight register is double-buffered: a *shadow* weight is written through ``w_load``/``w_data`` while the
*active* weight keeps computing. The swap is not a global signal: the ``swap`` bit travels with the activation that
starts the new tile (the same skewed wavefront as the data), so each PE switches to the new weight exactly when the
first activation of the new tile reaches it, and the activations of the old tile still in flight to its right and
below keep using the old weight.

The PE has no stall input; the array stalls every PE at once by gating the clock enable of the whole pipeline
(:class:`amaranth.hdl.EnableInserter`).
"""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["ActivationLayout", "ProcessingElement"]


class ActivationLayout(data.StructLayout):
    """One activation element as it travels through a row of PEs.

    Parameters
    ----------
    width : int
        Width of the activation value in bits.

    Members
    -------
    value : signed(width)
        The activation.
    swap : unsigned(1)
        This activation is the first of a new tile: the PE switches its active weight to the shadow weight for this
        multiply and every following one.
    """

    def __init__(self, width=8):
        super().__init__({"value": signed(width), "swap": 1})


class ProcessingElement(wiring.Component):
    """int8 x int8 multiply, int32 accumulate, with a double-buffered stationary weight.

    All outputs are registered: ``act_out`` and ``psum_out`` follow the inputs by one cycle.
    Accumulation wraps modulo ``2**acc_width`` (it cannot overflow when the array's
    :class:`~haneul.rtl.config.DatapathConfig` validated ``acc_width`` against the row count).

    Parameters
    ----------
    input_width : int
        Width of activations and weights in bits. Default 8.
    acc_width : int
        Width of partial sums in bits. Default 32.

    Members
    -------
    act_in : In(ActivationLayout(input_width))
        Activation from the left, with its ``swap`` marker.
    act_out : Out(ActivationLayout(input_width))
        ``act_in`` delayed by one cycle, to the PE on the right.
    psum_in : In(signed(acc_width))
        Partial sum from the PE above (0 for the top row).
    psum_out : Out(signed(acc_width))
        ``psum_in + act_in.value * weight``, one cycle later, to the PE below.
    w_load : In(1)
        Write ``w_data`` into the shadow weight at the end of this cycle.
    w_data : In(signed(input_width))
        Next weight.

    Attributes
    ----------
    active : Signal(signed(input_width))
        The weight in use (exposed for tests and debugging).
    shadow : Signal(signed(input_width))
        The weight of the next tile.
    """

    def __init__(self, *, input_width=8, acc_width=32):
        for name, value in (("Input width", input_width), ("Accumulator width", acc_width)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an integer, not {value!r}")
            if value < 2:
                raise ValueError(f"{name} must be at least 2 bits, not {value!r}")
        if acc_width < 2 * input_width:
            raise ValueError(f"Accumulator width {acc_width} is narrower than a product of two "
                             f"{input_width}-bit inputs ({2 * input_width} bits)")
        self.input_width = input_width
        self.acc_width = acc_width
        super().__init__({
            "act_in":   In(ActivationLayout(input_width)),
            "act_out":  Out(ActivationLayout(input_width)),
            "psum_in":  In(signed(acc_width)),
            "psum_out": Out(signed(acc_width)),
            "w_load":   In(1),
            "w_data":   In(signed(input_width)),
        })
        self.active = Signal(signed(input_width))
        self.shadow = Signal(signed(input_width))

    def elaborate(self, platform):
        m = Module()

        # The activation that carries `swap` already multiplies by the new weight.
        weight = Mux(self.act_in.swap, self.shadow, self.active)
        with m.If(self.act_in.swap):
            m.d.sync += self.active.eq(self.shadow)
        # A write in the same cycle as a swap is allowed: `active` takes the old shadow value.
        with m.If(self.w_load):
            m.d.sync += self.shadow.eq(self.w_data)

        m.d.sync += [
            self.act_out.eq(self.act_in),
            # Truncation to acc_width is the wrap-around of two's complement accumulation.
            self.psum_out.eq(self.psum_in + self.act_in.value * weight),
        ]
        return m
