"""The datapath's output multiplexer: :class:`OutputSelect`.

Several units (the requantiser, the adder, the pooling unit) take turns on one output stream, and they sit far
apart on the die. A plain multiplexer into a register slice put two cross-die paths in every cycle: the slice's
``ready`` through the select decode into each unit's queue (its output register's enable, 128 flip-flops), and the
units' output registers through the multiplexer into the slice (at 16 x 16 on ECP5, 112-176 endpoints up to
11.6 ns). Here neither path crosses the die in one cycle: each unit is let go by a credit count of its own, next to
it, and the lines travel to a queue at the output through pipeline registers that never stall.
"""

from amaranth.hdl import Cat, Module, Mux, Shape, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .credit import CreditFIFO
from .pe import register_copy
from .register_slice import RegisterSlice

__all__ = ["OutputSelect"]


class OutputSelect(wiring.Component):
    """One output stream from several sources, one selected at a time, without a cross-die path in a cycle.

    ``select`` is one-hot (or zero): the source whose lines go to ``o``. It is registered twice over, once beside
    each source (its ``ready``) and once beside the multiplexer, so it takes effect a cycle late; it may change only
    while :attr:`busy` is low and the newly selected source must not offer a line in the cycle it changes (the
    datapath changes it as a unit's first run is handed out, many cycles before that unit's first result).

    Each source ``i[k]`` has a credit count beside it: ``i[k].ready`` is high while it is selected and fewer than
    ``depth`` of its lines have been taken and not yet returned. A line taken is registered once more with the
    multiplexer (``i[k].payload`` must be a register for this path to be short: the units' registered output
    queues), written into a queue of ``depth`` lines in LUT RAM with an output register (a
    :class:`~haneul.rtl.credit.CreditFIFO`) that no source can overfill, and leaves through a
    :class:`~haneul.rtl.register_slice.RegisterSlice`, so ``o`` is all flip-flops and ``o.ready`` stops at the
    slice; the slice's input comes from the queue's output register, not from its LUT RAM (whose read through the
    slice's multiplexer was 11.7 ns at 16 x 16). Each line leaving the queue returns its credit through a register
    beside each source. A line taken in cycle ``t`` is on ``o`` from cycle ``t + 4`` (:attr:`LATENCY`); a credit is
    back five cycles after it was taken, so ``depth >= 5`` keeps one line per cycle (the default 8 leaves slack
    for a stalled ``o``).

    Parameters
    ----------
    shape : shape-like
        Payload shape of the sources and of ``o``.
    sources : int
        Number of sources.
    depth : int
        Lines of each source in flight (taken and not yet on ``o`` or in the slice), and the queue's entries.

    Members
    -------
    i : In(stream.Signature(shape)).array(sources)
        The sources.
    select : In(sources)
        One-hot: the selected source.
    o : Out(stream.Signature(shape))
        The selected source's lines, in order.
    busy : Out(1)
        Lines are in flight or held (taken from a source and not yet sent on ``o``).
    """

    def __init__(self, shape, sources, *, depth=8):
        if not isinstance(sources, int) or isinstance(sources, bool) or sources <= 0:
            raise ValueError(f"Source count must be a positive integer, not {sources!r}")
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 5:
            raise ValueError(f"Depth must be an integer of at least 5 (the credit round trip), not {depth!r}")
        self._shape = shape
        self._sources = sources
        self._depth = depth
        super().__init__({
            "i":      In(stream.Signature(shape)).array(sources),
            "select": In(sources),
            "o":      Out(stream.Signature(shape)),
            "busy":   Out(1),
        })

    @property
    def depth(self):
        return self._depth

    #: Cycles from a line taken from a source to that line on ``o`` (with ``o`` ready and the queue empty).
    LATENCY = 4

    def elaborate(self, platform):
        m = Module()
        depth = self._depth
        width = Shape.cast(self._shape).width

        m.submodules.queue = queue = CreditFIFO(self._shape, depth, registered=True)
        # The slice alternates two entries (`ping_pong`): the queue's output register reaches their flip-flops
        # with no multiplexer in front (the skid multiplexer was 104 late endpoints up to 13.0 ns at 16 x 16).
        m.submodules.slice = out_slice = RegisterSlice(self._shape, ping_pong=True)
        wiring.connect(m, queue.o, out_slice.i)
        wiring.connect(m, out_slice.o, wiring.flipped(self.o))
        returned = queue.o.valid & queue.o.ready

        gathered = Signal(width, name="gathered", reset_less=True)
        gathered_valid = Signal(name="gathered_valid")
        lines, takes, owing = [], [], []
        for k, source in enumerate(self.i):
            # Beside the source: its select bit, the returned credits and its credit count, all flip-flops, so
            # `ready` (and the source's output register's enable behind it) starts at registers near the source.
            routed = register_copy(m, self.select[k], name=f"routed{k}", platform=platform, init=0)
            back = register_copy(m, returned & routed, name=f"back{k}", platform=platform, init=0)
            owed = Signal(range(depth + 1), name=f"owed{k}")
            credit = Signal(name=f"credit{k}", init=1)
            take = source.valid & source.ready
            m.d.comb += source.ready.eq(routed & credit)
            with m.If(take & ~back):
                m.d.sync += owed.eq(owed + 1)
            with m.Elif(back & ~take):
                m.d.sync += owed.eq(owed - 1)
            m.d.sync += credit.eq(Mux(take & ~back, owed < depth - 1, Mux(back & ~take, 1, owed != depth)))
            # Beside the multiplexer: its own copy of the select bit (a flip-flop, no decode in front of the
            # multiplexer's select inputs).
            chosen = register_copy(m, self.select[k], name=f"chosen{k}", platform=platform, init=0)
            lines.append(Mux(chosen, Value.cast(source.payload), 0))
            takes.append(take)
            owing.append(owed != 0)

        # The multiplexer's register, loaded every cycle (no enable); the queue writes it where a line was taken.
        merged = lines[0]
        for line in lines[1:]:
            merged = merged | line
        m.d.sync += [
            gathered.eq(merged),
            gathered_valid.eq(Cat(*takes).any()),
        ]
        m.d.comb += [
            queue.reserve.eq(gathered_valid),
            queue.w_en.eq(gathered_valid),
            queue.w_data.eq(gathered),
            self.busy.eq(Cat(*owing).any() | out_slice.busy),
        ]
        return m
