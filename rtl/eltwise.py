"""Element-wise ADD of two int8 vectors with TFLite's int8 ADD arithmetic.

Per lane, bit-exactly with :func:`haneul.sim.golden.kernels.add`::

    scaled_k = MultiplyByQuantizedMultiplierSmallerThanOneExp((x_k + offset_k) << left_shift, multiplier_k, shift_k)
    raw      = scaled_1 + scaled_2
    out      = clamp(MultiplyByQuantizedMultiplierSmallerThanOneExp(raw, output_multiplier, output_shift)
                     + output_offset, act_min, act_max)

``MultiplyByQuantizedMultiplierSmallerThanOneExp`` is ``SaturatingRoundingDoublingHighMul`` followed by
``RoundingDivideByPOT(-shift)``. See ``docs/ppu.md``.
"""

from amaranth.hdl import Cat, Const, Mux, Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .fold import Fold, FoldedTiming
from .ppu import (CONFIG_INIT, CreditFIFO, Stages, add_offset, check_lanes, clamp_bounds, clamp_int8,
                  fits_after_shift, load_staged, multiply, rounding_shift_right, shift_right_coarse)

__all__ = ["InputParams", "Params", "Adder"]


class InputParams(data.Struct):
    """Rescaling of one input of the addition.

    Members
    -------
    offset : signed(9)
        Negated input zero point (``-zero_point``, in ``[-127, 128]``).
    multiplier : signed(32)
        Q0.31 significand from ``QuantizeMultiplierSmallerThanOneExp``.
    shift : signed(6)
        Its exponent, in ``[-31, 0]``.
    """
    offset:     signed(9)
    multiplier: signed(32)
    shift:      signed(6)


class Params(data.Struct):
    """Parameters of an ADD operation (:class:`haneul.sim.golden.params.AddParams` without ``left_shift``).

    Members
    -------
    input1, input2 : InputParams
        Rescaling of each input.
    output_offset : signed(8)
        Output zero point.
    output_multiplier : signed(32)
        Q0.31 significand of the output rescaling.
    output_shift : signed(6)
        Its exponent, in ``[-31, 0]``.
    act_min, act_max : signed(8)
        Clamp bounds of the fused activation.
    """
    input1:            InputParams
    input2:            InputParams
    output_offset:     signed(8)
    output_multiplier: signed(32)
    output_shift:      signed(6)
    act_min:           signed(8)
    act_max:           signed(8)


class Adder(FoldedTiming, wiring.Component):
    """Element-wise ADD of two streams of int8 vectors.

    A beat is consumed from ``a`` and ``b`` together (both ``ready`` rise only when both are ``valid``). Parameters
    are loaded through the ``param`` stream: a parameter beat applies to every pair of input beats accepted after
    it (the parameters travel with the beats through the pipeline); while ``param.valid`` is high no input is
    accepted, and ``param.ready`` is always high. After reset the parameters are zero, with the clamp bounds -128
    and 127.

    The datapath is a pipeline of :attr:`STAGES` stages that never stalls, then an output FIFO with credits
    (:class:`~haneul.rtl.credit.CreditFIFO`): one beat per cycle (one per ``fold`` cycles when folded), correct
    under any pattern of valid and ready gaps.

    With ``fold > 1`` the pipeline is ``lanes // fold`` lanes wide and a beat goes through it in ``fold`` parts on
    consecutive cycles (:class:`~haneul.rtl.fold.Fold`): part 0 (lanes ``0 .. lanes // fold - 1``) straight from the inputs in the cycle the beat is
    accepted, the other parts from a register that keeps the rest of the beat. The parts leave the pipeline on
    consecutive cycles and the output beat is assembled from them. The unit then takes a beat every ``fold``
    cycles, its latency is :attr:`latency` ``= LATENCY + fold - 1``, and it needs ``fold`` times fewer multipliers
    (8 ECP5 DSP blocks per pipeline lane). ``param.ready`` is low while the parts of a beat are entering.

    Parameters
    ----------
    lanes : int
        Number of int8 elements per beat.
    left_shift : int
        Headroom shift of the inputs before rescaling: 20 for int8 in TFLite. At most 22, so that the rescaled
        inputs and their sum stay within int32 (as TFLite requires).
    fold : int
        Cycles per beat: a divisor of ``lanes``. Default 1 (one beat per cycle, ``lanes`` pipeline
        lanes).

    Attributes
    ----------
    a, b : In(stream.Signature(data.ArrayLayout(signed(8), lanes)))
        The two operands.
    param : In(stream.Signature(Params))
        Parameter loads.
    o : Out(stream.Signature(data.ArrayLayout(signed(8), lanes)))
        The sums.
    busy : Out(1)
        Results are owed: operand pairs accepted and not yet sent on ``o`` (the output queue's credit count).
    """

    #: Pipeline stages (S0 .. S15), before the output FIFO.
    STAGES = 16

    #: Cycles from an accepted pair of input beats to its output beat on ``o`` (without backpressure), unfolded:
    #: the pipeline stages and the output FIFO with its output register; :attr:`latency` adds the folding.
    LATENCY = STAGES + 2

    def __init__(self, lanes=16, *, left_shift=20, fold=1):
        check_lanes(lanes)
        if not isinstance(left_shift, int) or isinstance(left_shift, bool) or not 0 <= left_shift <= 22:
            raise ValueError(f"Left shift must be an integer in [0, 22], not {left_shift!r}")
        if not isinstance(fold, int) or isinstance(fold, bool) or fold <= 0 or lanes % fold:
            raise ValueError(f"Fold must be a positive integer dividing the lane count {lanes}, not {fold!r}")
        self._lanes = lanes
        self._left_shift = left_shift
        self._fold = fold
        vector = stream.Signature(data.ArrayLayout(signed(8), lanes))
        super().__init__({
            "a":     In(vector),
            "b":     In(vector),
            "param": In(stream.Signature(Params)),
            "o":     Out(vector),
            "busy":  Out(1),
        })

    @property
    def lanes(self):
        return self._lanes

    @property
    def left_shift(self):
        return self._left_shift

    def elaborate(self, platform):
        m = Module()
        fold = self._fold
        width = self._lanes // fold     # pipeline lanes

        params = Signal(Params, init=CONFIG_INIT)
        vector = data.ArrayLayout(signed(8), self._lanes)
        m.submodules.fifo = fifo = CreditFIFO(vector, self.fifo_depth, registered=True)
        wiring.connect(m, fifo.o, wiring.flipped(self.o))
        m.d.comb += self.busy.eq(fifo.busy)
        # A beat enters in `fold` parts (:class:`Fold`); the parameters stay put until its last part is in.
        f = Fold(m, fold)
        m.d.comb += self.param.ready.eq(f.ready)
        # A parameter beat is loaded two cycles after it is accepted, each field by its own copy of the load flag
        # (`ppu.load_staged`: no single enable net reaches every parameter bit); no beat is accepted in between.
        pending = load_staged(m, self.param, params,
                              [lambda v, field=field: v[field] for field in Params.as_shape().members],
                              platform=platform)

        take = Signal()
        m.d.comb += [
            take.eq(fifo.credit & self.a.valid & self.b.valid & ~self.param.valid & ~pending & f.ready),
            self.a.ready.eq(take),
            self.b.ready.eq(take),
            fifo.reserve.eq(take),
        ]
        entering = f.advance(take)

        # S0, the input register: the part entering the pipeline (from the scratchpad's response queues, through
        # the part multiplexer). The offset adders of S1 then start from flip-flops.
        p = Stages(m)
        in_a = p.reg(f.part(self.a.payload, name="rest_a"), shape=data.ArrayLayout(signed(8), width), name="in_a")
        in_b = p.reg(f.part(self.b.payload, name="rest_b"), shape=data.ArrayLayout(signed(8), width), name="in_b")
        valid = entering
        for stage in range(1, self.STAGES + 1):
            valid = p.reg(valid, name=f"valid_s{stage}")
        # The part number travels with the part; the output beat is complete when its last part arrives.
        m.d.comb += fifo.w_en.eq(valid & f.last(p, self.STAGES))

        # The parameters travel with the beats; each stage keeps what later stages read.
        cfg = params
        cfgs = {}
        for stage in range(1, self.STAGES):
            cfg = cfgs[stage] = p.reg(cfg, name=f"cfg_s{stage}")

        shift = self._left_shift
        clamp = clamp_bounds(p, cfgs[14], name="clamp")
        outs = []
        for lane in range(width):
            scaled = []
            for name, x, inp in (("a", in_a[lane], 1), ("b", in_b[lane], 2)):
                # S1: input offset.
                value = p.reg(x + cfgs[1][f"input{inp}"].offset, name=f"{name}_off_l{lane}")
                # S2-S3: (x + offset) * multiplier; the left shift is applied to the rounding below.
                prod, stages = multiply(p, value, cfgs[2][f"input{inp}"].multiplier, name=f"{name}_mul_l{lane}",
                                        platform=platform)
                assert stages == 2
                # S4: SaturatingRoundingDoublingHighMul(v << L, M) = floor((v*M*2^L + 2^30) / 2^31)
                # = ((v*M >> (30 - L)) + 1) >> 1; it cannot saturate (|v << L| < 2^31). z = 2 * high.
                q = (prod >> (30 - shift)) + 1
                z = p.reg(Cat(Const(0, 1), q[1:]).as_signed(), shape=signed(32), name=f"{name}_z_l{lane}")
                amount = p.reg((-cfgs[4][f"input{inp}"].shift)[:5], name=f"{name}_amount_l{lane}")
                # S5-S7: RoundingDivideByPOT(high, -shift_k), the shift split in two (`shift_right_coarse`): S5
                # shifts by the multiple of 8 and tests the bits that drops, S6 shifts by the rest and makes the
                # round bit (one 32-bit shift by 0-31 and its exact-half test in one stage was 11.4 ns at 16 x 16).
                za, low_zero, fine = shift_right_coarse(z, amount)
                za = p.reg(za, shape=signed(32), name=f"{name}_za_l{lane}")
                low_zero = p.reg(low_zero, name=f"{name}_low_zero_l{lane}")
                fine = p.reg(fine, name=f"{name}_fine_l{lane}")
                y, carry = rounding_shift_right(za, fine, 1, low_zero)
                y = p.reg(y, shape=signed(32), name=f"{name}_y_l{lane}")
                carry = p.reg(carry, name=f"{name}_carry_l{lane}")
                scaled.append(p.reg((y + carry) >> 1, shape=signed(32), name=f"{name}_scaled_l{lane}"))

            # S8: the raw sum (|raw| < 2^31 for left_shift <= 22).
            raw = p.reg(scaled[0] + scaled[1], shape=signed(32), name=f"raw_l{lane}")
            # S9-S11: raw * output_multiplier.
            prod, stages = multiply(p, raw, cfgs[9].output_multiplier, name=f"out_mul_l{lane}", platform=platform)
            assert stages == 3
            # S12: SaturatingRoundingDoublingHighMul (raw is never INT32_MIN: no saturation); z = 2 * high.
            q = (prod >> 30) + 1
            z = p.reg(Cat(Const(0, 1), q[1:]).as_signed(), shape=signed(34), name=f"out_z_l{lane}")
            out_shift = (-cfgs[12].output_shift)[:5]
            amount = p.reg(out_shift, name=f"out_amount_l{lane}")
            # (which of z's bits 17-33 y = z >> amount keeps above its bit 17: bit k unless amount > k - 17)
            dropped = p.reg(Cat(*(out_shift > k for k in range(17))), name=f"out_dropped_l{lane}")
            # S13-S15: RoundingDivideByPOT(high, -output_shift) (shift; saturation to 18 bits, last rounding step and
            # zero point), clamp. y's bits from 17 up are all the sign exactly when z's kept bits from 17 up are:
            # that overflow test is made in S13 from z, beside the shift, so S14 only selects before its adder (the
            # test after y's register, then the adder, was 10.2 ns at 16 x 16).
            y, carry = rounding_shift_right(z, amount, 1)
            fits = p.reg(fits_after_shift(z, dropped), name=f"out_fits_l{lane}")
            y = p.reg(y, shape=signed(34), name=f"out_y_l{lane}")
            carry = p.reg(carry, name=f"out_carry_l{lane}")
            sat = Mux(fits, y[:18], Mux(y[-1], -(1 << 17), (1 << 17) - 1))[:18].as_signed()
            w = p.reg(add_offset(sat, carry, cfgs[14].output_offset), shape=signed(20), name=f"out_w_l{lane}")
            outs.append(p.reg(clamp_int8(w >> 1, *clamp), shape=signed(8),
                              name=f"out_l{lane}"))

        p.emit()
        # The beat enters the FIFO with its last part, the pipeline's output register.
        m.d.comb += fifo.w_data.eq(f.assemble(Cat(*outs)))
        return m
