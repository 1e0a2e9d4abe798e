"""Post-processing unit: requantisation of int32 accumulators to int8 activations.

The :class:`Requantizer` is the output stage shared by CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED. It computes,
per lane and bit-exactly with :func:`haneul.sim.golden.kernels.requantize`::

    x   = wrap_int32(acc + bias)
    out = clamp(MultiplyByQuantizedMultiplier(x, multiplier, shift) + output_offset, act_min, act_max)

with either rounding of the golden model: double rounding (``SaturatingRoundingDoublingHighMul`` then
``RoundingDivideByPOT``, as the convolutions) or single rounding (``(x*M + 2^(30-shift)) >> (31-shift)``, as
FULLY_CONNECTED). See ``docs/ppu.md`` for the derivation of the datapath.

The module also holds the small pipeline helpers that :mod:`haneul.rtl.eltwise` reuses.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from .credit import CreditFIFO
from .fold import Fold, FoldedTiming
from .pe import is_ecp5, mult18x18d, register_copy

__all__ = ["Rounding", "LaneParams", "Config", "Params", "CreditFIFO", "Requantizer", "load_staged", "load_offered",
           "fits_after_shift"]


class Rounding(enum.Enum, shape=1):
    """Rounding of the fixed-point multiplication.

    Members
    -------
    DOUBLE
        TFLite ``MultiplyByQuantizedMultiplier`` (CONV_2D, DEPTHWISE_CONV_2D): ``SaturatingRoundingDoublingHighMul``
        (the ``INT32_MIN * INT32_MIN`` product saturates to ``INT32_MAX``) then ``RoundingDivideByPOT`` (round half
        away from zero); a positive shift is a wrapping int32 left shift before the multiplication.
    SINGLE
        LiteRT's 64-bit form (FULLY_CONNECTED): ``(x*M + 2^(30-shift)) >> (31-shift)``, round half up.
    """
    DOUBLE = 0
    SINGLE = 1


class LaneParams(data.Struct):
    """Per-channel (per-lane) requantisation parameters.

    Members
    -------
    bias : signed(32)
        Added to the accumulator with int32 wrap-around.
    multiplier : signed(32)
        Q0.31 significand of the real multiplier (``quantize_multiplier``); any int32 value is computed exactly.
    shift : signed(6)
        Power-of-two exponent. Supported range: ``[-31, 31]`` for :attr:`Rounding.DOUBLE`, ``[-31, 30]`` for
        :attr:`Rounding.SINGLE` (the ranges over which the golden model is defined).
    """
    bias:       signed(32)
    multiplier: signed(32)
    shift:      signed(6)


class Config(data.Struct):
    """Requantisation parameters shared by all lanes.

    Members
    -------
    output_offset : signed(8)
        Output zero point, added after the rounding.
    act_min, act_max : signed(8)
        Clamp bounds (``np.clip`` semantics: ``min(max(v, act_min), act_max)``); they express no activation
        (-128, 127), ReLU, ReLU6, ReLU_N1_TO_1 or any other range.
    rounding : Rounding
        Double or single rounding.
    """
    output_offset: signed(8)
    act_min:       signed(8)
    act_max:       signed(8)
    rounding:      Rounding


class Params(data.StructLayout):
    """Layout of one beat of the parameter stream: the shared :class:`Config` and one :class:`LaneParams` per lane.

    Parameters
    ----------
    lanes : int
        Number of lanes.
    """
    def __init__(self, lanes):
        super().__init__({
            "config": Config,
            "lanes":  data.ArrayLayout(LaneParams, lanes),
        })


# Parameter registers of the post-processing units reset to "no activation" clamp bounds.
CONFIG_INIT = {"act_min": -128, "act_max": 127}


def _load_parts(m, flag, source, params, parts, *, platform, name, group):
    """Load ``params`` from ``source`` two cycles after ``flag``, part by part: ``flag`` into one copy per group of
    parts, each of those into a copy per part (:func:`~haneul.rtl.pe.register_copy`), which enables that part.

    ``group`` is the number of consecutive parts per group, or a function giving a part's group from its index
    (parts used side by side, such as the lanes one pipeline lane takes in turn, belong in one group)."""
    group_of = group if callable(group) else (lambda index: index // group)
    groups = {}
    for index in range(len(parts)):
        g = group_of(index)
        if g not in groups:
            groups[g] = register_copy(m, flag, name=f"{name}_load_g{g}", platform=platform, init=0)
    for index, part in enumerate(parts):
        with m.If(register_copy(m, groups[group_of(index)], name=f"{name}_load{index}", platform=platform, init=0)):
            m.d.sync += part(params).eq(part(source))


def load_staged(m, param, params, parts, *, platform, name="param", group=4, with_next=False):
    """Load each beat accepted on the stream ``param`` into the register ``params``, two cycles later.

    The beat goes through two registers without enable first, and from there into ``params``, part by part: each part
    (``parts``: functions giving a part of a value of ``params``' layout, such as one lane's parameters) by its own
    copy of the load flag (:func:`~haneul.rtl.pe.register_copy`), so that no single net enables every parameter
    bit (about 1 150 in a 16-lane requantiser). The copies are loaded from one copy per ``group`` parts, which
    are loaded from the handshake: the parts sit beside their lanes, spread over the die, and the handshake
    straight to every part's copy took 8.7 ns of routing at 16 x 16. ``param.ready`` is the caller's to drive.
    Returns ``pending``, high in the two cycles after a load, while ``params`` still holds the old values: a unit
    accepts no beat then, so a beat always sees the parameters taken before it. With ``with_next``, returns
    ``(pending, pending_next)``, the latter ``pending`` of the next cycle.
    """
    loaded = Signal(name=f"{name}_loaded")
    loaded_1, loaded_2 = Signal(name=f"{name}_loaded_1"), Signal(name=f"{name}_loaded_2")
    pending = Signal(name=f"{name}_pending")
    staged = Signal(params.shape(), name=f"{name}_staged", reset_less=True)
    staged_2 = Signal(params.shape(), name=f"{name}_staged_2", reset_less=True)
    m.d.comb += [
        loaded.eq(param.valid & param.ready),
        pending.eq(loaded_1 | loaded_2),
    ]
    m.d.sync += [
        staged.eq(param.payload),
        staged_2.eq(staged),
        loaded_1.eq(loaded),
        loaded_2.eq(loaded_1),
    ]
    _load_parts(m, loaded, staged_2, params, parts, platform=platform, name=name, group=group)
    if with_next:
        return pending, loaded | loaded_1
    return pending


def load_offered(m, param, params, parts, *, platform, allowed=1, name="param", group=4):
    """Load the beat offered on the stream ``param`` into the register ``params`` straight from its payload, and
    accept it in the same cycle: two cycles after it was first seen (and ``allowed`` was high), with no staging
    register. Drives ``param.ready``.

    A stream's source holds ``valid`` and the payload until the beat is accepted, so the unit may take its time:
    seeing ``param.valid`` (in a cycle with ``allowed``), it loads one flag per group of parts (``group``: as for
    :func:`_load_parts`), and each part (``parts``: functions giving a part of a value of ``params``' layout, such
    as one lane's parameters) then its own copy of the flag (:func:`~haneul.rtl.pe.register_copy`), which loads the part from ``param.payload`` the next
    cycle, while a further flip-flop raises ``param.ready``: the beat is accepted in the cycle it is loaded. So no
    single net enables every parameter bit (about 1 150 in a 16-lane requantiser), neither the handshake nor
    ``param.valid`` reaches a part's enable in the cycle it is seen (the parts sit beside their lanes, spread over
    the die), and no copy of the payload is kept (:func:`load_staged` keeps two, for a source that changes its
    payload once the beat is accepted in the cycle it is offered). A beat accepted by the unit in the cycle of a
    load still sees the old parameters; every later one the new.
    """
    offered = Signal(name=f"{name}_offered")
    armed = register_copy(m, offered, name=f"{name}_armed", platform=platform, init=0)
    loading = register_copy(m, armed, name=f"{name}_loading", platform=platform, init=0)
    m.d.comb += [
        offered.eq(param.valid & ~armed & ~loading & allowed),
        param.ready.eq(loading),
    ]
    _load_parts(m, offered, param.payload, params, parts, platform=platform, name=name, group=group)


def check_lanes(lanes):
    if not isinstance(lanes, int) or isinstance(lanes, bool) or lanes <= 0:
        raise TypeError(f"Lane count must be a positive integer, not {lanes!r}")


class Stages:
    """The pipeline registers of a post-processing unit: they load every cycle (the pipeline never stalls; an output
    FIFO with credits, :class:`CreditFIFO`, absorbs backpressure).

    Parameters
    ----------
    m : Module
        Module that receives the registers' update statements (and the DSP instances of :func:`dsp_product`).
    platform : platform or None
        As passed to ``elaborate``: for ECP5, :meth:`copy` registers are ``TRELLIS_FF`` instances.
    """
    def __init__(self, m, platform=None):
        self.m = m
        self.platform = platform
        self._updates = []

    def reg(self, value, *, name, shape=None):
        """A register loading ``value`` when the pipeline advances; its shape is ``value``'s unless given."""
        if shape is None:
            shape = value.shape()
        sig = Signal(shape, name=name)
        self._updates.append(sig.eq(value))
        return sig

    def copy(self, value, *, name):
        """A register loading ``value``, as :meth:`reg`, that stays a register of its own: one of several copies of
        the same value that together spread a fan-out too wide for one register (:func:`~haneul.rtl.pe.register_copy`:
        ``TRELLIS_FF`` instances on ECP5, which Yosys does not merge)."""
        return register_copy(self.m, value, name=name, platform=self.platform)

    def delay(self, value, stages, *, name):
        """``value`` delayed by ``stages`` pipeline stages."""
        for stage in range(stages):
            value = self.reg(value, name=f"{name}_d{stage + 1}")
        return value

    def emit(self):
        """Add the update statements of every register created so far to the module."""
        self.m.d.sync += self._updates
        self._updates = []


def split16(value):
    """Split a signed value into its low 16 bits (unsigned) and the rest (signed): ``value = hi * 2**16 + lo``.

    The pieces fit the 18x18 signed multipliers of an ECP5 DSP.
    """
    value = value.as_signed()
    return value[:16], value[16:].as_signed()


def as_signed(value):
    """``value`` as a signed value of the same numeric value (unsigned values gain a zero sign bit)."""
    if value.shape().signed:
        return value
    return Cat(value, Const(0, 1)).as_signed()


def dsp_product(p, a, b, *, name, platform, input_registers=False):
    """The signed product ``a * b`` of two operands of at most 18 bits (signed) on one DSP, registered: one stage,
    or two with ``input_registers`` (the operands registered first).

    For an ECP5 ``platform`` the registers are the ``MULT18X18D``'s own (its output register, and its operand
    registers: :func:`haneul.rtl.pe.mult18x18d`), so the routing into the DSP row ends in a register and the product
    leaves the block from one; elsewhere (simulation) they are fabric registers at the same places of the pipeline.
    Returns ``signed(len(a) + len(b))``.
    """
    a, b = as_signed(a), as_signed(b)
    if is_ecp5(platform):
        return mult18x18d(p.m, a, b, name=name, input_registers=input_registers)[:len(a) + len(b)].as_signed()
    if input_registers:
        a, b = p.reg(a, name=f"{name}_a"), p.reg(b, name=f"{name}_b")
    return p.reg(a * b, name=name)


def multiply(p, a, b, *, name, platform=None, input_registers=False):
    """Pipelined signed multiplication ``a * b`` of up to 32x32 bits, on 16-bit pieces (ECP5 18x18 DSPs).

    Returns ``(product, stages)``: the registered product and the number of stages it took (1 when both operands
    have at most 18 bits: one DSP; 2 when ``a`` has at most 17 bits, 3 otherwise; one more with
    ``input_registers``). The first stage registers the partial products (:func:`dsp_product`: in the DSPs' output
    registers for an ECP5 ``platform``, with ``input_registers`` after the DSPs' operand registers); a 32x32 product
    then adds the two middle products, concatenates the non-overlapping low and high ones, and adds both in the last
    stage.
    """
    a, b = as_signed(a), as_signed(b)
    if a.shape().width > 33 or b.shape().width > 33:
        raise ValueError("multiply supports operands of at most 33 bits")

    def product(x, y, suffix):
        return dsp_product(p, x, y, name=f"{name}_{suffix}", platform=platform, input_registers=input_registers)
    extra = int(input_registers)
    if a.shape().width <= 18 and b.shape().width <= 18:
        return product(a, b, "prod"), 1 + extra
    b_lo, b_hi = split16(b)
    if a.shape().width <= 17:
        lo = product(a, b_lo, "pl")
        hi = product(a, b_hi, "ph")
        return p.reg(lo + (hi << 16), name=f"{name}_prod"), 2 + extra
    a_lo, a_hi = split16(a)
    ll = product(a_lo, b_lo, "ll")
    lh = product(a_lo, b_hi, "lh")
    hl = product(a_hi, b_lo, "hl")
    hh = product(a_hi, b_hi, "hh")
    # ll is unsigned and below 2^32: ll + hh * 2^32 is a concatenation
    base = p.reg(Cat(ll[:32], hh).as_signed(), name=f"{name}_base")
    mid = p.reg(lh + hl, name=f"{name}_mid")
    width = a.shape().width + b.shape().width
    return p.reg((base + (mid << 16))[:width].as_signed(), name=f"{name}_prod"), 3 + extra


def rounding_shift_right(z, amount, away, low_zero=1):
    """First half of a rounding right shift by ``amount + 1`` (see :func:`rounding_shift_finish`).

    Returns ``(y, carry)`` with ``y = z >> amount`` (floor) and the carry to add before the final ``>> 1``:
    one, except when ``away`` is set, ``z`` is negative and the discarded part is exactly one half (then zero).
    ``(y + carry) >> 1`` is ``floor(z / 2**(amount+1) + 1/2)`` (round half up), or round half away from zero when
    ``away`` is set. ``away`` is only supported for ``amount <= 32`` (the discarded bits are taken from ``z[:32]``).

    After :func:`shift_right_coarse`, ``z`` and ``amount`` are its shifted value and remaining amount and
    ``low_zero`` its test of the bits it discarded, which belong to the discarded part too.
    """
    y = z.as_signed() >> amount
    low = min(32, 2 ** len(amount))
    low_mask = ~(Const(2 ** low - 1, low) << amount)[:low]
    exact_half = ((z[:low] & low_mask) == 0) & y[0] & low_zero
    carry = ~(away & z.as_signed()[-1] & exact_half)
    return y, carry


def shift_right_coarse(z, amount, step=8):
    """The first stage of a right shift split in two (each stage's multiplexers then have half the levels):
    ``z >> (amount - amount % step)``, whether the bits that discards are all zero, and the amount left,
    ``amount % step`` (``step`` a power of two). For :func:`rounding_shift_right` as the second stage."""
    bits = (step - 1).bit_length()
    coarse = amount[bits:]
    shifted = z.as_signed() >> Cat(Const(0, bits), coarse)
    discarded_zero = Cat(*((coarse <= i) | (z[i * step:(i + 1) * step] == 0)
                           for i in range(-(-len(z) // step)))).all()
    return shifted, discarded_zero, amount[:bits]


def saturate(value, shape, fits=1):
    """``value`` clamped to the range of ``shape`` (a signed shape).

    The overflow test looks at the bits above the result (all equal to the sign when it fits): no carry chain.
    ``fits`` is the test of bits above ``value``'s own, made elsewhere (``value`` then holds the low bits and the
    sign of a wider value).
    """
    width = shape.width
    value = value.as_signed()
    top = value[width - 1:]
    fits = fits & (top.all() | ~top.any())
    saturated = Mux(value[-1], -(1 << (width - 1)), (1 << (width - 1)) - 1)
    return Mux(fits, value[:width].as_signed(), saturated)[:width].as_signed()


def fits_after_shift(z, dropped, width=18):
    """Whether ``z >> amount`` fits ``signed(width)``, tested on ``z`` itself (beside the shift, not after it): its
    bits from ``width - 1 + amount`` up all equal its sign. ``dropped[j]`` is the test ``amount > j`` (bit
    ``width - 1 + j`` of ``z`` is shifted below the tested bits) for the ``j`` it has; the bits above are always
    tested. For :func:`saturate`'s test of the shifted value, a stage earlier."""
    start = width - 1
    return Cat(*((dropped[j] if j < len(dropped) else Const(0, 1)) | (z[start + j] == z[-1])
                 for j in range(len(z) - start))).all()


def add_offset(y, carry, offset):
    """``y + carry + 2*offset``, whose ``>> 1`` is ``((y + carry) >> 1) + offset``: the last rounding step and the
    zero point in one addition (``carry`` is the low bit of ``2*offset + carry``)."""
    return y + Cat(carry, offset).as_signed()


def clamp_bounds(p, config, *, name):
    """The clamp bounds ``(low, high)`` for :func:`clamp_int8`, registered in the pipeline ``p`` from a stage's
    ``config`` (with ``act_min`` and ``act_max``): ``low = min(act_min, act_max)``, ``high = act_max``.

    They are one stage ahead of their use, so the comparison of the bounds is not in series with the clamp, and
    one register of each drives every lane.
    """
    low = p.reg(Mux(config.act_min > config.act_max, config.act_max, config.act_min), name=f"{name}_low")
    high = p.reg(config.act_max, name=f"{name}_high")
    return low, high


def clamp_int8(value, low, high):
    """``np.clip(value, act_min, act_max)`` as int8, that is ``min(max(value, act_min), act_max)``, with the bounds
    ``(low, high)`` of :func:`clamp_bounds`.

    ``low = min(act_min, act_max)`` gives the same result (it differs from ``act_min`` only when ``act_min >
    act_max``, where ``np.clip`` gives ``act_max`` for every value) and is the only lower bound needed. Both
    comparisons with ``value`` run in parallel.
    """
    return Mux(value > high, high, Mux(value < low, low, value))[:8].as_signed()


class Requantizer(FoldedTiming, wiring.Component):
    """Bias add, requantisation, zero point, clamp and int8 packing of a vector of int32 accumulators.

    Parameters are loaded through the ``param`` stream into a parameter register: a parameter beat applies to every
    accumulator beat accepted after it (the parameters travel down the pipeline with their beat, so a load never
    disturbs beats in flight); a beat accepted in the same cycle as a parameter beat has the new ones. A
    parameter beat is accepted two or more cycles after it is offered, in the cycle it is loaded straight from the
    stream's payload (:func:`load_offered`: the source holds it until then, and no copy of the 1 150 bits is
    kept); folded, that cycle is the last part cycle of a beat. ``i.ready`` does not depend on ``param.valid`` (it comes from the unit's own
    flip-flops only: it is the accumulator queue's read enable, across the die), so whoever drives both streams
    orders them: the datapath's sequencer sends a parameter beat only while no accumulator line is waiting or
    being read out.
    After reset the parameters are zero, with the clamp bounds -128 and 127.

    An accepted beat goes into an input register (loaded in every cycle, no enable), then through a pipeline of
    :attr:`STAGES` stages that never stalls, followed by an output FIFO of
    ``LATENCY + 1`` entries with a registered output; ``i.ready`` comes from a credit count (beats accepted and not yet sent on ``o``), so
    every accepted beat has a FIFO entry waiting for it and ``o.ready`` reaches only the FIFO and the count, not the
    pipeline's registers (a stall enable on all of them, about 11 000 flip-flops at 16 lanes, was the slowest net of
    the ECP5 build). One beat per cycle, correct under any pattern of valid and ready gaps.

    With ``fold > 1`` the pipeline is ``width = ceil(lanes / fold)`` lanes wide and a beat goes through it in
    ``fold`` parts on consecutive cycles (:class:`~haneul.rtl.fold.Fold`; lane ``j`` of the pipeline computes
    element ``k * width + j`` of part ``k`` with that element's parameters, and nothing of use past the last
    element): a beat every ``fold`` cycles, a :attr:`latency` of ``LATENCY + fold - 1``, about ``fold`` times fewer
    multipliers (four ECP5 DSP blocks per pipeline lane).

    Parameters
    ----------
    lanes : int
        Number of accumulators per beat (the systolic array's column count).
    fold : int
        Cycles per beat, at most ``lanes``. Default 1.

    Attributes
    ----------
    i : In(stream.Signature(data.ArrayLayout(signed(32), lanes)))
        Accumulators, bias not included.
    param : In(stream.Signature(Params(lanes)))
        Parameter loads.
    o : Out(stream.Signature(data.ArrayLayout(signed(8), lanes)))
        Requantised int8 activations (lane ``k`` in bits ``8k..8k+7``).
    busy : Out(1)
        Results are owed: beats accepted on ``i`` and not yet sent on ``o`` (the output queue's credit count).
    i_ready_next : Out(1)
        ``i.ready`` of the next cycle (``i.ready`` is a flip-flop loaded with it, low in the cycle after reset): a
        producer far away keeps copies of ``i.ready`` beside its own logic (the accumulator's output queue:
        :class:`~haneul.rtl.credit.CreditFIFO` with ``early_ready``). Folded, it is a flip-flop itself.
    """

    #: Pipeline stages (S0 .. S13), before the output FIFO.
    STAGES = 14

    #: Cycles from an accepted input beat to its output beat on ``o`` (without backpressure), unfolded: the input
    #: register, the pipeline stages and the output FIFO with its output register; :attr:`latency` adds the folding.
    LATENCY = 1 + STAGES + 2

    def __init__(self, lanes=16, *, fold=1):
        check_lanes(lanes)
        if not isinstance(fold, int) or isinstance(fold, bool) or not 0 < fold <= lanes:
            raise ValueError(f"Fold must be a positive integer up to the lane count {lanes}, not {fold!r}")
        self._lanes = lanes
        self._fold = fold
        super().__init__({
            "i":     In(stream.Signature(data.ArrayLayout(signed(32), lanes))),
            "param": In(stream.Signature(Params(lanes))),
            "o":     Out(stream.Signature(data.ArrayLayout(signed(8), lanes))),
            "busy":  Out(1),
            "i_ready_next": Out(1),
        })

    @property
    def lanes(self):
        return self._lanes

    def elaborate(self, platform):
        m = Module()
        fold = self._fold
        width = -(-self._lanes // fold)     # pipeline lanes

        # A beat enters in `fold` parts (:class:`Fold`); the parameters stay put until its last part is in.
        f = Fold(m, fold, platform=platform, aligned=True)
        params = Signal(Params(self._lanes), init={"config": CONFIG_INIT})
        # A parameter beat is loaded from the stream's payload two cycles after it is seen, in the cycle it is
        # accepted, the configuration and each lane's parameters by their own copy of the load flag
        # (`load_offered`). It is seen only where that load cycle is the last part cycle of a beat (the part counter
        # runs freely, `aligned`), so the parts of one beat never see two sets of parameters.
        # The load flag's copies are grouped by pipeline lane (lane `i` is taken by pipeline lane `i % width`): a
        # group of consecutive lanes spread over pipeline lanes across the die (12.5 ns at 16 x 16).
        load_offered(m, self.param, params,
                     [lambda v: v.config, *(lambda v, i=i: v.lanes[i] for i in range(self._lanes))],
                     platform=platform, allowed=1 if fold == 1 else f.phase == (fold - 3) % fold,
                     group=lambda index: 0 if index == 0 else (index - 1) % width)

        stages = self.STAGES
        m.submodules.fifo = fifo = CreditFIFO(data.ArrayLayout(signed(8), self._lanes), self.fifo_depth,
                                              registered=True)
        # `i.ready` = credit and the beat cycle: a flip-flop loaded with the two's next values
        # (`i_ready_next`, for the producer's copies), low in the cycle after reset. The credit's next value is
        # taken as if a beat were accepted whenever `i.ready` is high, so that `i.valid`, which comes from the
        # accumulator's queue across the die, is not in it (on the path back to the copies beside that queue):
        # it only differs when no beat came, and then folded the next cycle is not a beat cycle anyway.
        ready = Signal(name="i_ready")
        take = self.i.valid & self.i.ready
        m.d.comb += [
            fifo.may_reserve.eq(ready),
            self.i.ready.eq(ready),
            fifo.reserve.eq(take),
        ]
        if fold == 1:
            m.d.comb += self.i_ready_next.eq(fifo.credit_next & f.ready_in(2))
        else:
            # Folded, `i_ready_next` is a flip-flop too, loaded two cycles ahead of `i.ready`, so that it reaches
            # the producer's copies across the die with no logic in front (the credit's next value to the
            # accumulator queue's copies: 5.9 ns of routing, 12.4 ns at 16 x 16). No beat can be accepted in the
            # cycle between (`i.ready` is high in one cycle of `fold`), so the credit can only grow in it: the
            # credit of the next cycle stands for the one after, at worst one cycle late while the output queue
            # is full.
            ready_next = Signal(name="i_ready_next_r")
            m.d.sync += ready_next.eq(fifo.credit_next & f.ready_in(3))
            m.d.comb += self.i_ready_next.eq(ready_next)
        m.d.sync += ready.eq(self.i_ready_next)
        wiring.connect(m, fifo.o, wiring.flipped(self.o))
        m.d.comb += self.busy.eq(fifo.busy)
        # The input register (SI), loaded in every cycle (no enable net over its bits) with the payload, and the
        # handshake: a beat is accepted one cycle before its part 0 enters. The beat comes from queues across the
        # die (the accumulator's, the depthwise units'), read from LUT RAM: that read and the routing then end at
        # a flip-flop, not at S0's part multiplexers (13.2 ns at 16 x 16, session 13).
        payload = Signal.like(self.i.payload, name="i_data", reset_less=True)
        took = Signal(name="i_took")
        m.d.sync += [payload.eq(self.i.payload), took.eq(take)]
        entering = f.advance(took)

        p = Stages(m, platform)
        valid = entering
        for stage in range(1, stages + 1):
            valid = p.reg(valid, name=f"valid_s{stage}")
        # The part number travels with the part; the beat enters the FIFO with its last part.
        m.d.comb += fifo.w_en.eq(valid & f.last(p, stages))

        # The shared configuration travels with the beats. No register of it drives all lanes: each lane carries
        # its own copy of the rounding mode from S1 on (:meth:`Stages.copy`, so that synthesis keeps the copies
        # apart), and the output stage's fields travel once for all lanes up to S9, where each lane takes its own
        # copy for S11-S12 (the shared S9 register drives only those copies).
        # S0, the input register: the part that enters (from the accumulator's output queue, through the part
        # multiplexer), its parameters and the configuration. The bias adder of S1 then starts from flip-flops.
        config = p.reg(params.config, name="config_s0")
        out_cfg = data.StructLayout({"output_offset": signed(8), "act_min": signed(8), "act_max": signed(8)})
        shared = Signal(out_cfg)
        m.d.comb += shared.eq(Cat(config.output_offset, config.act_min, config.act_max))
        for stage in range(1, 10):
            shared = p.reg(shared, name=f"cfg_s{stage}")

        # Folded, each pipeline lane takes its accumulator and its parameters for the part entering through
        # multiplexers driven by its own copy of `first`.
        # Elements past the last (when `width` does not divide `lanes`) are zeros with zero parameters.
        def element(k, lane):
            index = k * width + lane
            if index < self._lanes:
                return payload[index], params.lanes[index]
            return Const(0, 32), LaneParams(Const(0, LaneParams.as_shape().size))

        outs = []
        for lane in range(width):
            # The part multiplexer (and the zeros shifted into the rest register, which Yosys makes the reset of
            # its top part: 32 late reset endpoints at 16 x 16) and the parameter multiplexer each have a ring of
            # their own.
            ring = f.ring_copy(f"first_l{lane}") if fold > 1 else None
            first = f.ring_copy(f"part_first_l{lane}")[0] if fold > 1 else 1
            accs, lps = zip(*(element(k, lane) for k in range(fold)))
            acc = p.reg(f.part(Cat(*accs), name=f"rest_l{lane}", first=first), name=f"acc_s0_l{lane}")
            lp = LaneParams(p.reg(f.select(list(lps), ring=ring), name=f"params_s0_l{lane}"))
            # S1: bias add with int32 wrap.
            x = p.reg((acc[:32].as_signed() + lp.bias)[:32].as_signed(), name=f"x_l{lane}")
            mult = p.reg(lp.multiplier, name=f"mult1_l{lane}")
            shift = p.reg(lp.shift, name=f"shift_l{lane}")
            # The left shift of double rounding, `max(shift, 0)`, decoded here so that S2's shift starts from it.
            left = p.reg(Mux(lp.shift > 0, lp.shift.as_unsigned()[:5], 0), shape=unsigned(5), name=f"left_l{lane}")
            # This lane's rounding mode, one register per stage (rounding[k]: stage k).
            rounding = [None, p.copy(config.rounding, name=f"rounding_s1_l{lane}")]
            for stage in range(2, 9):
                rounding.append(p.copy(rounding[-1], name=f"rounding_s{stage}_l{lane}"))

            # S2-S3: double rounding shifts left (wrapping) before multiplying, by a multiple of 8 (S2), then by
            # the rest (S3) (the 32-bit shift by 0-31 in one stage was 21 endpoints up to 11.4 ns at 16 x 16);
            # single rounding folds the shift into the final right shift. `amount` is the right shift applied (in
            # S9) before the last rounding step.
            double = rounding[1] == Rounding.DOUBLE
            left = Mux(double, left, 0)
            a = p.reg((x << Cat(Const(0, 3), left[3:]))[:32].as_signed(), shape=signed(32), name=f"a2_l{lane}")
            fine = p.reg(left[:3], name=f"left2_l{lane}")
            mult = p.reg(mult, name=f"mult2_l{lane}")
            amount = p.reg(Mux(double, Mux(shift < 0, -shift, 0), 30 - shift)[:6], shape=unsigned(6),
                           name=f"amount2_l{lane}")
            a = p.reg((a << fine)[:32].as_signed(), shape=signed(32), name=f"a_l{lane}")
            mult = p.reg(mult, name=f"mult3_l{lane}")
            amount = p.reg(amount, name=f"amount3_l{lane}")

            # S4-S7: the 64-bit product. S4 is the DSPs' operand registers: the routing from the fabric registers
            # into the DSP row ends in a register, not in the multiplier.
            prod, mul_stages = multiply(p, a, mult, name=f"mul_l{lane}", platform=platform, input_registers=True)
            assert mul_stages == 4
            amount = p.delay(amount, mul_stages, name=f"amount_l{lane}")

            # S8: double rounding: high = SaturatingRoundingDoublingHighMul = floor((prod + 2^30) / 2^31)
            # = ((prod >> 30) + 1) >> 1; z = 2 * high feeds the rounding shift of S9-S12 by `amount` + 1. Single
            # rounding: z = prod, shifted by (30 - shift) + 1. TFLite saturates `high` to INT32_MAX for the one
            # product that exceeds it, INT32_MIN * INT32_MIN (high = 2^31); here z has 64 bits, so 2^31 is kept,
            # and no int8 result can tell the two apart: a right shift by `amount` < 24 leaves both above 255 (the
            # clamp gives the same result), and by 24 to 31 both round to 2^(31 - amount). So there is no
            # saturation (its test of 33 product bits in front of the 64 selections of z was 10.2 ns at 16 x 16).
            q = (prod >> 30) + 1
            z_double = Cat(Const(0, 1), q[1:]).as_signed()
            z = p.reg(Mux(rounding[7] == Rounding.DOUBLE, z_double, prod), shape=signed(64),
                      name=f"z_l{lane}")
            amount = p.reg(amount, name=f"amount8_l{lane}")

            # S9-S10: arithmetic right shift (64 bits), by a multiple of 8 (S9) and then by the rest (S10): each
            # stage an 8-to-1 multiplexer per bit rather than one 64-to-1 (the 16 x 16 datapath's requantiser
            # missed 100 MHz there, 12.5 ns). `away` (S9) is this lane's rounding mode for S10.
            away = p.copy(rounding[8], name=f"rounding_s9_l{lane}") == Rounding.DOUBLE
            za, low_zero, fine = shift_right_coarse(z, amount)
            za = p.reg(za, shape=signed(64), name=f"za_l{lane}")
            low_zero = p.reg(low_zero, name=f"low_zero_l{lane}")
            fine = p.reg(fine, name=f"amount9_l{lane}")
            y, carry = rounding_shift_right(za, fine, away, low_zero)
            # y = za >> fine (fine < 8), so y's bits from 17 up (S11's overflow test) are all the sign exactly when
            # za's bits from 17 + fine up are: the whole test is made here, beside the shift, from za's registers
            # (`fits_after_shift`), and S11 only selects (the test after y's register, 16 bits wide, was 11.5 ns at
            # 16 x 16).
            high_fits = p.reg(fits_after_shift(za, [fine > j for j in range(7)]), name=f"high_fits_l{lane}")
            y = p.reg(Cat(y[:32], za[63]), shape=signed(33), name=f"y_l{lane}")
            carry = p.reg(carry, name=f"carry_l{lane}")
            # `cfg` (S10) is this lane's copy of the output stage's fields.
            cfg = p.copy(shared, name=f"cfg_s10_l{lane}")

            # S11: saturation to 18 bits, which keeps every value whose rounded result lands outside the int8 range
            # outside it.
            saturated = Mux(y[-1], -(1 << 17), (1 << 17) - 1)
            sat = p.reg(Mux(high_fits, y[:18], saturated), shape=signed(18), name=f"sat_l{lane}")
            carry = p.reg(carry, name=f"carry11_l{lane}")
            offset = p.reg(cfg.output_offset, name=f"offset11_l{lane}")
            cfg = p.reg(cfg, name=f"cfg_s11_l{lane}")

            # S12: the last rounding step and the zero point.
            w = p.reg(add_offset(sat, carry, offset), shape=signed(20), name=f"w_l{lane}")
            clamp = clamp_bounds(p, cfg, name=f"clamp_l{lane}")

            # S13: clamp.
            outs.append(p.reg(clamp_int8(w >> 1, *clamp), shape=signed(8),
                              name=f"out_l{lane}"))

        p.emit()
        m.d.comb += fifo.w_data.eq(f.assemble(Cat(*outs))[:8 * self._lanes])
        return m
