"""Max and average pooling of int8 vectors, one window at a time.

A window arrives as a run of beats (one beat per input position inside the window, all lanes = channels in
parallel), the last one marked with ``last``. Per lane, bit-exactly with the golden model's ``max_pool_2d`` and
``average_pool_2d`` (the window clipped to the input, as TFLite's reference kernels)::

    MAX:      out = clamp(max(x_1, ..., x_n), act_min, act_max)
    AVERAGE:  acc = x_1 + ... + x_n
              out = clamp(acc > 0 ? (acc + n/2) / n : (acc - n/2) / n, act_min, act_max)    (C division, truncating)

The division by the window size ``n`` is a multiplication by a reciprocal read from a ROM, exact for every
``n <= max_count`` and every accumulator of ``n`` int8 values (see :func:`reciprocals` and ``docs/ppu.md``).
"""

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .pe import register_copy
from .ppu import CONFIG_INIT, CreditFIFO, Stages, check_lanes, clamp_bounds, dsp_product, multiply

__all__ = ["Mode", "Config", "Beat", "reciprocals", "Pool"]


class Mode(enum.Enum, shape=1):
    """Pooling operation.

    Members
    -------
    MAX
        MAX_POOL_2D.
    AVERAGE
        AVERAGE_POOL_2D, rounding half away from zero.
    """
    MAX     = 0
    AVERAGE = 1


class Config(data.Struct):
    """Parameters of a pooling operation.

    Members
    -------
    mode : Mode
        Maximum or average.
    act_min, act_max : signed(8)
        Clamp bounds of the fused activation.
    """
    mode:    Mode
    act_min: signed(8)
    act_max: signed(8)


class Beat(data.StructLayout):
    """Layout of an input beat: one int8 per lane and the end-of-window marker.

    Parameters
    ----------
    lanes : int
        Number of lanes (channels).
    """
    def __init__(self, lanes):
        super().__init__({
            "data": data.ArrayLayout(signed(8), lanes),
            "last": unsigned(1),
        })


def reciprocals(max_count):
    """The reciprocal table of the average: ``(table, shifts)`` with ``table[n] = ceil(2**shifts[n] / n)``.

    For ``num < 2**N`` (here ``num = |acc| + n//2 <= 128*n + n//2``, ``N = bit_length(128*max_count +
    max_count//2)``) and ``shifts[n] = N + k`` with ``2**k >= n`` (the smallest such ``k``),
    ``(num * table[n]) >> shifts[n] == num // n``: with ``table[n] = (2**shifts[n] + e) / n``, ``0 <= e < n``, the
    product exceeds ``num / n`` by ``num * e / (n * 2**shifts[n]) < 2**N * n / (n * 2**(N+k)) <= 1 / n``, which
    never carries ``num / n`` (at most ``1 - 1/n`` above its floor) past the next integer.

    The shift grows with ``n`` so that every entry is normalised: ``table[n] < 2**(N+1)`` (``n > 2**(k-1)``), one
    bit more than the numerator. With ``max_count <= 256`` both fit the 18 x 18 signed multiplier of one ECP5 DSP.

    Parameters
    ----------
    max_count : int
        Largest window size.
    """
    num_bits = (128 * max_count + max_count // 2).bit_length()
    shifts = [0] + [num_bits + (n - 1).bit_length() for n in range(1, max_count + 1)]
    table = [0] + [-(-(1 << shifts[n]) // n) for n in range(1, max_count + 1)]
    return table, shifts


class Pool(wiring.Component):
    """Max or average pooling of windows of int8 vectors.

    The configuration is loaded through the ``param`` stream, only between windows: ``param.ready`` is low while a
    window is partly received, and while ``param.valid`` is high between windows no input beat is accepted. A
    configuration applies to every window that starts after it; windows in flight keep theirs. After reset the
    mode is :attr:`Mode.MAX` with the clamp bounds -128 and 127.

    One input beat per cycle is accepted; a window of ``n`` beats produces one output beat :attr:`LATENCY` cycles
    after its last beat (without backpressure). Windows longer than ``max_count`` beats are not supported.

    Parameters
    ----------
    lanes : int
        Number of channels per beat.
    max_count : int
        Largest window size (beats per window), from 1 to 2048: it sizes the accumulators, the window counter
        and the reciprocal ROM (``max_count + 1`` entries: a reciprocal of at most 20 bits and its shift).

    Attributes
    ----------
    i : In(stream.Signature(Beat(lanes)))
        Input positions of the windows, ``last`` set on the final beat of each window.
    param : In(stream.Signature(Config))
        Configuration loads.
    o : Out(stream.Signature(data.ArrayLayout(signed(8), lanes)))
        One pooled vector per window.
    busy : Out(1)
        Results are owed: windows whose last beat was accepted and not yet sent on ``o`` (the output queue's credit count).
    """

    #: Pipeline stages (S0 .. S12), before the output FIFO.
    STAGES = 13

    #: Cycles from the accepted last beat of a window to its output beat on ``o`` (without backpressure): the
    #: pipeline stages and the output FIFO with its output register.
    LATENCY = STAGES + 2

    #: Entries of the output FIFO (``LATENCY + 1``), and so the most windows the unit holds whose last beat was
    #: accepted and whose result was not yet sent on ``o``.
    fifo_depth = LATENCY + 1

    def __init__(self, lanes=16, *, max_count=256):
        check_lanes(lanes)
        if not isinstance(max_count, int) or isinstance(max_count, bool) or not 1 <= max_count <= 2048:
            raise ValueError(f"Maximum window size must be an integer in [1, 2048], not {max_count!r}")
        self._lanes = lanes
        self._max_count = max_count
        super().__init__({
            "i":     In(stream.Signature(Beat(lanes))),
            "param": In(stream.Signature(Config)),
            "o":     Out(stream.Signature(data.ArrayLayout(signed(8), lanes))),
            "busy":  Out(1),
        })

    @property
    def lanes(self):
        return self._lanes

    @property
    def max_count(self):
        return self._max_count

    def elaborate(self, platform):
        m = Module()
        table, shifts = reciprocals(self._max_count)
        num_bits = (128 * self._max_count + self._max_count // 2).bit_length()
        # Each entry: the reciprocal and the part of its shift above num_bits.
        entry = data.StructLayout({"recip": unsigned(num_bits + 1),
                                   "shift": unsigned(max(1, (self._max_count - 1).bit_length().bit_length()))})
        init = [{"recip": r, "shift": max(0, s - num_bits)} for r, s in zip(table, shifts)]
        m.submodules.reciprocal = rom = Memory(shape=entry, depth=len(table), init=init)
        rom_rd = rom.read_port()

        cfg = Signal(Config, init=CONFIG_INIT)
        fresh = Signal(init=1)      # the next input beat starts a window
        take = Signal()
        # The pipeline never stalls: a window's result goes into the output FIFO, which has an entry reserved for it
        # when its last beat is accepted. Without a free entry no beat is accepted, so `o.ready` reaches only the
        # FIFO and its credit count.
        m.submodules.fifo = fifo = CreditFIFO(data.ArrayLayout(signed(8), self._lanes), self.fifo_depth,
                                              registered=True)
        wiring.connect(m, fifo.o, wiring.flipped(self.o))
        m.d.comb += self.busy.eq(fifo.busy)
        # S0: the accepted beat, registered: it comes from a queue in LUT RAM (the scratchpad's response queue, far
        # away on a large build). S1: each lane's element again, with the lane's own copies of the beat's `valid` and
        # `first`, beside the lane's accumulators (which sit beside its DSP, spread over the die: from one S0
        # register the comparison into the running maximum's enable was 10.9 ns at 16 x 16).
        s0_valid = Signal()
        s0 = Signal(Beat(self._lanes), reset_less=True)
        s0_first = Signal(reset_less=True)
        s1_valid, s1_first, s1_last = Signal(), Signal(reset_less=True), Signal(reset_less=True)
        m.d.comb += [
            # A configuration load waits for the beats in S0 and S1 to reach the accumulators (S2), which are read
            # with the configuration.
            self.param.ready.eq(fresh & ~s0_valid & ~s1_valid),
            self.i.ready.eq(fifo.credit & ~(fresh & self.param.valid)),
            take.eq(self.i.valid & self.i.ready),
            fifo.reserve.eq(take & self.i.payload.last),
        ]
        with m.If(self.param.valid & self.param.ready):
            m.d.sync += cfg.eq(self.param.payload)
        with m.If(take):
            m.d.sync += fresh.eq(self.i.payload.last)
        m.d.sync += [
            s0_valid.eq(take),
            s0.eq(self.i.payload),
            s0_first.eq(fresh),
            s1_valid.eq(s0_valid),
            s1_first.eq(s0_first),
            s1_last.eq(s0.last),
        ]

        # S2: the accumulators (a running maximum and a running sum per lane: the maximum of int8 values is an
        # int8, so its comparison is 8 bits wide and neither recurrence has the mode in it) and the window size.
        acc_shape = Shape.cast(range(-128 * self._max_count, 127 * self._max_count + 1))
        sums = [Signal(acc_shape, name=f"sum_l{lane}") for lane in range(self._lanes)]
        peaks = [Signal(signed(8), name=f"peak_l{lane}") for lane in range(self._lanes)]
        count = Signal(range(self._max_count + 1))
        with m.If(s1_valid):
            m.d.sync += count.eq(Mux(s1_first, 1, count + 1))
        counts = []
        for lane, (total, peak) in enumerate(zip(sums, peaks)):
            x = Signal(signed(8), name=f"s1_l{lane}", reset_less=True)
            m.d.sync += x.eq(s0.data[lane])
            valid_l = register_copy(m, s0_valid, name=f"s1_valid_l{lane}", platform=platform, init=0)
            first_l = register_copy(m, s0_first, name=f"s1_first_l{lane}", platform=platform)
            # The running maximum's comparison `x > peak` is made a cycle early, on the beat in S0, against both
            # values `peak` can have then (this `x`, if it is taken, or `peak` as it is), and registered: the 8-bit
            # compare's carry chain then ends at a flip-flop, not at the maximum's enables (10.3 ns at 16 x 16).
            above_x = Signal(name=f"above_x_l{lane}", reset_less=True)
            above_peak = Signal(name=f"above_peak_l{lane}", reset_less=True)
            took_x = Signal(name=f"took_x_l{lane}")
            take_x = valid_l & (first_l | Mux(took_x, above_x, above_peak))     # this `x` is the new maximum
            m.d.sync += [
                above_x.eq(s0.data[lane] > x),
                above_peak.eq(s0.data[lane] > peak),
                took_x.eq(take_x),
            ]
            with m.If(valid_l):
                m.d.sync += total.eq(Mux(first_l, x, total + x))
            with m.If(take_x):
                m.d.sync += peak.eq(x)
            # The window size again, counted in the lane from its own flags, for its rounding term `n // 2` (the
            # shared count drives the reciprocal ROM only).
            counts.append(register_copy(m, lambda r: Mux(first_l, 1, r + 1), name=f"count_l{lane}",
                                        platform=platform, enable=valid_l, init=0, shape=count.shape()))

        p = Stages(m)
        valid = Signal(name="valid_s2")
        m.d.sync += valid.eq(s1_valid & s1_last)
        for stage in range(3, self.STAGES):
            valid = p.reg(valid, name=f"valid_s{stage}")
        m.d.comb += fifo.w_en.eq(valid)

        # S3: reciprocal of the window size; the numerator |acc| + n//2 and the sign. (The accumulators, the count and
        # the configuration register are the window's own while its result sits in S2: the next window's first
        # beat and a configuration load change them at the end of that cycle at the earliest.)
        m.d.comb += [
            rom_rd.addr.eq(count),
            rom_rd.en.eq(1),
        ]
        cfgs = {2: cfg}
        for stage in range(3, self.STAGES - 1):
            cfgs[stage] = p.reg(cfgs[stage - 1], name=f"cfg_s{stage}")
        recip = p.reg(rom_rd.data.recip, name="recip")
        # The product takes two stages on one DSP (operand and product registers) up to max_count = 256 (a 17-bit
        # numerator, an 18-bit reciprocal, both signed), three on 16-bit pieces above that; the quotient follows it,
        # and is delayed to S8 (the same latency for every max_count).
        one_dsp = num_bits <= 16
        mul_stages = 2 if one_dsp else 3
        # On one DSP the product comes from the DSP's output register, in its DSP row: it goes into fabric
        # flip-flops (S7) before the shift, which then has the whole of S8 (the DSP output through the shift was
        # 13.2 ns at 16 x 16). The wider product's last stage is already an adder in the fabric.
        prod_stages = mul_stages + (1 if one_dsp else 0)
        assert prod_stages == 3         # the product in S7 either way
        # The quotient's shift amount reaches each lane from a copy of its own (the lanes sit beside their DSPs,
        # spread over the die; one register for all of them was the 16 x 16 datapath's pooling worst path, 12.8 ns).
        recip_shift = p.delay(rom_rd.data.shift, prod_stages, name="recip_shift")
        # The clamp bounds, a stage early, then a copy per lane for S11 and (registered once more) for S12: the lanes
        # sit beside their DSPs, spread over the die (one register of each for all lanes: 11.0 ns at 16 x 16).
        low, high = clamp_bounds(p, cfgs[8], name="clamp")
        outs = []
        for lane, (acc, peak, count_l) in enumerate(zip(sums, peaks, counts)):
            half = count_l >> 1
            neg = acc < 0
            # |acc| + n//2: two adders in parallel rather than a negation and an adder in series
            num = p.reg(Mux(neg, half - acc, acc + half), shape=unsigned(num_bits), name=f"num_l{lane}")
            neg = p.reg(neg, name=f"neg2_l{lane}")
            top = p.reg(peak, name=f"max2_l{lane}")
            # S4: the block RAM's output is slow: register it before multiplying.
            num = p.reg(num, name=f"num3_l{lane}")
            # S5-S6 (S5-S7 above max_count = 256): the product of the numerator and the reciprocal.
            if one_dsp:
                prod = dsp_product(p, num, recip, name=f"mul_l{lane}", platform=platform, input_registers=True)
                prod = p.reg(prod, name=f"prod_l{lane}")
            else:
                prod, stages = multiply(p, num, recip, name=f"mul_l{lane}", platform=platform)
                assert stages == mul_stages
            neg = p.delay(neg, 6, name=f"neg_l{lane}")
            top = p.delay(top, 6, name=f"max_l{lane}")
            # S8-S9: the quotient (|acc| + n//2) // n = (prod >> N) >> k, at most 128: the variable shift by
            # k <= 8 in two stages, by a multiple of 4 (S8), then by the rest (S9), each a small multiplexer (the
            # whole shift in one stage was 10.7 ns at 16 x 16).
            shift = p.copy(recip_shift, name=f"recip_shift_l{lane}")
            coarse = p.reg(((prod >> num_bits) >> Cat(Const(0, 2), shift[2:]))[:11], name=f"quotient7_l{lane}")
            fine = p.reg(shift[:2], name=f"recip_shift8_l{lane}")
            quotient = p.reg((coarse >> fine)[:8], name=f"quotient_l{lane}")
            # S10: sign and mode.
            result = p.reg(Mux(cfgs[9].mode == Mode.MAX, top, Mux(neg, -quotient, quotient)), shape=signed(9),
                           name=f"result_l{lane}")
            # S11-S12: clamp, in two stages: the bounds reach all lanes (which sit beside their DSPs, spread over
            # the die) through long wires, so the two comparisons and the selection each get a cycle.
            low_l, high_l = p.copy(low, name=f"clamp_low_l{lane}"), p.copy(high, name=f"clamp_high_l{lane}")
            above = p.reg(result > high_l, name=f"above_l{lane}")
            below = p.reg(result < low_l, name=f"below_l{lane}")
            low_l, high_l = p.reg(low_l, name=f"clamp_low10_l{lane}"), p.reg(high_l, name=f"clamp_high10_l{lane}")
            result = p.reg(result, name=f"result10_l{lane}")
            outs.append(p.reg(Mux(above, high_l, Mux(below, low_l, result))[:8].as_signed(),
                              name=f"out_l{lane}"))
        m.d.comb += fifo.w_data.eq(Cat(*outs))

        p.emit()
        return m
