"""ECP5 carry chains whose LUTs also select partial-product rows, and the bounded-width adder terms around them.

A shift-and-add multiplier sums rows ``(x if w[i] else 0) << i``. Selecting a row bit (``x & w``) takes one LUT4,
and adding two rows one carry-chain bit, which on ECP5 is a ``CCU2C`` half: itself a LUT4 with four inputs in
front of the carry logic. :func:`row_pair` puts the selection of two rows into that LUT4, so a pair of rows costs
one carry chain and no other LUTs; :func:`add_terms` adds terms with adders only as wide as their bounds need. The
depthwise unit (:mod:`haneul.rtl.depthwise`) and the ``"chain"`` processing element (:mod:`haneul.rtl.pe`) are built
from them. :class:`CarryChainModel` lets simulations run the exact ``CCU2C`` INIT values and wiring of an ECP5 build.
"""

from amaranth.hdl import Cat, Const, Instance, Mux, Signal

__all__ = ["CarryChainModel", "Row", "add_levels", "add_terms", "carry_chain", "extend", "is_ecp5", "kept", "lut_init", "row_pair",
           "signed_width"]


def is_ecp5(platform):
    """Whether ``platform`` (as passed to ``elaborate``) is a Lattice ECP5 device."""
    return getattr(platform, "family", None) == "ecp5"


def kept(m, value, name):
    """``value`` through a wire Yosys must keep.

    Yosys merges a chain of additions into one multi-operand ``$macc`` cell and maps that to full adders in LUTs;
    a kept wire between two adders keeps them apart, so each becomes a carry chain (``CCU2C`` on ECP5), which is
    both smaller and faster here.
    """
    wire = Signal(value.shape(), name=name, attrs={"keep": 1})
    m.d.comb += wire.eq(value)
    return wire


class Row:
    """One partial-product row ``sign * ((x if w else 0) << shift)`` of a shift-and-add multiplier: ``x`` a signed
    value (an activation, or the depthwise unit's offset input), ``w`` one weight bit, ``sign`` +1 or -1 (the weight's sign bit has weight ``-2**(n-1)``)."""

    def __init__(self, x, w, shift, negate=False):
        self.x, self.w, self.shift, self.negate = x, w, shift, negate

    def value(self):
        return Mux(self.w, self.x, 0).as_signed() << self.shift

    def bit(self, k):
        """Bit ``k`` (absolute) of the row without its sign, ``(x if w else 0) << shift``, sign-extended, as
        ``((x_bit, w), f)`` with ``f(x_bit, w)`` its value (0 below the shift)."""
        if k < self.shift:
            return (Const(0, 1), Const(0, 1)), lambda x, w: 0
        return (self.x[min(k - self.shift, len(self.x) - 1)], self.w), lambda x, w: x & w


def lut_init(f, arity):
    """The 16-bit INIT of a LUT4 computing ``f`` of its first ``arity`` inputs (A, B, C, D)."""
    return sum(f(*((i >> k) & 1 for k in range(arity))) << i for i in range(16))


class CarryChainModel:
    """A stand-in for an ECP5 platform in simulations: :func:`carry_chain` (so the depthwise unit and the ``"chain"``
    PE type) then builds its carry chains from an Amaranth model of the ``CCU2C`` cell (as Yosys's ``cells_sim`` describes it) instead of instantiating it, so
    that the tests run the exact INIT values and operand wiring that an ECP5 build gets."""

    family = "ecp5"
    simulated = True


def carry_chain(m, name, cin, halves, platform):
    """A carry chain of ECP5 ``CCU2C`` cells: ``halves`` is a list of ``(init, (A, B, C, D))`` per bit (the LUT4 INIT
    and its input bits). Returns the sum bits.

    Per bit, ``S = LUT4(A, B, C, D) ^ carry`` and the carry out is ``carry`` where the LUT4 is 1, else
    ``INIT[3:0](A, B)`` (the LUT4 at ``C = D = 0``, which must therefore be both the propagate there and the
    generate). ``platform`` is :class:`CarryChainModel` to build the Amaranth model instead of the cells."""
    if len(halves) % 2:
        halves = halves + [(0, (Const(0, 1),) * 4)]
    sums = Signal(len(halves), name=f"{name}_s")
    carry = cin
    for c in range(0, len(halves), 2):
        (init0, in0), (init1, in1) = halves[c], halves[c + 1]
        if isinstance(platform, CarryChainModel):
            for k, (init, ins) in enumerate(((init0, in0), (init1, in1))):
                lut = Const(init, 16).bit_select(Cat(*ins), 1)
                gen = Const(init & 15, 4).bit_select(Cat(*ins[:2]), 1)
                m.d.comb += sums[c + k].eq(lut ^ carry)
                nxt = Signal(name=f"{name}_c{c + k}")
                m.d.comb += nxt.eq(Mux(lut, carry, gen))
                carry = nxt
        else:
            cout = Signal(name=f"{name}_c{c + 1}")
            ports = {f"i_{pin}{k}": bit for k, ins in enumerate((in0, in1)) for pin, bit in zip("ABCD", ins)}
            m.submodules[f"{name}_{c // 2}"] = Instance(
                "CCU2C", p_INIT0=Const(init0, 16), p_INIT1=Const(init1, 16), p_INJECT1_0="NO", p_INJECT1_1="NO",
                i_CIN=carry, o_S0=sums[c], o_S1=sums[c + 1], o_COUT=cout, **ports)
            carry = cout
    return sums


def signed_width(bound):
    """Bits of a signed value of magnitude at most ``bound``."""
    return bound.bit_length() + 1


def row_pair(m, a, b, bound, name, platform):
    """``a + b`` of two :class:`Row` s (``b - a`` if ``a.negate``), of magnitude at most ``bound``, as a term
    ``(value, shift, bound)``.

    On ECP5 this is one carry chain whose LUTs also select the rows (``x & w``), so the partial products cost no
    LUTs of their own: per bit, the LUT4 computes ``a_bit ^ b_bit`` from ``x_a, w_a`` (A, B) and ``x_b, w_b`` (C, D),
    and its ``C = D = 0`` quarter, ``a_bit``, is the generate. A negated row is inverted there, with a carry in of 1.
    Elsewhere (simulation, other devices) it is plain arithmetic.
    """
    assert not b.negate
    lo = min(a.shift, b.shift)
    width = signed_width(bound >> lo)
    if not is_ecp5(platform):
        value = (b.value() - a.value()) if a.negate else (a.value() + b.value())
        return kept(m, (value >> lo)[:width].as_signed(), name), lo, bound >> lo
    halves = []
    for k in range(lo, lo + width):
        (a_in, fa), (b_in, fb) = a.bit(k), b.bit(k)
        init = lut_init(lambda xa, wa, xb, wb: fa(xa, wa) ^ a.negate ^ fb(xb, wb), 4)
        halves.append((init, a_in + b_in))
    sums = carry_chain(m, name, Const(int(a.negate), 1), halves, platform)
    return sums[:width].as_signed(), lo, bound >> lo


def extend(value, width):
    """The signed ``value`` sign-extended (or truncated) to ``width`` bits, as unsigned bits."""
    return Cat(*(value[min(k, len(value) - 1)] for k in range(width)))


def add_terms(m, a, b, name):
    """The sum of two terms ``(value, shift, bound)`` (``value * 2**shift``, ``|value| <= bound``) as a term: the bits
    of the lower term below the other's shift pass through, and one two-input adder (a carry chain) of just the
    width the bound needs adds the rest."""
    (va, sa, ba), (vb, sb, bb) = sorted((a, b), key=lambda term: term[1])
    d = sb - sa
    bound = ba + (bb << d)
    high = kept(m, ((va >> d) + vb)[:signed_width(bound) - d].as_signed(), name)
    return (Cat(extend(va, d), high).as_signed() if d else high), sa, bound


def add_levels(m, terms, levels, name):
    """``levels`` levels of an adder tree over ``terms`` (``(value, shift, bound)``): in each, the terms sorted by
    shift and neighbours added pairwise by :func:`add_terms` (an odd last term passes to the next level)."""
    for level in range(levels):
        terms = sorted(terms, key=lambda term: term[1])
        terms = [add_terms(m, terms[k], terms[k + 1], f"{name}_v{level}_{k // 2}") if k + 1 < len(terms)
                 else terms[k] for k in range(0, len(terms), 2)]
    return terms
