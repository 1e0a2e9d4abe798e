"""Depthwise convolution: a vector unit beside the systolic array, and the sliding-window buffer that feeds it.

DEPTHWISE_CONV_2D computes every output channel from its own input channel only. The weight-stationary systolic
array broadcasts each activation element along a row to all of its columns, so a depthwise layer can use one column
per activation vector (9 of 256 multipliers for a 3 x 3 kernel). :class:`DepthwiseUnit` is shaped for the operator
instead: ``lanes`` channels side by side, each with ``taps`` multipliers and an adder tree, one output pixel of
``lanes`` channels per cycle::

    acc[l] = sum(w[t][l] * (x[t][l] - zero_point) for every tap t whose mask bit is set)      (int32, per lane l)

where ``x[t]`` is the input line (one pixel, ``lanes`` channels) under tap ``t`` of the kernel and ``w[t]`` the
weight line of that tap. Taps outside the image (padding) have their mask bit cleared and contribute 0, exactly as
TFLite's zero-point padding does after the input offset. The accumulators go to the requantiser
(:class:`haneul.rtl.ppu.Requantizer`), whose input stream has exactly the signature of :attr:`DepthwiseUnit.result`.

Kernels with more than ``taps`` taps are computed in *passes*: the weight set holds up to ``passes * taps`` weight
lines, and an output pixel is sent as several consecutive window beats (pass ``p`` multiplies with weight lines
``p * taps .. p * taps + taps - 1``), summed inside the unit; only the final pass produces an output.

:class:`WindowBuffer` turns a stream of *columns* (``kh`` lines of one input column) into windows of ``kh x kw``
lines, keeping the last ``kw`` columns: at stride 1 each output pixel needs one new column (``kh`` line reads)
instead of a whole window (``kh * kw`` reads). :func:`column_schedule` is the loop nest the sequencer runs to
produce those columns (and the reference the tests drive the hardware with). See ``docs/depthwise.md``.
"""

import dataclasses
from math import ceil, log2

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .carry import Row, add_levels, is_ecp5, row_pair
from .commands import DWCONV_KERNEL, DWCONV_SIZE_WIDTH, DwconvArgs
from .config import DatapathConfig
from .pe import mult18x18d, register_copy
from .register_slice import RegisterSlice
from .scratchpad import ReadRequest, ReadResponse
from .sequencer import Queue

__all__ = ["WindowBeat", "WeightBeat", "ColumnBeat", "DepthwiseUnit", "WindowBuffer", "ColumnReader", "Column",
           "column_schedule"]


def _check_count(value, what):
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be a positive integer, not {value!r}")
    if value <= 0:
        raise ValueError(f"{what} must be a positive integer, not {value!r}")


def _copy(m, value, enable, name, platform, *, init=None):
    """A copy of a register that spreads a fan-out (:func:`~haneul.rtl.pe.register_copy`)."""
    return register_copy(m, value, name=name, platform=platform, enable=enable, init=init)


#: Lanes that share one copy of a control register (the weight line select, the pass counter, ...): in the 16 x 16
#: datapath the lanes sit beside their DSP blocks, spread over the die, and one register for all of them is slow.
LANE_GROUP = 4


def _lane_groups(lanes):
    """The groups of :data:`LANE_GROUP` lanes: lane ``l`` is in group ``l // LANE_GROUP``."""
    return range(ceil(lanes / LANE_GROUP))


def _config(config, lanes, default="cols"):
    """The configuration (default ``DatapathConfig()``) and the lane count (default: its ``default`` field)."""
    if config is None:
        config = DatapathConfig()
    elif not isinstance(config, DatapathConfig):
        raise TypeError(f"Configuration must be a DatapathConfig, not {config!r}")
    if lanes is None:
        lanes = getattr(config, default)
    _check_count(lanes, "Lane count")
    return config, lanes


# Stream payloads ------------------------------------------------------------------------------------------------

class WindowBeat(data.StructLayout):
    """Payload of the window stream: the input lines under the kernel for one output pixel (or one pass of it).

    Parameters
    ----------
    config : DatapathConfig
        Element shape (``config.input_shape``).
    lanes : int
        Channels per line.
    taps : int
        Lines per window.

    Members
    -------
    data : ArrayLayout(ArrayLayout(signed(input_width), lanes), taps)
        ``data[t][l]`` is channel ``l`` of the input pixel under tap ``t``. For a ``kh x kw`` kernel tap
        ``t = i * kw + j`` is kernel row ``i``, column ``j`` (the order of TFLite's ``[1, KH, KW, C]`` filter).
    mask : unsigned(taps)
        Bit ``t`` set: tap ``t`` is inside the image. A cleared bit makes the tap contribute 0 whatever ``data[t]``
        and its weight are (zero-point padding without materialised padding lines).
    final : unsigned(1)
        Final (or only) pass of its output pixel: the accumulated sum is output. A pixel of ``P`` passes is ``P``
        consecutive beats, the last with ``final`` set.
    last : unsigned(1)
        Last window of the channel group: the next window uses the next weight set. Set it only with ``final``.
    """

    def __init__(self, config, lanes, taps):
        super().__init__({
            "data":  data.ArrayLayout(data.ArrayLayout(config.input_shape, lanes), taps),
            "mask":  unsigned(taps),
            "final": unsigned(1),
            "last":  unsigned(1),
        })


class WeightBeat(data.StructLayout):
    """Payload of the weight stream: one weight line of a channel group's weight set.

    A weight set is 1 to ``passes * taps`` beats, line 0 first, the last with ``last`` set (the set also closes by
    itself after ``passes * taps`` beats). Lines that a set does not send are zero.

    Parameters
    ----------
    config : DatapathConfig
        Element shape (``config.input_shape``).
    lanes : int
        Channels per line.

    Members
    -------
    data : ArrayLayout(signed(input_width), lanes)
        ``data[l]`` is the weight of channel ``l`` of the group at this line's tap (``filter[0, i, j, c]``).
    zero_point : signed(input_width)
        Zero point of the input tensor (TFLite's ``-input_offset``), subtracted from every element of the windows
        that use this weight set. The value of the set's last beat counts.
    last : unsigned(1)
        Last line of the set.
    """

    def __init__(self, config, lanes):
        super().__init__({
            "data":       data.ArrayLayout(config.input_shape, lanes),
            "zero_point": config.input_shape,
            "last":       unsigned(1),
        })


class ColumnBeat(data.StructLayout):
    """Payload of the column stream of :class:`WindowBuffer`: the ``kh`` input lines of one input column.

    Parameters
    ----------
    config : DatapathConfig
        Element shape (``config.input_shape``).
    lanes : int
        Channels per line.
    kh : int
        Lines per column (kernel height).

    Members
    -------
    data : ArrayLayout(ArrayLayout(signed(input_width), lanes), kh)
        ``data[i]`` is the input pixel under kernel row ``i`` in this column.
    mask : unsigned(kh)
        Bit ``i`` set: line ``i`` is inside the image (cleared: padding; ``data[i]`` is ignored and need not be read).
    start : unsigned(1)
        First column of a row of windows: the ``kw - 1`` older columns in the buffer become padding (mask 0) as this
        column shifts in, so left padding costs no column beats.
    emit : unsigned(1)
        After this column has shifted in, the buffer holds a complete window: output it.
    last : unsigned(1)
        Copied to ``last`` of the emitted window (last window of the channel group).
    """

    def __init__(self, config, lanes, kh):
        super().__init__({
            "data":  data.ArrayLayout(data.ArrayLayout(config.input_shape, lanes), kh),
            "mask":  unsigned(kh),
            "start": unsigned(1),
            "emit":  unsigned(1),
            "last":  unsigned(1),
        })


# The vector unit ------------------------------------------------------------------------------------------------

class DepthwiseUnit(wiring.Component):
    """Depthwise convolution vector unit: ``lanes`` channels x ``taps`` int8 multipliers, int32 accumulation.

    A *channel group* is a weight set on ``weight`` (the kernel of ``lanes`` channels and the input zero point) and
    ``M >= 1`` output pixels on ``window``, the last beat with ``last`` set. Every output pixel yields one beat on
    ``result`` with the ``lanes`` int32 sums (bias and requantisation follow in the requantiser)::

        result[l] = sum(weight_line[p * taps + t][l] * (window_p.data[t][l] - zero_point)
                        for each pass p of the pixel, for t in range(taps) if window_p.mask[t])

    computed exactly (the int32 sum wraps only beyond ``2**31``, as TFLite's int32 accumulator would). The ``n``-th
    beat of a pixel uses weight slice ``p = n`` (beats beyond ``passes`` reuse the last slice).

    Weight sets are double-buffered: the *shadow* set is loaded while the *active* set computes.

    * ``weight.ready`` is high until a whole set is in the shadow registers (a beat with ``last``, or
      ``weight_lines`` beats).
    * Once the last window of a group has been accepted and the next set is complete, the next cycle makes the
      shadow set the active one (the *swap*: both sets share LUT-RAM memories, and the swap flips which half is
      read), and ``weight.ready`` rises again after it.
    * ``window.ready`` is low from the cycle after a group's last window until its successor's set is active, and
      after reset until the first set is active: one idle cycle between groups when the next set is already there.
    * A weight set is read only for a window just accepted (into the stage 1 registers), and a swap takes effect at
      the earliest one cycle after a group's last window, so it never disturbs windows in flight; it depends on
      registers only.

    The pipeline never stalls (there is no clock enable). Results enter an output FIFO of ``fifo_depth = latency +
    1`` entries (``amaranth.lib.fifo.SyncFIFO``, LUT RAM) and ``result`` is its read side. Room is reserved when a
    final window is accepted: ``window.ready`` is low while ``fifo_depth`` results are in flight or waiting, so
    ``window.ready`` and ``weight.ready`` depend on registers only. A cycle without ``window.valid`` is a bubble.

    Timing: a final window accepted in cycle ``t`` is on ``result`` in cycle ``t + latency`` when the FIFO is empty
    (5 for 9 taps of LUT multipliers): stage 1 subtracts the zero point, applies the mask and reads the pass's weights from the active
    set (one LUT-RAM memory per tap and lane holds both sets); stage 2 registers the first one or two levels of each lane's
    adder tree, which sums the partial-product rows of all its taps (``"lut"``: the rows pair up in carry chains that
    also select them, then one adder level) or the products (``"dsp"``); then two levels per stage and the last stage
    at most one level and the pass accumulator, whose sum is written into the FIFO (``"dsp"``: one level per stage,
    the last stage the accumulator only). Throughput: one window beat per cycle within a group
    while ``result.ready`` is high, and one idle cycle between groups when each group has at least as many window
    beats as the next group's set has lines (the next set loads one line per cycle from the cycle after the swap).

    Parameters
    ----------
    config : DatapathConfig, optional
        Input and accumulator widths (``input_width``, ``acc_width``) and the default lane count (``cols``).
    lanes : int, optional
        Channels computed in parallel. Default ``config.cols`` (16).
    taps : int
        Multipliers per lane, i.e. lines per window beat. Default 9 (a 3 x 3 kernel in one pass).
    passes : int
        Passes per output pixel the weight set has room for: kernels up to ``passes * taps`` taps. Default 2
        (18 taps: every depthwise kernel of the MLPerf Tiny models, up to sww01's 15 x 1).
    multiplier : str
        ``"lut"`` (default), since the systolic array takes the DSP blocks: shift-and-add, the rows ``(x if w[i]
        else 0) << i`` of all taps of a lane summed in one tree of two-input adders; for ECP5 the first adders are
        ``CCU2C`` carry chains whose LUTs also select their two rows (:func:`_row_pair`), so a partial product costs
        no LUT of its own. ``"dsp"``: one DSP block per multiplier; for ECP5 a ``MULT18X18D`` instance whose output
        register is the stage 2 register (elsewhere a ``$mul`` cell and a fabric register). Every adder is as wide
        as the largest value it can hold needs.
    lookahead : bool
        Each lane's tap enables (a tap is used when the window's mask has it and the weight set sent its line) are
        flip-flops of the lane's own, loaded a cycle ahead from ``mask_next`` and the next values of the pass
        counter and of the lines sent. Without it one LUT per tap and group of lanes drives the stage 1 registers'
        resets of all lanes of the group (in the 16 x 16 datapath 5.9 ns of routing after 4.1 ns, the worst path of
        session 16's second run). Same behaviour and timing. Default ``False``.

    Members
    -------
    window : In(stream.Signature(WindowBeat(config, lanes, taps)))
        Input windows.
    weight : In(stream.Signature(WeightBeat(config, lanes)))
        Weight lines and the input zero point.
    result : Out(stream.Signature(ArrayLayout(signed(acc_width), lanes)))
        One int32 sum per lane and output pixel.
    window_ready_next : Out(1)
        ``window.ready`` of the next cycle (what its flip-flop loads now), for a window buffer that registers its
        column enables a cycle ahead (:class:`WindowBuffer` with ``lookahead``).
    mask_next : In(taps)
        Only with ``lookahead``: ``window.payload.mask`` of the next cycle (a :class:`WindowBuffer`'s
        ``mask_next``).

    Attributes
    ----------
    config : DatapathConfig
    lanes, taps, passes : int
    multiplier : str
    weight_lines : int
        Lines of one weight set, ``passes * taps``.
    latency : int
        Cycles from accepting a final window to its result, for ``L`` adder levels after stage 2: ``3 + ceil((L -
        1) / 2)`` with LUT multipliers (5 for 9 taps of 8 bits), ``3 + L`` with DSP blocks (7 for 9 taps, 5 for 3).
    fifo_depth : int
        Entries of the output FIFO, ``latency + 1``: enough for one window per cycle while ``result.ready`` is high.
    """

    #: Multiplier implementations: ``"lut"`` (shift-and-add rows in carry chains) or ``"dsp"`` (``$mul`` cells, one
    #: DSP multiplier each).
    MULTIPLIERS = ("lut", "dsp")

    #: Lanes that share one copy of a control register (:data:`LANE_GROUP`).
    LANE_GROUP = LANE_GROUP

    def __init__(self, config=None, *, lanes=None, taps=9, passes=2, multiplier="lut", lookahead=False):
        config, lanes = _config(config, lanes)
        _check_count(taps, "Tap count")
        _check_count(passes, "Pass count")
        if multiplier not in self.MULTIPLIERS:
            raise ValueError(f"Multiplier must be one of {', '.join(map(repr, self.MULTIPLIERS))}, "
                             f"not {multiplier!r}")
        # A product of (x - zero_point), 9 bits, and a weight: at most 2**(2w-1) - 2**(w-1) in magnitude.
        worst = passes * taps * (2 * (1 << (config.input_width - 1)) - 1) * (1 << (config.input_width - 1))
        if worst > (1 << (config.acc_width - 1)) - 1:
            raise ValueError(f"Accumulator width {config.acc_width} cannot hold {passes * taps} products of "
                             f"{config.input_width}-bit inputs (up to {worst})")
        self.config = config
        self.lanes = lanes
        self.taps = taps
        self.passes = passes
        self.multiplier = multiplier
        self.weight_lines = passes * taps
        self.lookahead = bool(lookahead)
        first_levels, levels = self._tree_shape()
        self.latency = 3 + self._stages(levels)
        self.fifo_depth = self.latency + 1
        members = {
            "window": In(stream.Signature(WindowBeat(config, lanes, taps))),
            "weight": In(stream.Signature(WeightBeat(config, lanes))),
            "result": Out(stream.Signature(data.ArrayLayout(config.acc_shape, lanes))),
            "window_ready_next": Out(1),
        }
        if self.lookahead:
            members["mask_next"] = In(taps)
        super().__init__(members)

    def _pairs(self):
        """How the LUT multipliers' partial-product rows pair up in the first adders of a lane's tree: a list of
        ``((tap, bit, negate), (tap, bit))`` (one carry chain each) and ``((tap, bit, negate),)`` (a row alone).

        Row ``(t, i)`` is ``(x[t] if w[t][i] else 0) << i``; the sign row ``i = n - 1`` is subtracted. Each tap's sign
        row pairs with its row ``n - 2``; the rows of the other bits pair across taps at the same shift (so no bit
        passes through), and an odd tap's leftover rows pair with their neighbours."""
        n, taps = self.config.input_width, self.taps
        if n == 1:
            return [((t, 0, True),) for t in range(taps)]
        pairs = [((t, n - 1, True), (t, n - 2)) for t in range(taps)]
        leftover = []
        for i in range(n - 2):
            pairs += [((t, i, False), (t + 1, i)) for t in range(0, taps - 1, 2)]
            if taps % 2:
                leftover.append((taps - 1, i, False))
        pairs += [(leftover[k], leftover[k + 1][:2]) for k in range(0, len(leftover) - 1, 2)]
        if len(leftover) % 2:
            pairs.append((leftover[-1],))
        return pairs

    def _pair_bounds(self):
        """For each entry of :meth:`_pairs`, the largest magnitude of its sum: the rows of one tap share ``x``, so a
        sign row and a positive row never add up."""
        xb = (1 << self.config.input_width) - 1       # |x - zero_point|
        bounds = []
        for pair in self._pairs():
            rows = [xb << i for _, i, *_ in pair]
            bounds.append(max(rows) if len(pair) == 2 and pair[0][0] == pair[1][0] and pair[0][2] else sum(rows))
        return bounds

    def _level_plan(self):
        """``(per_stage, in_last)``: adder levels per pipeline stage after stage 2, and at most how many share the
        last stage with the pass accumulator. LUT multipliers: 2 and 1. DSP blocks: 1 and 0, a register after every
        adder: the products leave the DSP columns, and two adders in one stage were placed 87 tiles apart, 14.5 ns
        (the datapath's worst path, session 14)."""
        return (1, 0) if self.multiplier == "dsp" else (2, 1)

    def _stages(self, levels):
        """Pipeline stages between stage 2 and the last stage for ``levels`` adder levels."""
        per_stage, in_last = self._level_plan()
        return ceil(max(levels - in_last, 0) / per_stage)

    def _tree_shape(self):
        """``(first_levels, levels)``: adder levels of a lane's tree before the stage 2 register and after it."""
        terms = self.taps if self.multiplier == "dsp" else len(self._pairs())
        total = ceil(log2(terms)) if terms > 1 else 0
        first = 0 if self.multiplier == "dsp" else min(1, total)
        return first, total - first

    def _terms(self, m, xs, ws, name, platform):
        """The first terms ``(value, shift)`` of one lane's tree, from the taps' offset inputs ``xs`` and weights
        ``ws``: the products (``"dsp"``), or the pairs of partial-product rows (``"lut"``)."""
        if self.multiplier == "dsp":
            xb = (1 << self.config.input_width) - 1   # |x - zero_point|
            return [(x * w, 0, xb << (self.config.input_width - 1)) for x, w in zip(xs, ws)]
        terms = []
        for k, (pair, bound) in enumerate(zip(self._pairs(), self._pair_bounds())):
            rows = [Row(xs[t], ws[t][i], i, bool(negate) and negate[0]) for t, i, *negate in pair]
            if len(rows) == 1:
                row, = rows
                terms.append((-row.value() if row.negate else row.value(), 0, bound))
            else:
                terms.append(row_pair(m, rows[0], rows[1], bound, f"{name}_p{k}", platform))
        return terms

    def elaborate(self, platform):
        cfg, lanes, taps, passes = self.config, self.lanes, self.taps, self.passes
        lines = self.weight_lines
        m = Module()

        def reg(shape, name, value):
            """A pipeline register loading ``value`` every cycle."""
            r = Signal(shape, name=name)
            m.d.sync += r.eq(value)
            return r

        # Output FIFO and credits: room for a result is reserved when its final window is accepted, so the pipeline
        # never stalls and `window.ready` depends on registers only --------------------------------------------------

        m.submodules.fifo = fifo = SyncFIFO(width=cfg.acc_width * lanes, depth=self.fifo_depth)
        used = Signal(range(self.fifo_depth + 1))    # results reserved: in flight or in the FIFO
        m.d.comb += [
            self.result.valid.eq(fifo.r_rdy),
            self.result.payload.eq(fifo.r_data),
            fifo.r_en.eq(self.result.ready),
        ]

        # Weight sets: shadow (loading) and active (computing) -----------------------------------------------------
        # Both sets live in small LUT-RAM memories, one per tap and lane, of `2 * passes` weights: buffer `b`, pass
        # `p` at address `b * passes + p`. The active set is the buffer a lane's `bank` register names, the shadow
        # set the other one; the swap flips `bank` instead of copying 8 * lanes * lines bits (the copy and its
        # shadow were 2 560 flip-flops at 16 lanes x 10 lines). Everything of a weight set (lines, zero point,
        # which lines were sent) is read only for a window just accepted (stage 1). So the swap may come from the
        # cycle after the last window of the active set's group has been accepted; it is decided by registers
        # only, and the shadow buffer is written only between a swap and the next (never while it is active).

        shadow_zp = Signal(cfg.input_shape)
        # Which lines the set sent: a line it did not send acts as zero, through the window mask (cheaper than
        # clearing the weights).
        shadow_sent = Signal(lines)
        count = Signal(range(lines))             # lines of the shadow set received so far (while not full)
        shadow_full = Signal()
        need_swap = Signal(init=1)               # the active set is used up: the next group's set must come in

        swap = Signal()
        accept = Signal()
        window_ready = Signal()                  # (used != fifo_depth) & ~need_swap, as a flip-flop
        m.d.comb += [
            swap.eq(need_swap & shadow_full),
            self.weight.ready.eq(~shadow_full),
            self.window.ready.eq(window_ready),
            accept.eq(self.window.valid & self.window.ready),
        ]
        w_fire = self.weight.valid & self.weight.ready

        # A window is accepted only without `need_swap`, a weight line only without `shadow_full`, and a swap needs
        # both: no two of the three updates below happen in the same cycle.
        # The swap again one register per lane, for the lane's `bank` and active zero point (one net to all the
        # lanes' active weights was once the worst path): each copy loads the swap of the next cycle, from the
        # next values of `need_swap` and `shadow_full` as the statements below set them.
        next_need = (need_swap & ~swap) | (accept & self.window.payload.last)
        # `window.ready` is a flip-flop, loaded with the next values of its two terms: it is the window buffer's
        # column enable (1 152 flip-flops at 16 lanes), where the compare of `used` after its register was 12.5 ns
        # (session 14, with the LUT multipliers).
        took_final = accept & self.window.payload.final
        gave = self.result.valid & self.result.ready
        next_used = Mux(took_final & ~gave, used + 1, Mux(gave & ~took_final, used - 1, used))
        m.d.comb += self.window_ready_next.eq((next_used != self.fifo_depth) & ~next_need)
        m.d.sync += window_ready.eq(self.window_ready_next)
        next_full = Mux(w_fire, self.weight.payload.last | (count == lines - 1), shadow_full & ~swap)
        lane_swap = [_copy(m, next_need & next_full, Const(1), f"swap_l{lane}", platform, init=0)
                     for lane in range(lanes)]
        bank = [Signal(name=f"bank_l{lane}") for lane in range(lanes)]
        for lane in range(lanes):
            with m.If(lane_swap[lane]):
                m.d.sync += bank[lane].eq(~bank[lane])
        with m.If(swap):
            m.d.sync += [
                shadow_full.eq(0),
                count.eq(0),
                need_swap.eq(0),
            ]
        with m.If(accept & self.window.payload.last):
            m.d.sync += need_swap.eq(1)
        # Which shadow line the next weight beat goes to, one-hot (line 0 after reset and after a swap), and one copy
        # of it per group of lanes for their write enables: a decode of `count` driving the enables of a whole line
        # was once the next worst path.
        line_sel = Signal(lines, init=1)
        next_sel = Mux(swap, 1, Mux(w_fire, line_sel.rotate_left(1), line_sel))
        m.d.sync += line_sel.eq(next_sel)
        groups = _lane_groups(lanes)
        group_sel = [_copy(m, next_sel, Const(1), f"line_sel_g{g}", platform, init=1) for g in groups]
        # and `shadow_full` too, so that each enable is one LUT from registers and `weight.valid`
        group_full = [_copy(m, next_full, Const(1), f"shadow_full_g{g}", platform, init=0) for g in groups]
        with m.If(w_fire):
            for line in range(lines):
                with m.If(count == line):
                    m.d.sync += shadow_sent[line].eq(1)
                with m.Elif(count == 0):          # the first line of a new set
                    m.d.sync += shadow_sent[line].eq(0)
            m.d.sync += [
                shadow_zp.eq(self.weight.payload.zero_point),
                shadow_full.eq(self.weight.payload.last | (count == lines - 1)),
                count.eq(count + 1),
            ]

        # Pass counter: the n-th beat of an output pixel uses weight lines n * taps ... -------------------------------

        # One counter per group of lanes, and a copy of `active_sent` per group too: each group's window masks and
        # weight read addresses come from registers of its own (in the 16 x 16 datapath the lanes sit beside their
        # DSP blocks, spread over the die; one counter and one `use` net per tap for all lanes were 432 endpoints up
        # to 14.1 ns, the weight reads 177 up to 13.6 ns, in session 13's routed run).
        def next_step(step):
            return Mux(self.window.payload.final, 0, Mux(step != passes - 1, step + 1, step))

        group_step = [register_copy(m, next_step, name=f"step_g{g}", platform=platform, enable=accept, init=0,
                                    shape=range(passes)) if passes > 1 else Const(0, 1)
                      for g in groups]
        group_sent = [_copy(m, shadow_sent, swap, f"active_sent_g{g}", platform, init=0) for g in groups]

        def tap_sent(t, step, sent):
            """Whether the weight set sent the line of tap ``t`` in pass ``step``."""
            bit = sent[t]
            for p in range(1, passes):
                bit = Mux(step == p, sent[p * taps + t], bit)
            return bit

        if self.lookahead:
            # Each lane's tap enables, a cycle ahead: the next mask, pass and lines sent, as their registers load
            # them (the groups' copies all hold the same values).
            step_next = Mux(accept, next_step(group_step[0]), group_step[0]) if passes > 1 else 0
            sent_next = Mux(swap, shadow_sent, group_sent[0])
            use_next = [self.mask_next[t] & tap_sent(t, step_next, sent_next) for t in range(taps)]
            lane_use = [[register_copy(m, use_next[t], name=f"use_t{t}_l{lane}", platform=platform, init=0)
                         for lane in range(lanes)] for t in range(taps)]

        # Stage 1: the window minus the zero point, masked, and the weight slice of this pass, registered together
        # (so that the multipliers read registers only) ----------------------------------------------------------------

        # The active zero point, one copy per lane: a single register would drive the subtractors of all lanes.
        active_zp = [_copy(m, shadow_zp, lane_swap[lane], f"active_zp_l{lane}", platform) for lane in range(lanes)]
        x1 = []
        for t in range(taps):
            if self.lookahead:
                use = lane_use[t]
            else:
                group_use = [Signal(name=f"use_t{t}_g{g}") for g in groups]
                for g in groups:
                    m.d.comb += group_use[g].eq(self.window.payload.mask[t] & tap_sent(t, group_step[g],
                                                                                        group_sent[g]))
                use = [group_use[lane // self.LANE_GROUP] for lane in range(lanes)]
            x1.append([reg(signed(cfg.input_width + 1), f"x_t{t}_l{lane}",
                           Mux(use[lane], self.window.payload.data[t][lane] - active_zp[lane], 0))
                       for lane in range(lanes)])
        # The weights of this pass, read from the active buffer and registered with the window (stage 1). Each
        # memory is written with line `p * taps + t` of the shadow set, at the shadow buffer's address for pass `p`.
        weights = []
        for t in range(taps):
            # Per group of lanes: whether the line being written is one of tap t's, and which pass it is for.
            write, write_pass = [], []
            for g in groups:
                sel = [group_sel[g][p * taps + t] for p in range(passes)]      # one-hot while it writes
                index = 0
                for p, bit in enumerate(sel):
                    index = index | Mux(bit, p, 0)
                write.append(self.weight.valid & ~group_full[g] & Cat(*sel).any())
                write_pass.append(index)
            row = []
            for lane in range(lanes):
                g = lane // self.LANE_GROUP
                memory = m.submodules[f"w_t{t}_l{lane}"] = Memory(shape=cfg.input_shape, depth=2 * passes, init=[])
                wr, rd = memory.write_port(), memory.read_port(domain="comb")
                m.d.comb += [
                    wr.en.eq(write[g]),
                    wr.addr.eq(Mux(bank[lane], write_pass[g], passes + write_pass[g])),
                    wr.data.eq(self.weight.payload.data[lane]),
                    rd.addr.eq(Mux(bank[lane], passes + group_step[g], group_step[g])),
                ]
                row.append(reg(cfg.input_shape, f"w_t{t}_l{lane}", rd.data))
            weights.append(row)

        # The control bits travel with the data (with a reset, so that no beat appears from nowhere).
        valid, final = Signal(name="valid_s1"), Signal(name="final_s1")
        m.d.sync += [
            valid.eq(accept),
            final.eq(self.window.payload.final),
        ]

        def delay(signals, stage):
            out = []
            for value in signals:
                r = Signal.like(value, name=f"{value.name.rsplit('_', 1)[0]}_s{stage}")
                m.d.sync += r.eq(value)
                out.append(r)
            return out

        # Stage 2: the products' partial-product rows, summed with the other taps' in one tree per lane -----------------

        first_levels, levels = self._tree_shape()
        sums = [self._terms(m, [x1[t][lane] for t in range(taps)], [weights[t][lane] for t in range(taps)],
                            f"l{lane}", platform) for lane in range(lanes)]

        def register(terms, name):
            return [(reg(value.shape(), f"{name}_{k}", value), shift, bound)
                    for k, (value, shift, bound) in enumerate(terms)]

        if self.multiplier == "dsp" and is_ecp5(platform) and not getattr(platform, "simulated", False):
            # The products registered inside the DSP blocks (first_levels is 0 for "dsp").
            product = signed(2 * cfg.input_width + 1)
            sums = [[(mult18x18d(m, x1[t][lane], weights[t][lane], name=f"mul_t{t}_l{lane}")[:product.width]
                      .as_signed(), 0, bound) for t, (_, _, bound) in enumerate(terms)]
                    for lane, terms in enumerate(sums)]
        else:
            sums = [register(add_levels(m, terms, first_levels, f"a_l{lane}"), f"s2_l{lane}")
                    for lane, terms in enumerate(sums)]
        before = (valid, final)                  # the control bits one stage before the accumulator's
        valid, final = delay((valid, final), 2)
        # Then two levels per stage; the last level (if any) shares the final stage with the pass accumulator.
        per_stage, _ = self._level_plan()
        for stage in range(self.latency - 3):
            sums = [register(add_levels(m, terms, min(per_stage, levels - per_stage * stage), f"b{stage}_l{lane}"),
                             f"s{stage + 3}_l{lane}")
                    for lane, terms in enumerate(sums)]
            before = (valid, final)
            valid, final = delay((valid, final), 3 + stage)
        sums = [add_levels(m, terms, max(levels - per_stage * (self.latency - 3), 0), f"c_l{lane}")
                for lane, terms in enumerate(sums)]

        # Pass accumulator; a final pass writes its sum into the FIFO and clears it ---------------------------------

        acc = Signal(data.ArrayLayout(cfg.acc_shape, lanes))
        total = Signal(data.ArrayLayout(cfg.acc_shape, lanes))
        for lane in range(lanes):
            (value, shift, _), = sums[lane]
            m.d.comb += total[lane].eq((acc[lane] + (value << shift))[:cfg.acc_width])
        # The accumulators' clock enable and clear, one copy per lane (one `valid` and one `final` register for all
        # 512 accumulator bits was the next worst path, 7.7 ns of routing).
        for lane in range(lanes):
            lane_valid, lane_final = (_copy(m, bit, Const(1), f"{name}_acc_l{lane}", platform, init=0)
                                      for bit, name in zip(before, ("valid", "final")))
            with m.If(lane_valid):
                m.d.sync += acc[lane].eq(Mux(lane_final, 0, total[lane]))
        m.d.comb += [
            fifo.w_data.eq(total),
            fifo.w_en.eq(valid & final),
        ]

        m.d.sync += used.eq(next_used)
        return m


# Sliding-window buffer --------------------------------------------------------------------------------------------

class WindowBuffer(wiring.Component):
    """Sliding window of ``kh x kw`` input lines, built from a stream of ``kh``-line columns.

    The buffer holds the last ``kw`` columns. A column beat shifts in as the newest (rightmost) column; with
    ``start`` the older ``kw - 1`` columns become padding first; with ``emit`` the ``kh x kw`` window the buffer then
    holds is output on ``window``, as tap ``t = i * kw + j`` (kernel row ``i``, column ``j``, ``j = 0`` the oldest
    column). Along a row of output pixels at stride ``s`` each window needs only ``s`` new columns, so a 3 x 3
    stride-1 window costs 3 line reads instead of 9 (see :func:`column_schedule`).

    The window is read straight from the column registers (no copy): ``column.ready = ~window.valid |
    window.ready``, so a column shifts in only when the previous window has been taken. A column accepted in cycle
    ``t`` with ``emit`` makes ``window`` valid from cycle ``t + 1``; one column per cycle.

    ``window`` has the layout :class:`WindowBeat` ``(config, lanes, taps)``, so it connects to a
    :class:`DepthwiseUnit` of the same ``taps`` with :func:`wiring.connect`. With ``taps = kh * kw`` (the default)
    a window is one beat with ``final`` set. With fewer, it is ``passes = ceil(kh * kw / taps)`` beats on
    consecutive handshakes, beat ``p`` carrying window taps ``p * taps .. p * taps + taps - 1`` (taps past the
    window masked off) and the last one ``final`` (and ``last`` if the window's column had it): a unit of ``taps``
    multipliers per lane then computes a window in ``passes`` cycles. The next column shifts in with the last beat.

    Parameters
    ----------
    config : DatapathConfig, optional
        Element shape and the default lane count (``cols``).
    lanes : int, optional
        Channels per line. Default ``config.cols``.
    kh, kw : int
        Window height (lines per column) and width (columns). Default 3 x 3.
    taps : int, optional
        Lines per window beat, at most ``kh * kw`` (the default).
    lookahead : bool
        The column registers' clock enables are flip-flops, one copy per lane, loaded with the column handshake of
        the next cycle, which the buffer computes from ``column_valid_next`` and ``window_ready_next`` (the
        producer's and the consumer's registers' next values: a :class:`~haneul.rtl.register_slice.RegisterSlice`'s
        ``o_valid_next``, a :class:`DepthwiseUnit`'s ``window_ready_next``), and ``column.ready`` is a flip-flop
        loaded with its next value too. The handshake, behaviour and timing
        are the same; what changes is that the enable of a lane's ``kh * kw * 8`` column bits is one flip-flop
        beside them, not a LUT of the handshake that drives all lanes (in the 16 x 16 datapath that LUT's net was
        6.3 ns of routing, the worst path of session 16's first run). Default ``False``.

    Members
    -------
    column : In(stream.Signature(ColumnBeat(config, lanes, kh)))
    window : Out(stream.Signature(WindowBeat(config, lanes, taps)))
    column_valid_next : In(1)
        Only with ``lookahead``: ``column.valid`` of the next cycle.
    window_ready_next : In(1)
        Only with ``lookahead``: ``window.ready`` of the next cycle.
    mask_next : Out(taps)
        Only with ``lookahead``: ``window.payload.mask`` of the next cycle, for a :class:`DepthwiseUnit` with
        ``lookahead`` (its tap enables, registered a cycle ahead).

    Attributes
    ----------
    passes : int
        Beats per window, ``ceil(kh * kw / taps)``.
    """

    def __init__(self, config=None, *, lanes=None, kh=3, kw=3, taps=None, lookahead=False):
        config, lanes = _config(config, lanes)
        _check_count(kh, "Window height")
        _check_count(kw, "Window width")
        if taps is None:
            taps = kh * kw
        _check_count(taps, "Tap count")
        if taps > kh * kw:
            raise ValueError(f"Tap count must be at most the window's {kh * kw} taps, not {taps!r}")
        self.config = config
        self.lanes = lanes
        self.kh = kh
        self.kw = kw
        self.taps = taps
        self.passes = ceil(kh * kw / taps)
        self.latency = 1
        self.lookahead = bool(lookahead)
        members = {
            "column": In(stream.Signature(ColumnBeat(config, lanes, kh))),
            "window": Out(stream.Signature(WindowBeat(config, lanes, taps))),
        }
        if self.lookahead:
            members.update(column_valid_next=In(1), window_ready_next=In(1), mask_next=Out(taps))
        super().__init__(members)

    def elaborate(self, platform):
        kh, kw = self.kh, self.kw
        m = Module()
        col_layout = data.ArrayLayout(data.ArrayLayout(self.config.input_shape, self.lanes), kh)
        cols = [Signal(col_layout, name=f"col{j}") for j in range(kw)]
        masks = [Signal(kh, name=f"mask{j}") for j in range(kw)]
        out_valid = Signal()
        out_last = Signal()

        # The pass being sent (several beats per window): the window stays in the column registers until its last
        # beat is taken. The data multiplexers of each group of lanes read a copy of the pass counter of their own
        # (in the 16 x 16 datapath the lanes sit beside their DSP blocks, spread over the die: one counter for all
        # of them was 16.2 ns of routing from lane 13, the datapath's worst path in session 13).
        passes = self.passes
        groups = _lane_groups(self.lanes)
        if passes > 1:
            fire = self.window.valid & self.window.ready
            pass_ = Signal(range(passes))
            last_pass = pass_ == passes - 1
            with m.If(fire):
                m.d.sync += pass_.eq(Mux(last_pass, 0, pass_ + 1))
            group_pass = [register_copy(m, lambda r: Mux(r == passes - 1, 0, r + 1), name=f"pass_g{g}",
                                        platform=platform, enable=fire, init=0, shape=pass_.shape())
                          for g in groups]
        else:
            pass_, last_pass = 0, 1
            group_pass = [0 for g in groups]
        done = self.window.ready & last_pass            # the window's last beat is taken (when valid)

        beat = self.column.payload
        column_ready = Signal(init=1)                   # with lookahead, `column.ready` from a flip-flop
        if self.lookahead:
            m.d.comb += self.column.ready.eq(column_ready)
        else:
            m.d.comb += self.column.ready.eq(~self.window.valid | done)
        fire = self.column.valid & self.column.ready
        next_masks = [Mux(fire, Mux(beat.start, 0, masks[j + 1]), masks[j]) for j in range(kw - 1)]
        next_masks.append(Mux(fire, beat.mask, masks[kw - 1]))
        m.d.sync += [masks[j].eq(next_masks[j]) for j in range(kw)]
        with m.If(fire):
            m.d.sync += [
                out_valid.eq(beat.emit),
                out_last.eq(beat.last),
            ]
        with m.Elif(done):
            m.d.sync += out_valid.eq(0)
        # The column registers, per lane: shifted with `fire`, or with a lane's copy of it registered a cycle ahead.
        if self.lookahead:
            # Every term's next value, as the statements above and the producer's and consumer's registers load it.
            fire_w = self.window.valid & self.window.ready
            next_pass = Mux(fire_w, Mux(last_pass, 0, pass_ + 1), pass_) if passes > 1 else 0
            next_out_valid = Mux(fire, beat.emit, Mux(done, 0, out_valid))
            next_last = (next_pass == passes - 1) if passes > 1 else 1
            next_ready = ~next_out_valid | (self.window_ready_next & next_last)
            next_fire = self.column_valid_next & next_ready
            # `column.ready` itself is that flip-flop: the producer's slice sees no logic of the buffer's (the
            # pass counter and the unit's `ready` into the slice's skid flag, 12.0 ns at 16 x 16, session 16).
            m.d.sync += column_ready.eq(next_ready)
            shift = [register_copy(m, next_fire, name=f"shift_l{lane}", platform=platform, init=0)
                     for lane in range(self.lanes)]
        else:
            shift = [fire] * self.lanes
        for lane in range(self.lanes):
            with m.If(shift[lane]):
                for i in range(kh):
                    for j in range(kw - 1):
                        m.d.sync += cols[j][i][lane].eq(cols[j + 1][i][lane])
                    m.d.sync += cols[kw - 1][i][lane].eq(beat.data[i][lane])

        # Window tap t = i * kw + j is kernel row i, column j; beat p carries taps p * taps + (0 .. taps - 1).
        window_data = [cols[t % kw][t // kw] for t in range(kh * kw)]
        window_mask = [masks[t % kw][t // kw] for t in range(kh * kw)]

        def by_pass(values, select):
            return Array(values)[select] if passes > 1 else values[0]

        next_window_mask = [next_masks[t % kw][t // kw] for t in range(kh * kw)]
        for t in range(self.taps):
            window_taps = [p * self.taps + t for p in range(passes)]
            for lane in range(self.lanes):
                data_by_pass = [window_data[w][lane] if w < kh * kw else 0 for w in window_taps]
                m.d.comb += self.window.payload.data[t][lane].eq(
                    by_pass(data_by_pass, group_pass[lane // LANE_GROUP]))
            mask_by_pass = [window_mask[w] if w < kh * kw else 0 for w in window_taps]
            m.d.comb += self.window.payload.mask[t].eq(by_pass(mask_by_pass, pass_))
            if self.lookahead:
                m.d.comb += self.mask_next[t].eq(
                    by_pass([next_window_mask[w] if w < kh * kw else 0 for w in window_taps], next_pass))
        m.d.comb += [
            self.window.valid.eq(out_valid),
            self.window.payload.final.eq(last_pass),
            self.window.payload.last.eq(out_last & last_pass),
        ]
        return m


# The DWCONV command's address generator and column assembler -----------------------------------------------------

class _ColumnEntry(data.StructLayout):
    """A column the address generator has requested, as the assembler needs it: which lines come (``mask``; kernel
    rows 0 and 2 on port ``a``, row 1 on port ``b``) and the :class:`ColumnBeat` flags."""

    def __init__(self):
        super().__init__({
            "mask":  unsigned(DWCONV_KERNEL),
            "start": unsigned(1),
            "emit":  unsigned(1),
            "last":  unsigned(1),
        })


class ColumnReader(wiring.Component):
    """Runs one ``DWCONV`` command: reads its weight lines and input columns from two scratchpad read ports and
    hands them to a :class:`DepthwiseUnit` (``weight``) and a 3 x 3 :class:`WindowBuffer` (``column``).

    A run is the command's :class:`~haneul.rtl.commands.DwconvArgs`. The *address generator* first requests the 9
    weight lines on port ``a``, then walks :func:`column_schedule` for the padded tile: for every output row the
    three input rows ``oy * stride - pad_top + i`` are fixed and the columns ``0, 1, ...`` are pushed left to right
    (``start`` on the first, ``emit`` where a window ends, ``last`` on the run's final window). Of a column's lines
    inside the tile, kernel rows 0 and 2 are requested on port ``a`` and row 1 on port ``b``: rows 0 and 1 in one
    cycle, row 2 in the next, so a column of 3 lines takes 2 cycles and a column of 1 or 2 lines (or a padding
    column right of the tile, which reads nothing) one. Lines in the padding are not read; their mask bit is 0.

    The *column assembler* takes the responses in request order: the first 9 of port ``a`` go to ``weight`` (with the
    run's zero point, ``last`` on the ninth), then, for each requested column (a small queue of its mask and flags),
    the lines of its rows, which leave as one ``ColumnBeat`` (the row 2 line straight from the port). Both ports'
    responses may be stalled and come late: everything goes by handshakes.

    Parameters
    ----------
    config : DatapathConfig
        Address width (``spad_addr_width``) and element shape.
    lanes : int, optional
        Elements per scratchpad line (and channels of the unit). Default ``config.rows``.

    Members
    -------
    run : In(stream.Signature(DwconvArgs(config)))
        The ``DWCONV`` command; taken only while the reader is idle (``~busy``).
    req_a, req_b : Out(stream.Signature(ReadRequest(spad_addr_width)))
        Read requests, to two scratchpad read ports.
    resp_a, resp_b : In(stream.Signature(ReadResponse(config, lanes)))
        Their responses.
    weight : Out(stream.Signature(WeightBeat(config, lanes)))
        The run's 9 weight lines, to :attr:`DepthwiseUnit.weight`.
    column : Out(stream.Signature(ColumnBeat(config, lanes, 3)))
        Columns, to :attr:`WindowBuffer.column`.
    busy : Out(1)
        A run is in progress: not all of its columns have left on ``column``.
    """

    #: Entries of the queue of requested columns (the address generator runs ahead of the responses).
    QUEUE_DEPTH = 4

    def __init__(self, config=None, *, lanes=None):
        config, lanes = _config(config, lanes, "rows")
        self.config = config
        self.lanes = lanes
        aw = config.spad_addr_width
        super().__init__({
            "run":    In(stream.Signature(DwconvArgs(config))),
            "req_a":  Out(stream.Signature(ReadRequest(aw))),
            "req_b":  Out(stream.Signature(ReadRequest(aw))),
            "resp_a": In(stream.Signature(ReadResponse(config, lanes))),
            "resp_b": In(stream.Signature(ReadResponse(config, lanes))),
            "weight": Out(stream.Signature(WeightBeat(config, lanes))),
            "column": Out(stream.Signature(ColumnBeat(config, lanes, DWCONV_KERNEL))),
            "busy":   Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        k = DWCONV_KERNEL
        taps = k * k
        aw = self.config.spad_addr_width
        # The column assembler decides on the head's mask: the queue's output comes from registers.
        m.submodules.columns = columns = Queue(_ColumnEntry(), self.QUEUE_DEPTH, buffered=True)

        args = Signal(DwconvArgs(self.config))
        running = Signal()                       # from the run's acceptance to its last column
        m.d.comb += [
            self.run.ready.eq(~running),
            self.busy.eq(running),
        ]
        take_run = self.run.valid & self.run.ready

        # Address generator ------------------------------------------------------------------------------------------

        generating = Signal()
        loading = Signal()                       # requesting weight lines
        weight_line = Signal(range(taps))
        next_top = Signal(signed(DWCONV_SIZE_WIDTH + 2))  # input row under kernel row 0 in the next output row
        top_addr = Signal(aw)                    # its line address act_addr + top * width (modulo)
        col = Signal(DWCONV_SIZE_WIDTH + 1)       # input column being pushed
        second = Signal()                        # the column's second cycle (kernel row 2)
        stride = Signal(2)
        m.d.comb += stride.eq(Mux(args.stride2, 2, 1))

        width = args.width
        # The row and column tests are flip-flops, loaded with the tests of the next `top` and `col` whenever those
        # change (their comparisons are carry chains; the step's decisions then start at registers). These two give
        # them from a run's arguments, when it is taken.
        def row_tests(a, top_value):
            """(kernel rows inside the image, the last row of windows) with ``top`` = ``top_value``."""
            inside = Cat(*((top_value + i >= 0) & (top_value + i < a.height) for i in range(k)))
            return inside, top_value + Mux(a.stride2, 2, 1) + k > a.height + a.pad_bottom

        def col_tests(a, col_value):
            """(right of the image, a window ends here, the row's last window ends here) with ``col`` = ``col_value``:
            a window ends in column ox * stride - pad_left + 2."""
            ends = (col_value + a.pad_left >= k - 1) & (~a.stride2 | (col_value[0] == a.pad_left))
            return (col_value >= a.width, ends,
                    ends & (col_value + Mux(a.stride2, 2, 1) >= a.width + a.pad_right))

        in_rows = Signal(k)
        last_row = Signal()
        padding_col = Signal()
        emit = Signal()
        row_end = Signal()
        mask = Signal(k)
        m.d.comb += mask.eq(Mux(padding_col, 0, in_rows))

        # During a run the tests of the next row and the next column are each one comparison of a counter with a
        # register: the bounds are the run's constants, computed when it is taken (the comparisons of `top +
        # stride + i` and `col + 1 + ...` with the arguments were adders and comparisons in series, 33 logic steps
        # and 12.6 ns at 16 x 16). `next_top` is `top + stride`, kept ahead; a row's first column tests are a
        # register too.
        bound = signed(DWCONV_SIZE_WIDTH + 4)
        row_high = [Signal(bound, name=f"row_high{i}") for i in range(k)]    # row i inside: next_top < height - i
        last_bound = Signal(bound)               # the last row: next_top > height + pad_bottom - k - stride
        width_bound = Signal(bound)              # padding: col >= width - 1
        ends_bound = Signal(bound)               # a window ends: col >= k - 2 - pad_left
        row_end_bound = Signal(bound)            # the row's last window: col >= width + pad_right - 1 - stride
        first_col = Signal(3)                    # the tests of column 0

        def next_row_tests():
            inside = Cat(*((next_top >= -i) & (next_top < row_high[i]) for i in range(k)))
            return Cat(in_rows, last_row).eq(Cat(inside, next_top > last_bound))

        def next_col_tests():
            ends = (col >= ends_bound) & (~args.stride2 | (~col[0] == args.pad_left))
            return Cat(padding_col, emit, row_end).eq(Cat(col >= width_bound, ends, ends & (col >= row_end_bound)))

        col_addr = Signal(aw)
        m.d.comb += col_addr.eq(top_addr + col)
        gen_valid = Signal()
        need = Signal(3)                          # the step needs: port a, port b, a queue entry
        m.d.comb += [
            gen_valid.eq(loading | generating),
            need[0].eq(loading | Mux(second, mask[2], mask[0])),
            need[1].eq(generating & ~second & mask[1]),
            need[2].eq(generating & ~second),
        ]
        # The next step goes into a register slice, and the requests leave from it: their `valid` (which the
        # scratchpad's arbitration of all ports depends on) comes from flip-flops, not from the generator's row and
        # column comparisons, and the generator advances whenever the slice's input is ready, a flip-flop: the
        # ports' `ready` stop at the slice (through the step into the row registers' enables was 11.6 ns at
        # 16 x 16). A step a cycle, as before.
        m.submodules.steps = steps = RegisterSlice(data.StructLayout({
            "need": 3, "addr_a": aw, "addr_b": aw, "entry": _ColumnEntry()}))
        s_step = steps.o.payload
        m.d.comb += [
            self.req_a.payload.addr.eq(s_step.addr_a),
            self.req_b.payload.addr.eq(s_step.addr_b),
            columns.i.payload.eq(s_step.entry),
        ]
        # One step: the requests and the queue entry it needs, each offered until taken (a fork).
        sent = [Signal(name=f"step_sent_{n}") for n in "abq"]
        outs = [self.req_a, self.req_b, columns.i]
        step = Signal()
        load = Signal()
        for i, (port, was_sent) in enumerate(zip(outs, sent)):
            m.d.comb += port.valid.eq(steps.o.valid & s_step.need[i] & ~was_sent)
        m.d.comb += [
            step.eq(steps.o.valid & Cat(*(~s_step.need[i] | was_sent | port.ready
                                          for i, (port, was_sent) in enumerate(zip(outs, sent)))).all()),
            steps.o.ready.eq(step),
            load.eq(steps.i.ready),
        ]
        with m.If(step):
            m.d.sync += [s.eq(0) for s in sent]
        with m.Else():
            for port, was_sent in zip(outs, sent):
                with m.If(port.valid & port.ready):
                    m.d.sync += was_sent.eq(1)
        m.d.comb += [
            steps.i.valid.eq(gen_valid),
            steps.i.payload.need.eq(need),
            steps.i.payload.addr_a.eq(Mux(loading, args.weight_addr + weight_line,
                                          col_addr + Mux(second, width << 1, 0))),
            steps.i.payload.addr_b.eq(col_addr + width),
            steps.i.payload.entry.mask.eq(mask),
            steps.i.payload.entry.start.eq(col == 0),
            steps.i.payload.entry.emit.eq(emit),
            steps.i.payload.entry.last.eq(row_end & last_row),
        ]
        advance = Signal()
        m.d.comb += advance.eq(load & gen_valid)

        with m.If(advance & loading):
            m.d.sync += weight_line.eq(weight_line + 1)
            with m.If(weight_line == taps - 1):
                m.d.sync += [loading.eq(0), generating.eq(1)]
        with m.If(advance & generating):
            with m.If(~second & mask[2]):
                m.d.sync += second.eq(1)
            with m.Else():
                m.d.sync += [second.eq(0), col.eq(col + 1)]
                with m.If(row_end):
                    m.d.sync += [
                        col.eq(0),
                        next_top.eq(next_top + stride),
                        top_addr.eq(top_addr + (width << args.stride2)),
                        next_row_tests(),
                        Cat(padding_col, emit, row_end).eq(first_col),
                    ]
                    with m.If(last_row):
                        m.d.sync += generating.eq(0)
                with m.Else():
                    m.d.sync += next_col_tests()
        with m.If(take_run):
            p = self.run.payload
            m.d.sync += [
                args.eq(p),
                running.eq(1),
                loading.eq(1),
                weight_line.eq(0),
                next_top.eq(Mux(p.stride2, 2, 1) - p.pad_top),
                top_addr.eq(p.act_addr - Mux(p.pad_top, p.width, 0)),
                col.eq(0),
                second.eq(0),
                Cat(in_rows, last_row).eq(Cat(*row_tests(p, -p.pad_top))),
                Cat(padding_col, emit, row_end).eq(Cat(*col_tests(p, Const(0, len(col))))),
                first_col.eq(Cat(*col_tests(p, Const(0, len(col))))),
                last_bound.eq(p.height + p.pad_bottom - k - Mux(p.stride2, 2, 1)),
                width_bound.eq(p.width - 1),
                ends_bound.eq(k - 2 - p.pad_left),
                row_end_bound.eq(p.width + p.pad_right - 1 - Mux(p.stride2, 2, 1)),
                *(high.eq(p.height - i) for i, high in enumerate(row_high)),
            ]

        # Column assembler ----------------------------------------------------------------------------------------------

        weights_in = Signal(range(taps + 1))      # weight lines forwarded so far in this run
        held = [Signal(data.ArrayLayout(self.config.input_shape, self.lanes), name=f"held{i}") for i in range(2)]
        phase2 = Signal()                          # rows 0 and 1 of the head column are held; row 2 comes on a
        phase2_next = Signal()
        head = columns.o.payload
        # The responses enter through register slices: the lines reach the held registers and the engine's groups,
        # spread over the die, from flip-flops, not from the scratchpad's response queues (LUT RAM read, 11.7 ns at
        # 16 x 16), and the queues' `ready` is a flip-flop. One slice per group of lanes (LANE_GROUP), in lockstep
        # (the same handshakes; slice 0 speaks for all): the assembler's `ready` then enables a group's registers
        # through a multiplexer of the group's own (one enable for a whole line: 94 endpoints up to 11.6 ns). The
        # slices alternate two entries (`ping_pong`), so the assembler's `ready` reaches no payload enable.
        def sliced(port, name):
            out = stream.Signature(ReadResponse(self.config, self.lanes)).flip().create()
            slices = []
            for first in range(0, self.lanes, LANE_GROUP):
                lanes = range(first, min(first + LANE_GROUP, self.lanes))
                slice_ = RegisterSlice(ReadResponse(self.config, len(lanes)), ping_pong=True)
                m.submodules[f"{name}_slice_g{first // LANE_GROUP}"] = slice_
                slices.append(slice_)
                m.d.comb += [
                    slice_.i.valid.eq(port.valid),
                    slice_.i.payload.last.eq(port.payload.last),
                    slice_.o.ready.eq(out.ready),
                ]
                for k, lane in enumerate(lanes):
                    m.d.comb += [
                        slice_.i.payload.data[k].eq(port.payload.data[lane]),
                        out.payload.data[lane].eq(slice_.o.payload.data[k]),
                    ]
            m.d.comb += [
                port.ready.eq(slices[0].i.ready),
                out.valid.eq(slices[0].o.valid),
                out.payload.last.eq(slices[0].o.payload.last),
            ]
            return out

        a, b = sliced(self.resp_a, "resp_a"), sliced(self.resp_b, "resp_b")
        m.d.comb += phase2_next.eq(phase2)
        m.d.sync += phase2.eq(phase2_next)
        # The held lines' multiplexers and enables of each group of lanes (LANE_GROUP, as the datapath's depthwise
        # engine groups them) have a copy of `phase2` of their own: one register for all lanes was 10.5 ns of
        # routing at 16 x 16, on the way to the engine's groups spread over the die.
        for first in range(0, self.lanes, LANE_GROUP):
            copy = _copy(m, phase2_next, None, f"phase2_g{first // LANE_GROUP}", platform, init=0)
            for lane in range(first, min(first + LANE_GROUP, self.lanes)):
                m.d.comb += [
                    self.column.payload.data[0][lane].eq(Mux(copy, held[0][lane], a.payload.data[lane])),
                    self.column.payload.data[1][lane].eq(Mux(copy, held[1][lane], b.payload.data[lane])),
                ]
                # Rows 0 and 1 are held from the cycle they come in (`have`, with `phase2` set then) until row 2
                # has left with them: the registers load whenever `phase2` is low, so their clock enable is that
                # one flip-flop, not the responses' and the column queue's handshakes (18.5 ns in session 13's
                # routed run).
                with m.If(~copy):
                    m.d.sync += [held[0][lane].eq(a.payload.data[lane]), held[1][lane].eq(b.payload.data[lane])]
        m.d.comb += [
            self.weight.payload.data.eq(a.payload.data),
            self.weight.payload.zero_point.eq(args.zero_point),
            self.weight.payload.last.eq(weights_in == taps - 1),
            self.column.payload.data[2].eq(a.payload.data),
            self.column.payload.mask.eq(head.mask),
            self.column.payload.start.eq(head.start),
            self.column.payload.emit.eq(head.emit),
            self.column.payload.last.eq(head.last),
        ]
        with m.If(running & (weights_in != taps)):
            m.d.comb += [
                self.weight.valid.eq(a.valid),
                a.ready.eq(self.weight.ready),
            ]
            with m.If(self.weight.valid & self.weight.ready):
                m.d.sync += weights_in.eq(weights_in + 1)
        with m.Elif(columns.o.valid & phase2):
            m.d.comb += [
                self.column.valid.eq(a.valid),
                a.ready.eq(self.column.ready),
                columns.o.ready.eq(self.column.valid & self.column.ready),
            ]
            with m.If(columns.o.ready):
                m.d.comb += phase2_next.eq(0)
        with m.Elif(columns.o.valid):
            have = Signal()
            m.d.comb += have.eq((~head.mask[0] | a.valid) & (~head.mask[1] | b.valid))
            with m.If(head.mask[2]):
                m.d.comb += [
                    a.ready.eq(have & head.mask[0]),
                    b.ready.eq(have & head.mask[1]),
                ]
                with m.If(have):
                    m.d.comb += phase2_next.eq(1)
            with m.Else():
                m.d.comb += [
                    self.column.valid.eq(have),
                    a.ready.eq(self.column.ready & have & head.mask[0]),
                    b.ready.eq(self.column.ready & have & head.mask[1]),
                    columns.o.ready.eq(self.column.valid & self.column.ready),
                ]
        with m.If(self.column.valid & self.column.ready & head.last):
            m.d.sync += running.eq(0)
        with m.If(take_run):
            m.d.sync += weights_in.eq(0)
        return m


# The sequencer's loop nest ------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Column:
    """One column beat of :func:`column_schedule`.

    Attributes
    ----------
    iw : int or None
        Input column, or ``None`` for a padding column (nothing is read; the mask is 0).
    rows : tuple of (int or None)
        Input row under each kernel row, ``None`` where it is padding (not read; mask bit 0).
    start, emit : bool
        The :class:`ColumnBeat` flags.
    ow : int or None
        Output column of the window emitted after this column (``None`` without ``emit``).
    """
    iw: object
    rows: tuple
    start: bool
    emit: bool
    ow: object

    @property
    def reads(self):
        """Scratchpad lines this column reads."""
        return 0 if self.iw is None else sum(r is not None for r in self.rows)


def column_schedule(in_size, kernel, stride, padding, out_size):
    """The column beats that make :class:`WindowBuffer` emit every window of a convolution, in output order.

    This is the loop nest of the sequencer for one channel group (dilation 1). For each output row ``oh`` the input
    rows ``oh * sh - pt + i`` (``i < kh``) are fixed; the columns ``ow * sw - pl + j`` are pushed left to right,
    each one once, the first of the row with ``start`` (so left padding is free) and the last column of each window
    with ``emit``. Columns left of the image are never pushed; columns right of it are padding beats (no read).

    Parameters
    ----------
    in_size : (int, int)
        Input height and width.
    kernel : (int, int)
        Kernel height and width (``kh x kw`` of the buffer).
    stride : (int, int)
    padding : ((int, int), (int, int))
        ``((top, bottom), (left, right))``, as in :class:`haneul.sim.golden.params.ConvParams`.
    out_size : (int, int)
        Output height and width.

    Returns
    -------
    list of (int, list of Column)
        For every output row ``oh``: ``(oh, columns)``; the columns emit ``out_size[1]`` windows in order.
    """
    (h, w), (kh, kw), (sh, sw) = in_size, kernel, stride
    (pt, _), (pl, _) = padding
    oh_count, ow_count = out_size
    plan = []
    for oh in range(oh_count):
        rows = tuple(r if 0 <= r < h else None for r in (oh * sh - pt + i for i in range(kh)))
        columns = []
        pushed = None                            # the last column pushed in this row
        for ow in range(ow_count):
            left = ow * sw - pl
            right = left + kw - 1
            first = max(left, 0) if pushed is None else max(left, pushed + 1)
            if pushed is None and right < 0:
                raise ValueError("a window entirely inside the left padding")
            for c in range(first, right + 1):
                iw = c if c < w else None
                columns.append(Column(iw=iw, rows=rows, start=pushed is None, emit=c == right,
                                      ow=ow if c == right else None))
                pushed = c
        plan.append((oh, columns))
    return plan
