"""Weight-stationary systolic array: the compute core of Haneul.

The array computes GEMM tiles. For a weight tile ``W`` of ``rows x cols`` (K x N) int8 values and a stream of
activation vectors ``A[m]`` of ``rows`` int8 values, it produces one result vector per activation vector::

    result[m][n] = sum(A[m][k] * W[k][n] for k in range(rows))        (int32)

i.e. the product of an ``M x rows`` activation tile and a ``rows x cols`` weight tile, one row of the product per
cycle. A reduction shorter than ``rows`` (partial K) is computed by zero-padding: the caller sends zero weight rows
(or zero activation elements) for ``k >= K``. Longer reductions are split into K tiles whose results the caller adds
(in the accumulator memory).

Dataflow (``rows = cols = 3`` shown)::

                  weight stream (one row of W per beat; column n delayed n cycles)
                    |        |        |
    act[0] ------> PE00 --> PE01 --> PE02         activations move right, one PE per cycle
    act[1] -[1]--> PE10 --> PE11 --> PE12         partial sums move down, one PE per cycle
    act[2] -[2]--> PE20 --> PE21 --> PE22
                    |        |        |
                   [2]      [1]       |           deskew: column n delayed cols-1-n cycles
                    v        v        v
                       result vector

``[d]`` is a delay of ``d`` registers. Row ``k`` of the activation vector is skewed by ``k`` cycles on the way in, and
column ``n`` of the result deskewed by ``cols - 1 - n`` cycles on the way out, so the user sends and receives whole,
unskewed vectors. See ``docs/systolic.md`` for timing diagrams and the stall scheme.
"""

import dataclasses

from amaranth.hdl import EnableInserter, Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import DatapathConfig
from .pe import ActivationLayout, ProcessingElement

__all__ = ["ActivationBeat", "WeightBeat", "ResultBeat", "SystolicArray"]


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
    * After reset the active weights are zero; the first tile needs its weights like any other.

    Timing: a vector accepted on ``act`` in cycle ``t`` appears on ``result`` in cycle ``t + latency`` (``latency =
    rows + cols - 1``) if ``result`` is not stalled. Throughput is one vector per cycle, also across tile boundaries
    when each tile has at least ``rows + 1`` vectors and the weight stream keeps up (shorter tiles are computed
    correctly, with bubbles while their weights load).

    Stalls: the whole pipeline advances only when its output register is empty or accepted
    (``~result.valid | result.ready``); otherwise every register in the array holds (a global clock enable) and both
    ``act.ready`` and ``weight.ready`` are low. Gaps in ``act.valid`` travel through the array as bubbles.

    Parameters
    ----------
    config : DatapathConfig, optional
        Datapath parameters (``rows``, ``cols``, ``input_width``, ``acc_width``). Default: ``DatapathConfig()``.
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
    result : Out(stream.Signature(ResultBeat(config)))
        Result vectors, deskewed.

    Attributes
    ----------
    config : DatapathConfig
    rows, cols : int
    latency : int
        Cycles from ``act`` to ``result``, ``rows + cols - 1``.
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
            "result": Out(stream.Signature(ResultBeat(config))),
        })

    def elaborate(self, platform):
        rows, cols, cfg = self.rows, self.cols, self.config
        m = Module()

        # Everything in `pipe` advances together, only when the output register is empty or being accepted.
        pipe = Module()
        advance = Signal()
        m.d.comb += advance.eq(~self.result.valid | self.result.ready)
        m.submodules.pipe = EnableInserter(advance)(pipe)

        def delay(value, shape, count, name):
            """``value`` delayed by ``count`` registers of the stalled pipeline."""
            for i in range(count):
                reg = Signal(shape, name=f"{name}_d{i}")
                pipe.d.sync += reg.eq(value)
                value = reg
            return value

        # Tile control -------------------------------------------------------------------------------------------

        need_swap = Signal(init=1)                 # the next accepted vector starts a tile
        shadow_rows = Signal(range(rows + 1))      # rows of the next tile written into the shadow registers
        shadow_full = Signal()
        m.d.comb += [
            shadow_full.eq(shadow_rows == rows),
            self.weight.ready.eq(advance & ~shadow_full),
            self.act.ready.eq(advance & (~need_swap | shadow_full)),
        ]
        act_fire = self.act.valid & self.act.ready
        weight_fire = self.weight.valid & self.weight.ready
        swap = Signal()
        m.d.comb += swap.eq(act_fire & need_swap)

        with m.If(act_fire):
            m.d.sync += need_swap.eq(self.act.payload.last)
        # `swap` needs a full shadow and a weight write a non-full one: never both in one cycle.
        with m.If(swap):
            m.d.sync += shadow_rows.eq(0)
        with m.Elif(weight_fire):
            m.d.sync += shadow_rows.eq(shadow_rows + 1)

        # Weight write bus, column n delayed n cycles --------------------------------------------------------------
        # The swap reaches PE (k, n) k + n cycles after its vector was accepted; row k is written (earliest) k + 1
        # cycles after the swap, into column n n cycles later still, so a write never overtakes the swap it follows.
        row_shape = unsigned(max(1, (rows - 1).bit_length()))
        w_load = []
        w_row = []
        w_data = []
        load, row = weight_fire, shadow_rows
        for n in range(cols):
            if n > 0:
                load = delay(load, 1, 1, f"w_load_c{n}")
                row = delay(row, row_shape, 1, f"w_row_c{n}")
            w_load.append(load)
            w_row.append(row)
            w_data.append(delay(self.weight.payload[n], cfg.input_shape, n, f"w_data_c{n}"))

        # Activation skew: row k delayed k cycles ------------------------------------------------------------------
        act_layout = ActivationLayout(cfg.input_width)
        act_in = []
        for k in range(rows):
            element = Signal(act_layout, name=f"act_r{k}")
            m.d.comb += [
                element.value.eq(self.act.payload.data[k]),
                element.swap.eq(swap),
            ]
            act_in.append(delay(element, act_layout, k, f"act_r{k}"))

        # PE grid --------------------------------------------------------------------------------------------------
        pes = [[ProcessingElement(input_width=cfg.input_width, acc_width=cfg.acc_width) for _ in range(cols)]
               for _ in range(rows)]
        for k in range(rows):
            for n in range(cols):
                pe = pes[k][n]
                pipe.submodules[f"pe_{k}_{n}"] = pe
                pipe.d.comb += [
                    pe.act_in.eq(act_in[k] if n == 0 else pes[k][n - 1].act_out),
                    pe.psum_in.eq(0 if k == 0 else pes[k - 1][n].psum_out),
                    pe.w_load.eq(w_load[n] & (w_row[n] == k)),
                    pe.w_data.eq(w_data[n]),
                ]

        # Deskew: column n delayed cols - 1 - n cycles; valid and last follow the vector ----------------------------
        for n in range(cols):
            out = delay(pes[rows - 1][n].psum_out, cfg.acc_shape, cols - 1 - n, f"psum_c{n}")
            m.d.comb += self.result.payload.data[n].eq(out)
        valid = delay(act_fire, 1, self.latency, "valid")
        last = delay(self.act.payload.last, 1, self.latency, "last")
        m.d.comb += [
            self.result.valid.eq(valid),
            self.result.payload.last.eq(last),
        ]

        return m
