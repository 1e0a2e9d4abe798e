"""A register slice on a stream: :class:`RegisterSlice`.

Used where a block's stream leaves it for a consumer it does not know: the datapath's output stream. Both directions
are cut by flip-flops, as an AXI register slice does: ``o.valid`` and ``o.payload`` are registers, and so is
``i.ready``, so neither the consumer's ``ready`` nor the producer's ``valid`` runs through logic on the other side.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["RegisterSlice"]


class RegisterSlice(wiring.Component):
    """A stream register stage with a skid register: one beat per cycle, every output a flip-flop.

    The output register holds the beat on ``o``. While ``o`` stalls (``o.valid`` high, ``o.ready`` low) one more beat
    can enter, into the skid register, because ``i.ready`` (a flip-flop, "skid empty") was already high for it; with
    the skid register full ``i.ready`` drops. When ``o`` moves, the output register takes the skid register's beat
    if there is one, else the beat on ``i``. A beat accepted on ``i`` in cycle ``t`` is on ``o`` from cycle
    ``t + 1``, and with ``o.ready`` high a beat passes every cycle.

    ``o.ready`` reaches the output register's clock enable and multiplexer and the two valid flags only; ``i.valid``
    reaches the two valid flags and the output register's enable, never the skid register's (that loads whenever it
    is empty, its enable a flip-flop).

    Parameters
    ----------
    shape : shape-like
        Payload shape.

    Members
    -------
    i : In(stream.Signature(shape))
    o : Out(stream.Signature(shape))
    busy : Out(1)
        A beat is held (in either register).
    o_valid_next : Out(1)
        ``o.valid`` of the next cycle (what the output valid flag loads now), for a consumer that registers its
        decision of the next cycle (the depthwise window buffers' column enables).
    """

    def __init__(self, shape):
        self._shape = shape
        super().__init__({
            "i":    In(stream.Signature(shape)),
            "o":    Out(stream.Signature(shape)),
            "busy": Out(1),
            "o_valid_next": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        out_valid = Signal()
        out_data = Signal(self._shape, name="out_data")
        skid_valid = Signal()
        skid_data = Signal(self._shape, name="skid_data")

        moves = ~out_valid | self.o.ready          # the output register is free for a new beat this cycle
        take = self.i.valid & ~skid_valid
        m.d.comb += [
            self.i.ready.eq(~skid_valid),
            self.o.valid.eq(out_valid),
            self.o.payload.eq(out_data),
            self.busy.eq(out_valid | skid_valid),
            self.o_valid_next.eq(Mux(moves, skid_valid | self.i.valid, out_valid)),
        ]
        with m.If(~skid_valid):
            m.d.sync += skid_data.eq(self.i.payload)
        with m.If(moves):
            m.d.sync += [
                out_data.eq(Mux(skid_valid, skid_data, self.i.payload)),
                out_valid.eq(skid_valid | self.i.valid),
                skid_valid.eq(0),
            ]
        with m.Else():
            m.d.sync += skid_valid.eq(skid_valid | take)
        return m
