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

    With ``ping_pong``, the same behaviour (cycle for cycle: the same ``i.ready``, ``o.valid`` and beats) from two
    entries written and read alternately, as a two-entry FIFO: an entry loads ``i.payload`` in every cycle in which
    it is free (its clock enable a flip-flop, no multiplexer in front of its inputs), and ``o.payload`` is the
    entry at the read pointer, a multiplexer after the flip-flops, on the consumer's side. ``o.ready`` then reaches
    only the valid flags and the two pointers, never a payload bit's enable, and a producer across the die reaches
    the entries with no logic in front of them (the depthwise engine's column slices, whose skid multiplexer was
    36 endpoints up to 11.5 ns at 16 x 16, and the column reader's response slices, whose output enables, from the
    assembler's ``ready``, 36 up to 10.3 ns).

    Parameters
    ----------
    shape : shape-like
        Payload shape.
    ping_pong : bool
        Two alternating entries instead of an output and a skid register. Default ``False``.

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

    def __init__(self, shape, *, ping_pong=False):
        self._shape = shape
        self._ping_pong = bool(ping_pong)
        super().__init__({
            "i":    In(stream.Signature(shape)),
            "o":    Out(stream.Signature(shape)),
            "busy": Out(1),
            "o_valid_next": Out(1),
        })

    def elaborate(self, platform):
        if self._ping_pong:
            return self._elaborate_ping_pong()
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

    def _elaborate_ping_pong(self):
        m = Module()
        entries = [Signal(self._shape, name=f"entry{k}") for k in range(2)]
        held = [Signal(name=f"held{k}") for k in range(2)]
        write, read = Signal(name="write"), Signal(name="read")     # the entry the next beat goes to / leaves from
        out_valid, full = Signal(), Signal()                        # flip-flops of their own: held[read], both held
        take = self.i.valid & ~full
        give = out_valid & self.o.ready
        count_next = Signal(range(3))
        m.d.comb += [
            self.i.ready.eq(~full),
            self.o.valid.eq(out_valid),
            self.o.payload.eq(Mux(read, entries[1], entries[0])),
            self.busy.eq(held[0] | held[1]),
            count_next.eq(held[0] + held[1] + take - give),
            self.o_valid_next.eq(count_next != 0),
        ]
        for k in range(2):
            with m.If(~held[k]):
                m.d.sync += entries[k].eq(self.i.payload)
            with m.If(take & (write == k)):
                m.d.sync += held[k].eq(1)
            with m.Elif(give & (read == k)):
                m.d.sync += held[k].eq(0)
        with m.If(take):
            m.d.sync += write.eq(~write)
        with m.If(give):
            m.d.sync += read.eq(~read)
        m.d.sync += [
            out_valid.eq(count_next != 0),
            full.eq(count_next == 2),
        ]
        return m
