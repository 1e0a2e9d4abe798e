"""Folding a post-processing pipeline: :class:`Fold`.

A unit whose beats have ``lanes`` elements can run them through a pipeline ``lanes // fold`` lanes wide, one part of
the beat per cycle on ``fold`` consecutive cycles: ``fold`` times fewer multipliers and adders for a beat every
``fold`` cycles. The element-wise adder (:class:`haneul.rtl.eltwise.Adder`) and the requantiser
(:class:`haneul.rtl.ppu.Requantizer`) fold this way; ``docs/ppu.md`` ("Folding") has the timing.

A folded beat goes through the pipeline in parts ``0 .. fold - 1``: part 0 (elements ``0 .. width - 1``) straight
from the input in the cycle the beat is accepted, the others from a register that keeps the rest of the beat and
moves one part down per cycle. Each part carries a flag "last part" down the pipeline; the output parts wait in a
shift register and the beat is complete with its last part.
"""

from amaranth.hdl import Array, Cat, Mux, Signal, Value

from .pe import register_copy

__all__ = ["Fold", "FoldedTiming"]


class FoldedTiming:
    """Timing properties of a folded unit: a component with a class attribute ``LATENCY`` (cycles from an accepted
    beat to its output beat, unfolded, output FIFO included) and its fold in ``_fold``."""

    @property
    def fold(self):
        """Cycles per beat."""
        return self._fold

    @property
    def latency(self):
        """Cycles from an accepted beat to its output beat (``LATENCY + fold - 1``)."""
        return self.LATENCY + self._fold - 1

    @property
    def fifo_depth(self):
        """Entries of the output FIFO and credits, ``latency // fold + 1`` (``LATENCY + 1`` unfolded): the fewest
        that sustain a beat every ``fold`` cycles, and the most beats the unit holds (accepted and not yet sent)."""
        return self.latency // self._fold + 1


class Fold:
    """The part counter and the part multiplexers of a folded pipeline, in a module ``m``.

    Parameters
    ----------
    m : Module
        Module that receives the counter and the registers.
    fold : int
        Parts per beat (1: no folding; every method then passes its argument through).
    platform : platform or None
        As passed to ``elaborate``: :meth:`first_copy` registers are ``TRELLIS_FF`` instances on ECP5.
    aligned : bool
        Beats enter only on every ``fold``-th cycle, whether or not one entered before: the part counter runs
        freely, so :attr:`first` and its copies depend on no handshake (each copy of :meth:`first_copy` is a ring
        of flip-flops of its own, with no net shared between copies). A beat that arrives off the beat cycle waits
        up to ``fold - 1`` cycles; a stream of beats still enters at one per ``fold`` cycles. Default ``False``:
        a beat enters in any cycle in which no earlier beat's parts are still entering.

    Attributes
    ----------
    ready : Value
        High when a new beat may enter this cycle (no part of a beat is still to enter): the unit accepts a beat
        only with ``ready`` high, and holds its parameters while it is low (later parts read them).
    ready_next : Value
        Aligned only: ``ready`` of the next cycle (the counter runs freely).
    first : Signal or int
        A register, high when the next part to enter is part 0 of a new beat (1 without folding).
    phase : Signal or None
        The part entering now, when ``first`` is low.
    """
    def __init__(self, m, fold, *, platform=None, aligned=False):
        if not isinstance(fold, int) or isinstance(fold, bool) or fold <= 0:
            raise ValueError(f"Fold must be a positive integer, not {fold!r}")
        self.m = m
        self.fold = fold
        self.platform = platform
        self.aligned = aligned
        self._first_next = None
        if fold > 1:
            self.first = Signal(init=1, name="first")
            self.phase = Signal(range(fold), name="phase")
            self.ready = self.first
            self.ready_next = self.ready_in(1) if aligned else None
        else:
            self.first = 1
            self.phase = None
            self.ready = 1
            self.ready_next = 1

    def ready_in(self, cycles):
        """Aligned only: :attr:`ready` of ``cycles`` cycles later (the counter runs freely); ``ready_in(1)`` is
        :attr:`ready_next`. A unit that registers its input beat before part 0 enters accepts it one cycle before
        :attr:`ready` (its registered ``ready`` loads ``ready_in(2)``) and passes the handshake, registered, to
        :meth:`advance`."""
        if self.fold == 1:
            return 1
        assert self.aligned
        return self.phase == (-cycles) % self.fold

    def advance(self, take):
        """Count the parts of the beat accepted with ``take`` (high only with :attr:`ready`). Returns ``entering``:
        a part enters the pipeline this cycle (``take`` for part 0, then the parts that follow on their own)."""
        if self.fold == 1:
            return take
        m, fold = self.m, self.fold
        last = self.phase == fold - 1
        if self.aligned:
            # The counter runs freely; a register says that a beat's later parts are entering.
            entering_rest = Signal(name="parts_entering")
            m.d.sync += [
                self.first.eq(last),
                self.phase.eq(Mux(last, 0, self.phase + 1)),
                entering_rest.eq(Mux(take, 1, Mux(last, 0, entering_rest))),
            ]
            return take | entering_rest
        self._first_next = first_next = Signal(name="first_next")
        m.d.comb += first_next.eq(Mux(take, 0, Mux(self.first, 1, last)))
        m.d.sync += self.first.eq(first_next)
        with m.If(take):
            m.d.sync += self.phase.eq(1)
        with m.Elif(~self.first):
            m.d.sync += self.phase.eq(Mux(last, 0, self.phase + 1))
        return take | ~self.first

    def first_copy(self, name):
        """A copy of :attr:`first` (:func:`~haneul.rtl.pe.register_copy`), to drive one lane's part multiplexers
        instead of the one register driving all of them. Call after :meth:`advance`."""
        if self.fold == 1:
            return 1
        if self.aligned:
            return self.ring_copy(name)[0]
        return register_copy(self.m, self._first_next, name=name, platform=self.platform, init=1)

    def ring_copy(self, name):
        """Aligned only: the part counter as a ring of ``fold`` flip-flops of one lane's own, one-hot, bit ``k`` high
        while part ``k`` enters (bit 0 is :meth:`first_copy`): in step with :attr:`first` and :attr:`phase` from
        reset on, and driven by nothing outside the ring. :meth:`select` with ``ring`` then needs no shared
        :attr:`phase` (one register for all lanes' parameter multiplexers was 16.8 ns at fold 4, 16 x 16)."""
        assert self.aligned and self.fold > 1
        return register_copy(self.m, lambda ring: ring.rotate_left(1), name=name, platform=self.platform,
                             init=1, shape=self.fold)

    def part(self, value, *, name, first=None):
        """The part of ``value`` (a beat's elements as one value, part 0 in the low bits) that enters the
        pipeline: part 0 from ``value`` when :attr:`first` (or its copy ``first``) is high, later parts from a
        shift register that loads the rest of ``value`` whenever part 0 could enter (it is only read after a beat
        was accepted, so ``take`` reaches only the counter)."""
        value = value.as_value() if hasattr(value, "as_value") else value
        if self.fold == 1:
            return value
        first = self.first if first is None else first
        bits = len(value) // self.fold
        rest = Signal(bits * (self.fold - 1), name=name)
        self.m.d.sync += rest.eq(Mux(first, value[bits:], rest >> bits))
        return Mux(first, value[:bits], rest[:bits])

    def select(self, parts, *, first=None, ring=None):
        """The element of ``parts`` (one value per part, held while the beat enters, as parameters are) for the
        part that enters: ``parts[0]`` when :attr:`first` (or its copy ``first``) is high, else
        ``parts[phase]``; with a :meth:`ring_copy` ``ring``, ``parts[k]`` where its bit ``k`` is high."""
        if self.fold == 1:
            return parts[0]
        if ring is not None:
            selected = 0
            for k, value in enumerate(parts):       # one-hot: an OR of ANDs
                selected = selected | Mux(ring[k], Value.cast(value), 0)
            return selected
        first = self.first if first is None else first
        later = parts[1] if self.fold == 2 else Array(parts[1:])[self.phase - 1]
        return Mux(first, parts[0], later)

    def last(self, p, stages, *, name="last_part"):
        """The "last part" flag of the part leaving stage ``stages`` of the pipeline ``p`` (a
        :class:`~haneul.rtl.ppu.Stages`): 1 without folding."""
        if self.fold == 1:
            return 1
        return p.delay(self.phase == self.fold - 1, stages, name=name)

    def assemble(self, part, *, name="done"):
        """The output beat ``Cat(earlier parts, part)``: ``part`` is the pipeline's output register, which holds the
        last part when :meth:`last` says so; the parts before it wait in a shift register, filled from the top in
        every cycle. A beat's parts enter the pipeline, which never stalls, on consecutive cycles, so they leave it
        on consecutive cycles too, and when the last one is in ``part`` the register holds the others. (It shifted
        only while a part left, with the pipeline's ``valid`` as the enable of all its bits: the folded adder's
        120-bit register, 77 late endpoints up to 13.6 ns at 16 x 16.)"""
        part = part.as_value() if hasattr(part, "as_value") else part
        if self.fold == 1:
            return part
        bits = len(part)
        done = Signal(bits * (self.fold - 1), name=name, reset_less=True)
        self.m.d.sync += done.eq(Cat(done[bits:], part))
        return Cat(done, part)
