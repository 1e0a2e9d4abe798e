"""Processing element of the weight-stationary systolic array, and the multiplier types it can be built with.

A processing element (PE) holds one weight of the current tile and performs one multiply-accumulate per cycle::

            psum_in (from the PE above, 4 cycles after act_in)
                  |
    act_in ---> [ PE ] ---> act_out (to the PE on the right, one cycle later)
                  |
            psum_out = psum_in + act_in.value * weight   (to the PE below, 5 cycles after act_in)

The multiply-accumulate is pipelined in five register stages so that a DSP block has registers on both sides and
a LUT multiplier never has two carry chains in series: (1) the activation (``act_out``) and the weight in use
(``active``), (2)-(4) the product through three registers (:meth:`Multiplier.pipelined_product`: a DSP block's
output register, then two fabric copies that take it out of its DSP row; the ``chain`` type registers its row pairs,
then their sums down to two terms, then the product), (5) the partial sum. Each PE delays the activation by one
cycle and the partial sum by one cycle, so the skewed wavefront of the array is unchanged; only the fill latency
grows by four cycles.

The weight register is double-buffered: a *shadow* weight is written through ``w_load``/``w_data`` while the
*active* weight keeps computing. The swap is not a global signal: the ``swap`` bit travels with the activation that
starts the new tile (the same skewed wavefront as the data), so each PE switches to the new weight exactly when the
first activation of the new tile reaches it, and the activations of the old tile still in flight to its right and
below keep using the old weight. Since ``active`` is updated in the cycle the activation arrives, the register
pair (``act_out``, ``active``) holds exactly the operands of that activation's product in the next cycle, and the
multiplier reads registers only.

*PE types.* How the product is built is a :class:`Multiplier`, chosen per PE by name from :data:`MULTIPLIERS`:

``"dsp"``
    ``act * weight``: Yosys maps the ``$mul`` cell to a DSP block. When elaborated for an ECP5 platform (any
    ``platform`` with ``family == "ecp5"``) the PE instantiates ``MULT18X18D`` itself, with its output register as
    the product register, so that no fabric routing sits between the multiplier and that register.
``"lut"``
    Shift-and-add: one row ``act << i`` per weight bit ``i``, the sign row (weight ``-2**(width-1)``) subtracted,
    summed in a balanced tree of adders (carry chains). No ``$mul`` cell: it always lands in LUTs.
``"booth"``
    Radix-4 Booth: the stationary weight is recoded into ``ceil(width / 2)`` digits in ``{-2, -1, 0, 1, 2}`` when it
    is loaded (the shadow and active registers hold the digits), so each cycle only selects ``0, +-act, +-2 act``
    per digit and sums half as many rows. No ``$mul`` cell either.
``"chain"``
    Shift-and-add as ``"lut"``, but each pair of rows is added by one carry chain whose LUTs also select the two
    rows (on ECP5: ``CCU2C`` cells, :mod:`haneul.rtl.carry`), and every adder is as wide as its bound: the fewest
    LUTs of the three. No ``$mul`` cell.

The PE has no stall input: the array never stalls its pipeline (see :mod:`haneul.rtl.systolic`).
"""

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Module, Mux, ResetSignal, Shape, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .carry import Row, add_levels, add_terms, is_ecp5, kept, row_pair

__all__ = ["ActivationLayout", "Multiplier", "DSPMultiplier", "ShiftAddMultiplier", "BoothMultiplier",
           "MULTIPLIERS", "get_multiplier", "ProcessingElement"]


class ActivationLayout(data.StructLayout):
    """One activation element as it travels through a row of PEs.

    Parameters
    ----------
    width : int
        Width of the activation value in bits.

    Members
    -------
    value : signed(width)
        The activation.
    swap : unsigned(1)
        This activation is the first of a new tile: the PE switches its active weight to the shadow weight for this
        multiply and every following one.
    """

    def __init__(self, width=8):
        super().__init__({"value": signed(width), "swap": 1})


# Multiplier types ---------------------------------------------------------------------------------------------------

def register_copy(m, value, *, name, platform, enable=None, init=None, shape=None):
    """A register loading ``value`` (every cycle, or where ``enable`` is high; reset to ``init``, no reset if
    ``None``) that stays a register of its own: one of several copies of the same value, each near the logic it
    drives, that together spread a fan-out too wide for one register.

    ``value`` may also be a function of the register itself, with ``shape`` its shape: each copy then computes its
    own next value (a counter, say) from its own output, next to itself, instead of loading one shared result.

    Yosys merges flip-flops with the same inputs, so for an ECP5 platform each bit is a ``TRELLIS_FF`` instance,
    which it leaves alone (the domain's reset then goes into its data input); elsewhere, and for platforms that only
    stand in for ECP5 in simulations (``platform.simulated``), it is an ordinary register.
    """
    if shape is None:
        shape = value.shape()
    if init is None:
        sig = Signal(shape, name=name, reset_less=True)
    else:
        sig = Signal(shape, name=name, init=init)
    if callable(value):
        value = value(sig)
    if not is_ecp5(platform) or getattr(platform, "simulated", False):
        if enable is None:
            m.d.sync += sig.eq(value)
        else:
            with m.If(enable):
                m.d.sync += sig.eq(value)
        return sig
    if init is None:
        data_in, load = value, enable
    else:
        data_in = Mux(ResetSignal(), init, value)
        load = None if enable is None else enable | ResetSignal()
    d, q = Cat(data_in), Cat(sig)
    for k in range(len(q)):
        ports = dict(i_CLK=ClockSignal(), i_LSR=Const(0, 1), i_DI=d[k], o_Q=q[k])
        if load is not None:
            ports["i_CE"] = load
        m.submodules[f"{name}_{k}"] = Instance(
            "TRELLIS_FF", p_GSR="DISABLED" if init is None else "AUTO", p_CEMUX="1" if load is None else "CE",
            p_CLKMUX="CLK", p_LSRMUX="LSR", p_REGSET="SET" if (init or 0) >> k & 1 else "RESET", **ports)
    return sig


def _reduce(m, terms, name, until=1):
    """Add adjacent terms (a list of ``(value, negate)``) pairwise, level by level, until ``until`` or fewer remain.

    Each two-input adder or subtractor is one carry chain. Only the last term may be negated; adjacent terms are
    paired, so it is always the right operand of its subtractor (or stays last).
    """
    level = 0
    while len(terms) > until:
        paired = []
        for i in range(0, len(terms) - 1, 2):
            (a, neg_a), (b, neg_b) = terms[i], terms[i + 1]
            assert not neg_a
            paired.append((kept(m, a - b if neg_b else a + b, f"{name}_l{level}_{i // 2}"), False))
        if len(terms) % 2:
            paired.append(terms[-1])
        terms = paired
        level += 1
    return terms


def _total(m, terms, name):
    """Sum of ``terms`` (a list of ``(value, negate)``) as a balanced adder tree."""
    (value, negate), = _reduce(m, terms, name)
    return -value if negate else value


#: Register stages of a PE's product (:meth:`Multiplier.pipelined_product`), between the operand registers and the
#: partial-sum register.
PRODUCT_STAGES = 3


class Multiplier:
    """A way to multiply an activation by the stationary weight of a PE: one *PE type*.

    A type decides how a weight is stored in the PE (``weight_shape``, ``encode``: any recoding is done once, when
    the weight is loaded into the shadow register, off the multiply path) and how the product is built from an
    activation and a stored weight (``product``). The PE registers both operands before the product and the product
    after it (``registered_product``, which a type may override to use a register inside a hard block), so
    ``product`` has a whole clock cycle; the product then goes through two more registers before the partial sum
    (``pipelined_product``, which a type may override to spread its logic over the three stages).

    Subclass it and add an instance to :data:`MULTIPLIERS` to add a PE type; ``docs/fpga.md`` walks through it.

    Attributes
    ----------
    name : str
        Key in :data:`MULTIPLIERS`.
    uses_dsp : bool
        The product maps to a DSP block. :class:`~haneul.rtl.config.DatapathConfig` counts these PEs against its
        ``dsp_pes`` budget and picks among the others for ``lut_mult``.
    """

    name = None
    uses_dsp = False

    def weight_shape(self, width) -> Shape:
        """Shape of a ``width``-bit weight as stored in the PE. Default: ``signed(width)``."""
        return signed(width)

    def encode(self, weight):
        """Stored form of ``weight`` (a ``signed(width)`` value), a value of :meth:`weight_shape`. Default: as is."""
        return weight

    def product(self, m, act, stored):
        """The product ``act * weight``, ``signed(2 * width)`` bits (or wider; the PE truncates).

        Parameters
        ----------
        m : Module
            Module of the PE; helper signals and combinational statements may be added to it.
        act : Value, signed(width)
            The activation (a register).
        stored : Value, weight_shape(width)
            The stored weight (a register).
        """
        raise NotImplementedError

    def registered_product(self, m, act, stored, platform):
        """The product through one register: in each cycle, ``act * weight`` of the operands of the cycle before.

        :meth:`pipelined_product` starts with it. The default registers :meth:`product` in fabric flip-flops (without reset); a type can
        override it to use a register inside a hard block for some ``platform``.

        Returns
        -------
        Value, signed(2 * width)
        """
        width = len(act)
        register = Signal(signed(2 * width), name="product", reset_less=True)
        m.d.sync += register.eq(self.product(m, act, stored)[:2 * width].as_signed())
        return register

    def pipelined_product(self, m, act, stored, platform):
        """The product through :attr:`PRODUCT_STAGES` (3) registers: the PE's stages 2 to 4.

        The PE calls this one. The default is :meth:`registered_product`, then two fabric copies of the product (a
        DSP block's output register sits in its DSP row, often far from the partial-sum chain of its column; a LUT
        type's last adder after its register gets the cycle of the first copy). A type overrides it to spread
        its logic over the three stages differently.
        """
        product = self.registered_product(m, act, stored, platform)
        for stage in range(1, PRODUCT_STAGES):
            register = Signal(product.shape(), name=f"product_d{stage}", reset_less=True)
            m.d.sync += register.eq(product)
            product = register
        return product

    def __repr__(self):
        return f"{type(self).__name__}()"


class DSPMultiplier(Multiplier):
    """``act * weight`` as one ``$mul`` cell, which Yosys maps to a DSP block (``MULT18X18D`` on ECP5).

    Yosys maps ``$mul`` to a combinational ``MULT18X18D`` and leaves the product register in the fabric: on an
    ECP5-85F the routing into and out of the DSP row then costs about 6 ns of the 10 ns cycle. For an ECP5 platform
    :meth:`registered_product` therefore instantiates the ``MULT18X18D`` with its output register enabled
    (``REG_OUTPUT_CLK = "CLK0"``, no reset, always enabled), which is the same register in the same place of the
    pipeline. Operands wider than 18 bits fall back to ``*``.
    """

    name = "dsp"
    uses_dsp = True

    def product(self, m, act, stored):
        return act * stored

    def registered_product(self, m, act, stored, platform):
        width = len(act)
        if not is_ecp5(platform) or width > 18 or len(stored) > 18:
            return super().registered_product(m, act, stored, platform)
        return mult18x18d(m, act, stored, name="dsp")[:2 * width].as_signed()


def mult18x18d(m, a, b, *, name, input_registers=False):
    """An ECP5 ``MULT18X18D`` instance (submodule ``name`` of ``m``): the signed product of ``a`` and ``b`` (at most
    18 bits each, sign-extended) through the block's output register, and with ``input_registers`` through its
    operand registers too (two cycles instead of one). Every register is always enabled and has no reset, so the
    instance only fits a pipeline that never stalls. Returns the 36-bit product (a ``signed(36)`` value).
    """
    a, b = a.as_signed(), b.as_signed()
    if len(a) > 18 or len(b) > 18:
        raise ValueError("MULT18X18D operands have at most 18 bits")
    p = Signal(36, name=f"{name}_p")
    ports = {}
    for i in range(18):
        ports[f"i_A{i}"] = a[min(i, len(a) - 1)]          # sign-extended to 18 bits (SIGNEDA)
        ports[f"i_B{i}"] = b[min(i, len(b) - 1)]
        ports[f"i_C{i}"] = Const(0, 1)
    for i in range(36):
        ports[f"o_P{i}"] = p[i]
    inputs = "CLK0" if input_registers else "NONE"
    m.submodules[name] = Instance(
        "MULT18X18D",
        p_REG_INPUTA_CLK=inputs, p_REG_INPUTB_CLK=inputs, p_REG_INPUTC_CLK="NONE", p_REG_PIPELINE_CLK="NONE",
        p_REG_OUTPUT_CLK="CLK0", p_REG_OUTPUT_CE="CE0", p_REG_OUTPUT_RST="RST0",
        p_GSR="DISABLED", p_RESETMODE="SYNC", p_MULT_BYPASS="DISABLED",
        i_SIGNEDA=Const(1, 1), i_SIGNEDB=Const(1, 1), i_SOURCEA=Const(0, 1), i_SOURCEB=Const(0, 1),
        i_CLK0=ClockSignal(), i_CE0=Const(1, 1), i_RST0=Const(0, 1),
        **ports)
    return p.as_signed()


class _TreeMultiplier(Multiplier):
    """A LUT multiplier whose rows are summed by a tree of two-input adders.

    :meth:`_partial` reduces the rows to two terms (three for Booth: the last digit's sign correction, one bit);
    :meth:`registered_product` registers those and adds them after the register, in the PE's third stage (the
    product's first fabric register), which then has one or two carry chains, as the stage before it.
    """

    def _partial(self, m, act, stored):
        """The product as one or two terms ``(value, negate)``."""
        raise NotImplementedError

    def product(self, m, act, stored):
        return _total(m, self._partial(m, act, stored), f"{self.name}_sum")

    def registered_product(self, m, act, stored, platform):
        registered = []
        for i, (value, negate) in enumerate(self._partial(m, act, stored)):
            register = Signal(value.shape(), name=f"{self.name}_q{i}", reset_less=True)
            m.d.sync += register.eq(value)
            registered.append((register, negate))
        return _total(m, registered, f"{self.name}_sum")


class ShiftAddMultiplier(_TreeMultiplier):
    """Signed shift-and-add multiplier in LUTs and carry chains.

    With the weight in two's complement, ``w = -2**(n-1) w[n-1] + sum(2**i w[i] for i < n-1)``, so the product is
    the sum of the rows ``(act if w[i] else 0) << i`` with the last (sign) row subtracted. The ``n`` rows are summed
    by a balanced tree of ``n - 1`` adders (``ceil(log2 n)`` carry chains deep; 3 for int8); the subtraction's
    ``+1`` is the carry input of its chain. The selection ``act & w[i]`` is one LUT4 per bit. In the PE, the tree is
    registered before its last adder (2 chains before the register, 1 after, for int8).
    """

    name = "lut"

    def _partial(self, m, act, stored):
        width = len(stored)
        act = act.as_signed()
        rows = [(Mux(stored[i], act, 0).as_signed() << i, i == width - 1) for i in range(width)]
        return _reduce(m, rows, "shift_add", until=2)


class BoothMultiplier(_TreeMultiplier):
    """Radix-4 Booth multiplier in LUTs and carry chains, with the weight recoded when it is loaded.

    The weight ``w`` (``n`` bits, sign-extended to an even width) is the sum of ``ceil(n/2)`` digits
    ``d[i] = -2 w[2i+1] + w[2i] + w[2i-1]`` (``w[-1] = 0``) times ``4**i``, each ``d[i]`` in ``{-2, -1, 0, 1, 2}``.
    :meth:`encode` stores each digit as three bits (``one``: ``|d| = 1``, ``two``: ``|d| = 2``, ``neg``: ``d < 0``),
    so the shadow and active registers hold ``3 ceil(n/2)`` bits instead of ``n``.

    Each cycle, row ``i`` is ``X[i] = (|d[i]| * act) XOR neg[i]`` (``n + 1`` bits, one 5-input LUT per bit), which is
    ``d[i] * act - neg[i]``; the missing ``neg[i]`` is put in a vacant low bit of row ``i + 1`` (which starts two bits
    higher) and the last one added to the last partial sum. Half as many rows as :class:`ShiftAddMultiplier`, but
    wider ones and one more adder for that last correction.
    """

    name = "booth"

    def _digits(self, width):
        return (width + 1) // 2

    def weight_shape(self, width):
        return unsigned(3 * self._digits(width))

    def encode(self, weight):
        width = len(weight)
        bit = lambda j: Const(0, 1) if j < 0 else weight[min(j, width - 1)]  # sign-extended, w[-1] = 0
        digits = []
        for i in range(self._digits(width)):
            lo, mid, hi = bit(2 * i - 1), bit(2 * i), bit(2 * i + 1)
            one = mid ^ lo                                   # d = +-1: exactly one of w[2i], w[2i-1]
            two = (hi & ~mid & ~lo) | (~hi & mid & lo)       # d = +-2: 100 or 011
            neg = hi & ~(mid & lo)                           # d < 0: 1xx except 111 (d = 0)
            digits.append(Cat(one, two, neg))
        return Cat(*digits)

    def _partial(self, m, act, stored):
        width = len(act)
        act = act.as_signed()
        double = Cat(Const(0, 1), act).as_signed()          # 2 * act, width + 1 bits
        rows, negs = [], []
        for i in range(self._digits(width)):
            one, two, neg = stored[3 * i], stored[3 * i + 1], stored[3 * i + 2]
            magnitude = Mux(one, act, Mux(two, double, 0))   # |d| * act, width + 1 bits
            x = (magnitude.as_unsigned() ^ neg.replicate(width + 1)).as_signed()
            # Row i lives at bit 2i; rows after the first carry the previous row's +neg in their vacant bit 2i - 2.
            rows.append((x if i == 0 else Cat(negs[-1], Const(0, 1), x).as_signed() << (2 * i - 2), False))
            negs.append(neg)
        terms = _reduce(m, rows, "booth", until=2)
        # The last digit's +neg has no next row to ride in: a third, one-bit term, added after the register.
        terms.append((negs[-1] << (2 * len(negs) - 2), False))
        return terms


class CarryChainMultiplier(Multiplier):
    """Signed shift-and-add multiplier whose rows are selected inside the carry chains that add them.

    The rows are :class:`ShiftAddMultiplier`'s, ``(act if w[i] else 0) << i`` with the sign row subtracted, but
    paired in the first adders by :func:`~haneul.rtl.carry.row_pair`: on ECP5 each pair is one carry chain whose
    LUT4s also select their two rows (``act & w[i]``), so the rows cost no LUTs of their own; the sign row pairs
    with row ``n - 2`` (both multiply the same activation, so their sum is bounded by the larger). The pairs are
    added by :func:`~haneul.rtl.carry.add_levels`, neighbours by shift, each adder only as wide as its bound: for
    int8 four chains of 10 bits, two of 10 and, after the product register, one of 12 (about 72 LUT4 in carry
    chains, against about 116
    for :class:`BoothMultiplier`, whose 5-input row bits need two LUT4s each). The stored weight is the weight
    itself. Elaborated for anything but ECP5 (or for :class:`~haneul.rtl.carry.CarryChainModel`, which simulates
    the ECP5 cells) the pairs are plain arithmetic.
    """

    name = "chain"

    def _pairs(self, m, act, stored, platform):
        """The rows in pairs (one carry chain each), as terms ``(value, shift, bound)`` (``value * 2**shift``,
        ``|value| <= bound``)."""
        n = len(stored)
        act = act.as_signed()
        x_bound = 1 << (n - 1)                          # |act| <= 2**(n-1)
        rows = [Row(act, stored[i], i) for i in range(n - 1)]
        sign = Row(act, stored[n - 1], n - 1, negate=True)
        terms = [row_pair(m, sign, rows[n - 2], x_bound << (n - 1), "chain_ps", platform)]
        for i in range(0, n - 2, 2):
            if i + 1 < n - 2:
                bound = (x_bound << i) + (x_bound << (i + 1))
                terms.append(row_pair(m, rows[i], rows[i + 1], bound, f"chain_p{i // 2}", platform))
            else:
                terms.append((rows[i].value() >> i, i, x_bound))
        return terms

    @staticmethod
    def _to_two(m, terms):
        """``terms`` added down to at most two (one carry chain deep for int8)."""
        return add_levels(m, terms, max(0, (len(terms) - 1).bit_length() - 1), "chain")

    def _terms(self, m, act, stored, platform):
        """The product as at most two terms ``(value, shift, bound)``."""
        return self._to_two(m, self._pairs(m, act, stored, platform))

    @staticmethod
    def _sum(m, terms, width):
        if len(terms) == 2:
            terms = [add_terms(m, *terms, "chain_sum")]
        (value, shift, _), = terms
        return (value.as_signed() << shift)[:2 * width].as_signed()

    def product(self, m, act, stored):
        return self._sum(m, self._terms(m, act, stored, None), len(act))

    @staticmethod
    def _register(m, terms, name):
        registered = []
        for i, (value, shift, bound) in enumerate(terms):
            register = Signal(value.shape(), name=f"{name}{i}", reset_less=True)
            m.d.sync += register.eq(value)
            registered.append((register, shift, bound))
        return registered

    def registered_product(self, m, act, stored, platform):
        return self._sum(m, self._register(m, self._terms(m, act, stored, platform), "chain_q"), len(act))

    def pipelined_product(self, m, act, stored, platform):
        """Row pairs (stage 2), their sums down to two terms (stage 3), the product (stage 4): one carry chain
        per stage (two in series, the pairs and their first sums, took 10.2-11.1 ns in the 16 x 16 datapath)."""
        pairs = self._register(m, self._pairs(m, act, stored, platform), "chain_pq")
        two = self._register(m, self._to_two(m, pairs), "chain_q")
        product = Signal(signed(2 * len(act)), name="product", reset_less=True)
        m.d.sync += product.eq(self._sum(m, two, len(act)))
        return product


#: The PE types by name. ``"dsp"`` is the only one that uses DSP blocks.
MULTIPLIERS = {mult.name: mult for mult in (DSPMultiplier(), ShiftAddMultiplier(), BoothMultiplier(),
                                            CarryChainMultiplier())}


def get_multiplier(mult):
    """The :class:`Multiplier` named ``mult`` in :data:`MULTIPLIERS`, or ``mult`` itself if it is one."""
    if isinstance(mult, Multiplier):
        return mult
    if isinstance(mult, str) and mult in MULTIPLIERS:
        return MULTIPLIERS[mult]
    raise ValueError(f"Multiplier type must be one of {', '.join(map(repr, MULTIPLIERS))} or a Multiplier, "
                     f"not {mult!r}")


# Processing element -------------------------------------------------------------------------------------------------

class ProcessingElement(wiring.Component):
    """int8 x int8 multiply, int32 accumulate, with a double-buffered stationary weight.

    All outputs are registered. ``act_out`` follows ``act_in`` by one cycle. ``psum_out`` follows ``act_in`` by
    :attr:`LATENCY` (5) cycles and ``psum_in`` by one: for an activation on ``act_in`` in cycle ``t``, ``psum_out``
    in cycle ``t + 4`` is ``psum_in`` of cycle ``t + 3`` plus ``act_in.value * weight``. That is the timing of the PE
    above, so PEs chain down a column. Accumulation wraps modulo ``2**acc_width`` (it cannot overflow when the
    array's :class:`~haneul.rtl.config.DatapathConfig` validated ``acc_width`` against the row count).

    The data registers (activation value, weights, product, partial sum) have no reset; the ``swap`` marker has.

    Parameters
    ----------
    input_width : int
        Width of activations and weights in bits. Default 8.
    acc_width : int
        Width of partial sums in bits. Default 32.
    mult : str or Multiplier
        PE type: a key of :data:`MULTIPLIERS` (``"dsp"``, ``"lut"``, ``"booth"``, ``"chain"``) or a
        :class:`Multiplier`.
        Default ``"dsp"``.

    Members
    -------
    act_in : In(ActivationLayout(input_width))
        Activation from the left, with its ``swap`` marker.
    act_out : Out(ActivationLayout(input_width))
        ``act_in`` delayed by one cycle, to the PE on the right.
    psum_in : In(signed(acc_width))
        Partial sum from the PE above (0 for the top row), three cycles after the activation.
    psum_out : Out(signed(acc_width))
        ``psum_in + act_in.value * weight``, to the PE below.
    w_load : In(1)
        Write ``w_data`` into the shadow weight at the end of this cycle.
    w_data : In(signed(input_width))
        Next weight.

    Attributes
    ----------
    mult : Multiplier
        The PE type.
    active : Signal(mult.weight_shape(input_width))
        The weight in use, as stored (exposed for tests and debugging).
    shadow : Signal(mult.weight_shape(input_width))
        The weight of the next tile, as stored.
    """

    #: Cycles from ``act_in`` to the ``psum_out`` it contributes to.
    LATENCY = 2 + PRODUCT_STAGES

    def __init__(self, *, input_width=8, acc_width=32, mult="dsp"):
        for name, value in (("Input width", input_width), ("Accumulator width", acc_width)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an integer, not {value!r}")
            if value < 2:
                raise ValueError(f"{name} must be at least 2 bits, not {value!r}")
        if acc_width < 2 * input_width:
            raise ValueError(f"Accumulator width {acc_width} is narrower than a product of two "
                             f"{input_width}-bit inputs ({2 * input_width} bits)")
        self.input_width = input_width
        self.acc_width = acc_width
        self.mult = get_multiplier(mult)
        super().__init__({
            "act_in":   In(ActivationLayout(input_width)),
            "act_out":  Out(ActivationLayout(input_width)),
            "psum_in":  In(signed(acc_width)),
            "psum_out": Out(signed(acc_width)),
            "w_load":   In(1),
            "w_data":   In(signed(input_width)),
        })
        weight_shape = self.mult.weight_shape(input_width)
        self.active = Signal(weight_shape, reset_less=True)
        self.shadow = Signal(weight_shape, reset_less=True)

    def elaborate(self, platform):
        m = Module()

        # Stage 1: the activation and the weight it multiplies. The activation that carries `swap` already
        # multiplies by the new weight, and `active` holds it from the next cycle on, together with `act_out`.
        # `swap` is a register of its own: the markers of all PEs on an anti-diagonal of the array are equal, and
        # Yosys merged them into one register driving the whole anti-diagonal.
        swap = register_copy(m, self.act_in.swap, name="swap", platform=platform, init=0)
        with m.If(self.act_in.swap):
            m.d.sync += self.active.eq(self.shadow)
        # A write in the same cycle as a swap is allowed: `active` takes the old shadow value.
        with m.If(self.w_load):
            m.d.sync += self.shadow.eq(self.mult.encode(self.w_data))

        # Stages 2-4: the product, from registers through three registers (the PE type decides what each stage
        # computes). A DSP PE's multiplier reads a copy of the activation register of its own: `value` also goes to
        # the PE on the right, and the multiplier sits in a DSP row, so one register for both ended up far from one
        # of them. A fabric multiplier shares the register with `act_out` (a `chain` PE of the 16 x 16 datapath
        # once had 10.6 ns of routing from its activation register to its own carry chains, when the first
        # product stage held two carry chains in series; it now holds one, and the array passes an activation on
        # from every other PE only, so the shared register saves 8 flip-flops per such PE).
        operand = register_copy(m, self.act_in.value, name="operand", platform=platform)
        if self.mult.uses_dsp:
            value = Signal(signed(self.input_width), reset_less=True)
            m.d.sync += value.eq(self.act_in.value)
        else:
            value = operand
        product = self.mult.pipelined_product(m, operand, self.active, platform)

        # Stage 5: accumulate. Truncation to acc_width is the wrap-around of two's complement accumulation.
        psum = Signal(signed(self.acc_width), reset_less=True)
        m.d.sync += psum.eq(self.psum_in + product)

        m.d.comb += [
            self.act_out.value.eq(value),
            self.act_out.swap.eq(swap),
            self.psum_out.eq(psum),
        ]
        return m
