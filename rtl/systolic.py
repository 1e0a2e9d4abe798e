"""Weight-stationary systolic array: the compute core of Haneul.

The array computes GEMM tiles. For a weight tile ``W`` of ``rows x cols`` (K x N) int8 values and a stream of
activation vectors ``A[m]`` of ``rows`` int8 values, it produces one result vector per activation vector::

    result[m][n] = sum(A[m][k] * W[k][n] for k in range(rows))        (int32)

i.e. the product of an ``M x rows`` activation tile and a ``rows x cols`` weight tile, one row of the product per
cycle. A reduction shorter than ``rows`` (partial K) is computed by zero-padding: the caller sends zero weight rows
(or zero activation elements) for ``k >= K``. Longer reductions are split into K tiles whose results the caller adds
(in the accumulator memory).

Dataflow (``rows = 3``, ``cols = 4`` shown)::

                  weight stream (one row of W per beat; column n delayed n // 2 cycles)
                    |        |         |        |
    act[0] ------> PE00 -+-> PE01 ---> PE02 -+-> PE03     activations move right, two PEs per cycle (ACT_HOP)
    act[1] -[1]--> PE10 -+-> PE11 ---> PE12 -+-> PE13     partial sums move down, one PE per cycle
    act[2] -[2]--> PE20 -+-> PE21 ---> PE22 -+-> PE23
                    |        |         |        |
                    v        v         v        v
                   [2]      [2]       [1]      [1]        deskew: column n delayed 1 + (cols-1)//2 - n//2 cycles
                    |        |         |        |
                       result vector

``[d]`` is a delay of ``d`` cycles (plus one input register in every row, not drawn). Row ``k`` of the activation
vector is skewed by ``k`` cycles on the way in; along a row, the two PEs of a column pair take the same activation
register and the pair's second PE passes it on, so column ``n`` sees it ``n // 2`` cycles after column 0
(:meth:`DatapathConfig.wavefront`). Column ``n`` of the result, which leaves the array ``n // 2`` cycles after
column 0, is delayed to match the last column on the way out. So the user sends and receives whole, unskewed
vectors.

Each PE's multiplier is a DSP block or LUTs, as ``DatapathConfig.pe_mult`` says (see :mod:`haneul.rtl.pe`). The
pipeline never stalls and the result stream has no backpressure: the consumer takes every result in the cycle it
appears (the accumulator memory does). See ``docs/systolic.md`` for timing diagrams, ``docs/fpga.md`` for the ECP5
figures.
"""

import dataclasses

from amaranth.hdl import Module, Mux, Signal, Value, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .config import ACT_HOP, WEIGHT_HOP, DatapathConfig
from .pe import ProcessingElement, register_copy

__all__ = ["ActivationBeat", "WeightBeat", "ResultBeat", "SystolicArray", "delay_line"]


def delay_registers(m, value, shape, count, name, reset_less=True, platform=None):
    """``value`` delayed by ``count`` registers of ``shape`` in ``m`` (data registers have no reset).

    With an ECP5 ``platform`` the registers are :func:`~haneul.rtl.pe.register_copy` instances, which Yosys does not
    merge with equal registers elsewhere: for the array's control chains (the swap markers, the weight bus's load and
    row), whose registers at every PE of an anti-diagonal hold the same value. Merged, one register drove a whole
    anti-diagonal (up to 16 PEs from corner to corner: 14.6 ns of routing at 16 x 16).
    """
    for i in range(count):
        if platform is None:
            reg = Signal(shape, name=f"{name}_d{i}", reset_less=reset_less)
            m.d.sync += reg.eq(value)
        else:
            reg = register_copy(m, Value.cast(value), name=f"{name}_d{i}", platform=platform, shape=shape,
                                init=None if reset_less else 0)
        value = reg
    return value


def delay_line(m, value, count, name):
    """``value`` delayed by ``count`` cycles, for data that moves every cycle (no enable, no reset).

    Up to two cycles are flip-flops; a longer line is a LUT-RAM memory of ``count - 1`` entries, written and read
    (asynchronously) at the same free-running counter, so that each entry is read just before it is overwritten
    ``count - 1`` cycles after it was written, followed by a flip-flop: the output comes from a register.
    """
    value = Value.cast(value)
    if count <= 2:
        return delay_registers(m, value, value.shape(), count, name)
    depth = count - 1
    memory = m.submodules[f"{name}_ram"] = Memory(shape=value.shape(), depth=depth, init=[])
    write = memory.write_port()
    read = memory.read_port(domain="comb")
    index = Signal(range(depth), name=f"{name}_index", reset_less=True)
    out = Signal(value.shape(), name=name, reset_less=True)
    m.d.sync += [
        index.eq(Mux(index == depth - 1, 0, index + 1)),
        out.eq(read.data),
    ]
    m.d.comb += [
        write.addr.eq(index),
        write.data.eq(value),
        write.en.eq(1),
        read.addr.eq(index),
    ]
    return out


class ActivationBeat(data.StructLayout):
    """Payload of the activation stream: one activation vector (one row of the ``M x rows`` input tile).

    Parameters
    ----------
    config : DatapathConfig

    Members
    -------
    data : ArrayLayout(signed(input_width), rows)
        ``data[k]`` multiplies row ``k`` of the weight tile.
    last : unsigned(1)
        Last vector of the tile: the next vector uses the next weight tile.
    """

    def __init__(self, config):
        super().__init__({
            "data": data.ArrayLayout(config.input_shape, config.rows),
            "last": unsigned(1),
        })


class WeightBeat(data.ArrayLayout):
    """Payload of the weight stream: one row ``W[k]`` of the ``rows x cols`` weight tile.

    A tile is exactly ``rows`` beats, row 0 first; element ``n`` of beat ``k`` is ``W[k][n]``.

    Parameters
    ----------
    config : DatapathConfig
    """

    def __init__(self, config):
        super().__init__(config.input_shape, config.cols)


class ResultBeat(data.StructLayout):
    """Payload of the result stream: one result vector (one row of the ``M x cols`` output tile).

    Parameters
    ----------
    config : DatapathConfig

    Members
    -------
    data : ArrayLayout(signed(acc_width), cols)
        ``data[n] = sum_k act.data[k] * W[k][n]``.
    last : unsigned(1)
        Copy of ``last`` of the activation vector this result belongs to.
    """

    def __init__(self, config):
        super().__init__({
            "data": data.ArrayLayout(config.acc_shape, config.cols),
            "last": unsigned(1),
        })


class SystolicArray(wiring.Component):
    """Weight-stationary ``rows x cols`` systolic array of int8 multiply, int32 accumulate PEs.

    A *tile* is ``rows`` beats on ``weight`` (the weight tile, row 0 first) and ``M >= 1`` beats on ``act``, the
    last of which has ``act.payload.last`` set. Each tile produces ``M`` beats on ``result``, in order, the last one
    with ``result.payload.last`` set.

    Weights are double-buffered in every PE: the weights of the next tile are written into the *shadow* registers
    while the current tile computes with the *active* ones. The first activation vector of each tile (the one after a
    ``last``, or the first after reset) carries a ``swap`` marker through the array with the data, and each PE
    switches to its shadow weight when that vector reaches it; so tiles follow each other without draining the array.

    * ``weight.ready`` is high while the shadow registers still need rows of the next tile (they are free again from
      the cycle after the previous tile's first vector was accepted).
    * ``act.ready`` is low for the first vector of a tile until all ``rows`` rows of its weights have been accepted.
    * The weights have no reset; the first tile needs its weights like any other.

    Timing: a vector accepted on ``act`` in cycle ``t`` appears on ``result`` in cycle ``t + latency`` (``latency =
    rows + (cols - 1) // 2 + 6``), always. Throughput is one vector per cycle, also across tile
    boundaries when each tile has at least ``rows + 1`` vectors and the weight stream keeps up (shorter tiles are
    computed correctly, with bubbles while their weights load).

    Stalls: the pipeline never stops (there is no clock enable) and ``result`` is ``always_ready``: a result is
    valid for its one cycle and must be taken then. With no backpressure to spread, no decision reaches more than
    one column of the array: the column deskew is a free-running delay line per column (:func:`delay_line`), and
    ``act.ready``/``weight.ready`` depend on registers only. Gaps in ``act.valid`` travel through the array as
    bubbles.

    Parameters
    ----------
    config : DatapathConfig, optional
        Datapath parameters (``rows``, ``cols``, ``input_width``, ``acc_width``, ``dsp_pes``, ``lut_mult``).
        Default: ``DatapathConfig()``.
    rows : int, optional
        Override ``config.rows``.
    cols : int, optional
        Override ``config.cols``.

    Members
    -------
    act : In(stream.Signature(ActivationBeat(config)))
        Activation vectors, unskewed.
    weight : In(stream.Signature(WeightBeat(config)))
        Weight tile rows.
    result : Out(stream.Signature(ResultBeat(config), always_ready=True))
        Result vectors, deskewed; no backpressure.

    Attributes
    ----------
    config : DatapathConfig
    rows, cols : int
    latency : int
        Cycles from ``act`` to ``result``, ``rows + (cols - 1) // 2 + 6`` (:attr:`DatapathConfig.latency`).
    """

    def __init__(self, config=None, *, rows=None, cols=None):
        if config is None:
            config = DatapathConfig()
        elif not isinstance(config, DatapathConfig):
            raise TypeError(f"Configuration must be a DatapathConfig, not {config!r}")
        overrides = {name: value for name, value in (("rows", rows), ("cols", cols)) if value is not None}
        if overrides:
            config = dataclasses.replace(config, **overrides)  # validates the overrides

        self.config = config
        self.rows = config.rows
        self.cols = config.cols
        self.latency = config.latency
        super().__init__({
            "act":    In(stream.Signature(ActivationBeat(config))),
            "weight": In(stream.Signature(WeightBeat(config))),
            "result": Out(stream.Signature(ResultBeat(config), always_ready=True)),
        })

    def elaborate(self, platform):
        rows, cols, cfg = self.rows, self.cols, self.config
        m = Module()

        def delay(value, shape, count, name, reset_less=True):
            return delay_registers(m, value, shape, count, name, reset_less)

        def control(value, shape, count, name, reset_less=True):
            # a control chain: registers of their own (see `delay_registers`)
            return delay_registers(m, value, shape, count, name, reset_less, platform)

        # Tile control -------------------------------------------------------------------------------------------

        need_swap = Signal(init=1)                 # the next accepted vector starts a tile
        shadow_rows = Signal(range(rows + 1))      # rows of the next tile written into the shadow registers
        shadow_full = Signal()                     # shadow_rows == rows

        # `act.ready` is a flip-flop, loaded with the next cycle's verdict: for a vector that starts a tile, a full
        # shadow. It has two copies: one drives the producer's handshake, the other this array's, so
        # that neither handshake crosses from one block to the other and back within a cycle (the activations come
        # from the scratchpad's response queue, which sits across the die from the array's control on the 16 x 16
        # ECP5 build).
        ready_next = Signal()
        ready_local = register_copy(m, ready_next, name="act_ready_local", platform=platform, init=0)
        ready_port = register_copy(m, ready_next, name="act_ready_port", platform=platform, init=0)
        m.d.comb += self.act.ready.eq(ready_port)
        # `weight.ready` (not full) likewise: two flip-flops loaded with the next cycle's test, one for the
        # producer (the scratchpad's response queue: the compare after `shadow_rows` and 6.6 ns of routing to its
        # pointers at 16 x 16), one for this array.
        full_next = Signal()
        weight_local = register_copy(m, ~full_next, name="weight_ready_local", platform=platform, init=1)
        weight_port = register_copy(m, ~full_next, name="weight_ready_port", platform=platform, init=1)
        m.d.comb += self.weight.ready.eq(weight_port)
        act_fire = self.act.valid & ready_local
        weight_fire = self.weight.valid & weight_local
        swap = Signal()
        m.d.comb += swap.eq(act_fire & need_swap)

        with m.If(act_fire):
            m.d.sync += need_swap.eq(self.act.payload.last)
        # `swap` needs a full shadow and a weight write a non-full one: never both in one cycle.
        with m.If(swap):
            m.d.sync += shadow_rows.eq(0)
        with m.Elif(weight_fire):
            m.d.sync += shadow_rows.eq(shadow_rows + 1)
        # The next cycle's state, each from a test of this cycle's registers selected by the handshakes.
        need_swap_next = Mux(act_fire, self.act.payload.last, need_swap)
        m.d.comb += full_next.eq(Mux(swap, 0, Mux(weight_fire, shadow_rows == rows - 1, shadow_full)))
        m.d.sync += shadow_full.eq(full_next)
        m.d.comb += ready_next.eq(~need_swap_next | full_next)

        # Weight write bus ----------------------------------------------------------------------------------------
        # The bus enters column n `wavefront(n)` cycles after a row is accepted (as the activations reach that
        # column: its (load, row) chain has a register per group of ACT_HOP columns, its data a delay line per
        # column) and moves down the column one group of WEIGHT_HOP PE rows per cycle: the PEs of a row group share
        # the bus registers (load and row per column group, data per column), so no wire spans more than a group.
        # Each PE's write enable is a register of its own, loaded from the bus one row group earlier (`load` and
        # `row == k`), so that the shadow registers' enable comes straight from a flip-flop.
        # Ordering: the swap reaches PE (k, n) k + 1 + wavefront(n) cycles after its vector was accepted; row k is
        # accepted (earliest) k + 1 cycles after the swap and written at PE (k, n) k // WEIGHT_HOP + wavefront(n)
        # cycles after that, so a write never overtakes the swap it follows (a write in the swap's cycle goes to the
        # shadow after the active weight took it); and every write of a tile lands before the next tile's swap,
        # which needs them all accepted first (k // WEIGHT_HOP <= k).
        row_shape = unsigned(max(1, (rows - 1).bit_length()))
        wave = [cfg.wavefront(n) for n in range(cols)]
        groups = range(-(-rows // WEIGHT_HOP))
        # The top: (load, row) `d` cycles after the handshake, for the column group that is d cycles away.
        top_ctl = [(weight_fire, shadow_rows)]
        for d in range(1, wave[-1] + 1):
            load, row = top_ctl[-1]
            top_ctl.append((control(load, 1, 1, f"w_load_c{d * ACT_HOP}", reset_less=False),
                            control(row, row_shape, 1, f"w_row_c{d * ACT_HOP}")))
        # bus[g][n]: (load, row, data) seen by the PEs of row group g in column n; write[k][n]: PE (k, n)'s enable.
        bus = [[(*top_ctl[wave[n]], delay(self.weight.payload[n], cfg.input_shape, wave[n], f"w_data_c{n}"))
                for n in range(cols)]]
        for g in groups[1:]:
            k = g * WEIGHT_HOP
            ctl = {}        # per column group; the bottom row group passes nothing on
            if g < groups[-1]:
                for n in range(cols):
                    if wave[n] not in ctl:
                        load, row, _ = bus[-1][n]
                        ctl[wave[n]] = (control(load, 1, 1, f"w_load_r{k}_c{n}", reset_less=False),
                                        control(row, row_shape, 1, f"w_row_r{k}_c{n}"))
            bus.append([(*ctl.get(wave[n], (None, None)), delay(value, cfg.input_shape, 1, f"w_data_r{k}_c{n}"))
                        for n, (_, _, value) in enumerate(bus[-1])])
        write = [[None] * cols for _ in range(rows)]
        for k in range(rows):
            g = k // WEIGHT_HOP
            for n in range(cols):
                if g == 0 and wave[n] == 0:
                    write[k][n] = weight_fire & (shadow_rows == k)
                    continue
                # the bus one cycle earlier: the row group above, or at the top the column group to the left
                load, row = bus[g - 1][n][:2] if g else top_ctl[wave[n] - 1]
                write[k][n] = control(load & (row == k), 1, 1, f"w_write_r{k}_c{n}", reset_less=False)

        # Activation skew: row k delayed k + 1 cycles --------------------------------------------------------------
        # (one input register for every row: the vector comes from the scratchpad's response queue and the swap
        # from the handshake, and neither goes on into the PEs of row 0 in the same cycle)
        act_in = []
        for k in range(rows):
            value = delay(self.act.payload.data[k], cfg.input_shape, k + 1, f"act_r{k}")
            marker = control(swap, 1, k + 1, f"swap_r{k}", reset_less=False)
            act_in.append((value, marker))

        # PE grid --------------------------------------------------------------------------------------------------
        # Each row's partial sums are as wide as the sum of its products can be (`DatapathConfig.psum_width`): 16
        # bits in the top row of an int8 array, 20 in row 15, not acc_width. The PEs of a group of ACT_HOP columns
        # take the same activation (the group's first PE's input); the group's last PE passes it on (the other
        # PEs' `act_out` registers are left unused and removed by synthesis).
        # The swap marker is the clock enable of a PE's active weight: beyond the first column group, every PE
        # has a copy of its own, loaded from a copy in the group before (the marker that group saw a cycle
        # earlier), so that no PE's enable comes from a register in another column (one register for a column
        # pair, two PEs back, cost 5.4-7.1 ns of routing into the enables at 16 x 16).
        pes = [[ProcessingElement(input_width=cfg.input_width, acc_width=cfg.psum_width(k), mult=cfg.pe_mult(k, n))
                for n in range(cols)]
               for k in range(rows)]
        for k in range(rows):
            for n in range(cols):
                pe = pes[k][n]
                m.submodules[f"pe_{k}_{n}"] = pe
                if n == 0:
                    m.d.comb += [pe.act_in.value.eq(act_in[k][0]), pe.act_in.swap.eq(act_in[k][1])]
                elif wave[n] == 0:
                    m.d.comb += pe.act_in.eq(pes[k][n - 1].act_in)
                else:
                    value = pes[k][n - 1].act_in.value if wave[n] == wave[n - 1] else pes[k][n - 1].act_out.value
                    before = pes[k][wave.index(wave[n]) - 1]      # the last PE of the group before
                    m.d.comb += [
                        pe.act_in.value.eq(value),
                        pe.act_in.swap.eq(control(before.act_in.swap, 1, 1, f"swap_r{k}_c{n}", reset_less=False)),
                    ]
                m.d.comb += [
                    pe.psum_in.eq(0 if k == 0 else pes[k - 1][n].psum_out),
                    pe.w_load.eq(write[k][n]),
                    pe.w_data.eq(bus[k // WEIGHT_HOP][n][2]),
                ]

        # Deskew, one column at a time ---------------------------------------------------------------------------
        # Column n of a vector leaves the bottom PE in cycle t + rows + wavefront(n) + PE latency and is delayed
        # 1 + wavefront(cols - 1) - wavefront(n) cycles more, so that every column of the vector reaches `result` in
        # cycle t + latency. Each column's delay is a line of its own beside that column, loaded every cycle
        # whatever it holds: no enable, no pointer and no decision reaches more than one column (the array has no
        # backpressure to spread).
        for n in range(cols):
            column = delay_line(m, pes[rows - 1][n].psum_out, 1 + wave[-1] - wave[n], f"deskew_c{n}")
            m.d.comb += self.result.payload.data[n].eq(column)   # sign-extended to acc_width
        valid = delay(act_fire, 1, self.latency, "valid", reset_less=False)
        m.d.comb += [
            self.result.valid.eq(valid),
            self.result.payload.last.eq(delay(self.act.payload.last, 1, self.latency, "last")),
        ]
        return m
