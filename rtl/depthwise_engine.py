"""The depthwise engine of the datapath: :class:`DepthwiseEngine`, window buffers and depthwise units per group of
lanes, running in lockstep.

A 16-lane :class:`~haneul.rtl.depthwise.DepthwiseUnit` with its :class:`~haneul.rtl.depthwise.WindowBuffer` is
one block whose lanes, in the 16 x 16 datapath on an ECP5, sit beside their DSP blocks spread over the die. Every
control register of the pair (the column handshake, the pass counter, the window mask, the weight-line select, the
output FIFO's write enable) then drives logic all over the die: the 1 152 column flip-flops' clock enables from one
`valid` were 13.8 ns in session 13's routed run. Copies of single registers per group of lanes moved some of it,
one at a time. The engine does it for all of them: each group of :data:`~haneul.rtl.depthwise.LANE_GROUP` lanes has
a buffer and a unit of its own, behind register slices of its own on the column and weight streams, so each
group's control is local to it.

The groups run in lockstep. Every group sees the same handshakes (the column and weight ``valid``, the result
``ready``) and the same flags (column masks, ``start``/``emit``/``last``, the weight ``last``); their control
depends on nothing else (never on data), so all groups are in the same state in every cycle. The engine's own
``ready`` and ``valid`` are therefore group 0's.
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .commands import DWCONV_KERNEL
from .depthwise import LANE_GROUP, ColumnBeat, DepthwiseUnit, WeightBeat, WindowBuffer, _check_count, _config
from .register_slice import RegisterSlice

__all__ = ["DepthwiseEngine"]


class DepthwiseEngine(wiring.Component):
    """Columns and weight sets in, int32 sums per output pixel out: a :class:`~haneul.rtl.depthwise.WindowBuffer`
    and a :class:`~haneul.rtl.depthwise.DepthwiseUnit` per group of ``group`` lanes, in lockstep.

    Group ``g`` has lanes ``g * group ..`` (the last group may be narrower). Its column and weight beats (its lanes
    of the data, and all the flags) pass through a :class:`~haneul.rtl.register_slice.RegisterSlice` each, so the
    buffer's column registers load on a ``valid`` from a flip-flop of the group's own, and so do the unit's weight
    memories.

    The behaviour is that of one buffer and one unit of ``lanes`` lanes behind the two register slices: a column
    accepted in cycle ``t`` is on the slice's output from cycle ``t + 1`` and, when the buffer takes it then, its
    window (if it emits one) reaches the unit from cycle ``t + 2``, and a pixel's sums are on ``result`` :attr:`DepthwiseUnit.latency` cycles after the unit
    took its final window beat.

    Parameters
    ----------
    config : DatapathConfig, optional
        Element and accumulator shapes; ``dw_taps`` and ``dw_mult`` are the defaults of ``taps`` and
        ``multiplier``.
    lanes : int, optional
        Channels. Default ``config.rows`` (a scratchpad line).
    taps : int, optional
        Multipliers per lane (window lines per beat). Default ``config.dw_taps``.
    multiplier : str, optional
        :attr:`DepthwiseUnit.MULTIPLIERS`. Default ``config.dw_mult``.
    kernel : int
        Window height and width. Default :data:`~haneul.rtl.commands.DWCONV_KERNEL` (3).
    group : int
        Lanes per group. Default :data:`~haneul.rtl.depthwise.LANE_GROUP` (4).

    Members
    -------
    column : In(stream.Signature(ColumnBeat(config, lanes, kernel)))
        Input columns, as for :attr:`WindowBuffer.column`.
    weight : In(stream.Signature(WeightBeat(config, lanes)))
        Weight sets, as for :attr:`DepthwiseUnit.weight`.
    result : Out(stream.Signature(ArrayLayout(signed(acc_width), lanes)))
        One int32 sum per lane and output pixel.
    busy : Out(1)
        A beat is held somewhere (a slice, a window not yet taken, a pixel not yet given out).

    Attributes
    ----------
    groups : list of (int, int)
        Each group's first lane and lane count.
    passes : int
        Beats per window, ``ceil(kernel ** 2 / taps)``.
    latency : int
        :attr:`DepthwiseUnit.latency` of the groups' units.
    """

    def __init__(self, config=None, *, lanes=None, taps=None, multiplier=None, kernel=DWCONV_KERNEL,
                 group=LANE_GROUP):
        config, lanes = _config(config, lanes, "rows")
        _check_count(group, "Group size")
        taps = config.dw_taps if taps is None else taps
        multiplier = config.dw_mult if multiplier is None else multiplier
        self.config = config
        self.lanes = lanes
        self.taps = taps
        self.kernel = kernel
        self.groups = [(first, min(group, lanes - first)) for first in range(0, lanes, group)]
        # The groups' blocks, made here so that a testbench can watch them keep in step.
        self.buffers = [WindowBuffer(config, lanes=n, kh=kernel, kw=kernel, taps=taps, lookahead=True)
                        for _, n in self.groups]
        self.passes = self.buffers[0].passes
        self.units = [DepthwiseUnit(config, lanes=n, taps=taps, passes=self.passes, multiplier=multiplier,
                                    lookahead=True)
                      for _, n in self.groups]
        # The column slices alternate two entries (`ping_pong`): the column reader's lines, from across the die,
        # reach their flip-flops with no multiplexer in front of them.
        self.column_slices = [RegisterSlice(ColumnBeat(config, n, kernel), ping_pong=True) for _, n in self.groups]
        self.weight_slices = [RegisterSlice(WeightBeat(config, n)) for _, n in self.groups]
        self.latency = self.units[0].latency
        super().__init__({
            "column": In(stream.Signature(ColumnBeat(config, lanes, kernel))),
            "weight": In(stream.Signature(WeightBeat(config, lanes))),
            "result": Out(stream.Signature(data.ArrayLayout(config.acc_shape, lanes))),
            "busy":   Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        column, weight = self.column.payload, self.weight.payload
        for g, (first, n) in enumerate(self.groups):
            col_slice, w_slice = self.column_slices[g], self.weight_slices[g]
            buffer, unit = self.buffers[g], self.units[g]
            m.submodules[f"column_slice_g{g}"] = col_slice
            m.submodules[f"weight_slice_g{g}"] = w_slice
            m.submodules[f"buffer_g{g}"] = buffer
            m.submodules[f"unit_g{g}"] = unit
            wiring.connect(m, col_slice.o, buffer.column)
            wiring.connect(m, buffer.window, unit.window)
            wiring.connect(m, w_slice.o, unit.weight)
            lanes = range(first, first + n)
            m.d.comb += [
                col_slice.i.valid.eq(self.column.valid),
                col_slice.i.payload.mask.eq(column.mask),
                col_slice.i.payload.start.eq(column.start),
                col_slice.i.payload.emit.eq(column.emit),
                col_slice.i.payload.last.eq(column.last),
                w_slice.i.valid.eq(self.weight.valid),
                w_slice.i.payload.zero_point.eq(weight.zero_point),
                w_slice.i.payload.last.eq(weight.last),
                unit.result.ready.eq(self.result.ready),
                # The buffer's column enables, registered a cycle ahead from the slice's and the unit's next values.
                buffer.column_valid_next.eq(col_slice.o_valid_next),
                buffer.window_ready_next.eq(unit.window_ready_next),
                unit.mask_next.eq(buffer.mask_next),
            ]
            for k, lane in enumerate(lanes):
                m.d.comb += [
                    w_slice.i.payload.data[k].eq(weight.data[lane]),
                    self.result.payload[lane].eq(unit.result.payload[k]),
                ]
                for i in range(self.kernel):
                    m.d.comb += col_slice.i.payload.data[i][k].eq(column.data[i][lane])

        # Group 0 speaks for all: the groups are in the same state in every cycle.
        buffer, unit = self.buffers[0], self.units[0]
        m.d.comb += [
            self.column.ready.eq(self.column_slices[0].i.ready),
            self.weight.ready.eq(self.weight_slices[0].i.ready),
            self.result.valid.eq(unit.result.valid),
        ]
        # Pixels whose final window the unit took and whose sums it has not given out yet.
        pixels = Signal(range(unit.fifo_depth + 2))
        took = unit.window.valid & unit.window.ready & unit.window.payload.final
        gave = unit.result.valid & unit.result.ready
        with m.If(took & ~gave):
            m.d.sync += pixels.eq(pixels + 1)
        with m.Elif(gave & ~took):
            m.d.sync += pixels.eq(pixels - 1)
        m.d.comb += self.busy.eq(Cat(self.column_slices[0].busy, self.weight_slices[0].busy, buffer.window.valid,
                                     pixels != 0).any())
        return m
