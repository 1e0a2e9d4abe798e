"""The output queue of a pipeline that never stalls: :class:`CreditFIFO`.

Used wherever a free-running pipeline meets a stream with backpressure: the post-processing units (requantiser,
adder, pooling unit) and the read sides of the scratchpad and the accumulator. The consumer's ``ready`` then reaches
only the queue's pointers and the credit count, never the pipeline or whatever decides to start a beat.
"""

from amaranth.hdl import Module, Mux, Shape, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .pe import register_copy

__all__ = ["CreditFIFO"]


class CreditFIFO(wiring.Component):
    """Output queue of a pipeline that never stalls: a FIFO and the credit count in front of it.

    A unit whose pipeline has no stall enable needs, for every beat it accepts, a queue entry that the beat's result
    is sure to find free. ``reserve`` (one cycle per accepted beat) takes an entry; ``credit`` is high while fewer than
    ``depth`` beats are reserved and not yet sent on ``o``, so the unit accepts a beat only with ``credit`` high.
    The pipeline writes each result with ``w_en``/``w_data``, unconditionally: every write goes to a reserved entry,
    so ``w_en`` has no full check in front of it, and ``o.ready`` reaches only the queue's pointers and the two
    counts, never the pipeline.

    The storage has one entry more than ``depth`` and is written in every cycle, at the entry after the last result
    (the write pointer), whatever ``w_en`` says: ``w_en`` only advances the pointer. The spare entry keeps that
    write off the entry on ``o`` when the queue holds ``depth`` results. So no write enable net reaches the LUT-RAM
    cells (their write enable is tied high): in the accumulator's 512-bit queue one register drove the write
    enable of every cell, 12.3 ns at 16 x 16; ``w_en`` reaches only the write pointer's copies and the level.

    The queue is first-word-fall-through in LUT RAM (asynchronous read): a result written in cycle ``t`` is on ``o``
    in cycle ``t + 1``. With ``depth = latency + 1``, where ``latency`` is the cycles from ``reserve`` to
    ``o.valid``, the unit sustains one beat per cycle while ``o.ready`` is high; ``depth`` is also the most beats
    the unit holds (accepted and not yet sent).

    With ``registered``, ``o.payload`` and ``o.valid`` come from an output register beside the queue, loaded from
    the LUT RAM whenever it is empty or its result leaves: a consumer far from the queue then sees flip-flops, not
    the LUT RAM's read (the post-processing units' queues through the datapath's output multiplexer into its
    register slice: 112 endpoints up to 12.3 ns at 16 x 16). A result written in cycle ``t`` is then on ``o`` in
    cycle ``t + 2`` (:attr:`latency`), so full rate needs one credit more; ``o.ready`` also reaches the output
    register's load enable, so it should come from flip-flops (the 512-bit accumulator queue with the requantiser's
    ``ready`` on that enable: 208 endpoints up to 11.4 ns).

    With ``early_ready``, the consumer tells its ``ready`` a cycle ahead, on ``ready_next``: ``o.ready`` is then
    taken to be ``ready_next`` of the cycle before (``o.ready`` itself is not read; the consumer's ``ready`` must be
    exactly that register, low after reset), and every part of the queue that acts on a result leaving (each
    storage chunk's read pointer, the level, the credit count) has a flip-flop copy of it, and of ``nonempty``,
    beside it. The consumer's ``ready`` then crosses the die into flip-flops only, not into the pointers' logic (the
    requantiser's ``ready`` to the accumulator queue's eight pointer copies: 5.8 ns of routing, 10.7 ns in all at
    16 x 16).

    Both together: every part that acts on a result leaving also has a copy of the output register's ``valid``,
    and each storage chunk its part of the output register, loaded at its own copy of the pop decision (three
    flip-flops, one LUT). Then neither the consumer's ``ready`` nor the LUT RAM's read crosses the die in front of
    logic: the accumulator's 512-bit queue, read by the requantiser (its LUT-RAM read to the requantiser's input
    register: 44-146 endpoints up to 11.9 ns at 16 x 16).

    Parameters
    ----------
    shape : shape-like
        Shape of a result (the payload of ``o``).
    depth : int
        Entries of the queue (the output register included) and credits.
    registered : bool
        ``o`` from an output register. Default ``False``.
    early_ready : bool
        ``ready_next`` instead of ``o.ready``. Default ``False``.

    Attributes
    ----------
    reserve : In(1)
        A beat is accepted: one credit taken.
    credit : Out(1)
        Fewer than ``depth`` beats are reserved and not yet sent: another beat may be accepted.
    may_reserve : In(1)
        For ``credit_next`` only: high in every cycle in which ``reserve`` may be high (``reserve`` implies it; it
        may stay low if ``credit_next`` is not used).
    credit_next : Out(1)
        ``credit`` of the next cycle, computed as if ``reserve`` were high whenever ``may_reserve`` is: it is low
        when ``credit`` will be, and may be low when ``credit`` turns out high (a unit that registers its
        ``ready`` from it so it does not wait for its producer's ``valid``).
    w_en, w_data : In(1), In(shape)
        A result enters the queue (never more results than reservations).
    o : Out(stream.Signature(shape))
        The results, in order.
    busy : Out(1)
        Beats are reserved and not yet sent (in the pipeline or in the queue).
    ready_next : In(1)
        Only with ``early_ready``: ``o.ready`` of the next cycle.
    """
    #: Bits of the queue's storage read at one copy of the read pointer.
    CHUNK = 64

    def __init__(self, shape, depth, *, registered=False, early_ready=False):
        if not isinstance(depth, int) or isinstance(depth, bool) or depth <= 0:
            raise ValueError(f"Depth must be a positive integer, not {depth!r}")
        self._shape = shape
        self._depth = depth
        self._registered = bool(registered)
        self._early_ready = bool(early_ready)
        ports = {
            "reserve": In(1),
            "credit":  Out(1),
            "credit_next": Out(1),
            "may_reserve": In(1),
            "w_en":    In(1),
            "w_data":  In(shape),
            "o":       Out(stream.Signature(shape)),
            "busy":    Out(1),
        }
        if early_ready:
            ports["ready_next"] = In(1)
        super().__init__(ports)

    @property
    def depth(self):
        return self._depth

    @property
    def latency(self):
        """Cycles from ``w_en`` to the result on ``o`` (with the queue empty): 1, or 2 with ``registered``."""
        return 2 if self._registered else 1

    def elaborate(self, platform):
        m = Module()
        depth = self._depth

        entries = depth + 1                     # the storage: one spare entry for the unconditional write

        def advance(pointer):
            return Mux(pointer == entries - 1, 0, pointer + 1)

        # `nonempty` is a flip-flop of its own (`level != 0`, loaded with the next level's test), not a compare
        # after the level register: the consumer's decision to take a beat starts at a register.
        nonempty = Signal()
        nonempty_next = Signal()
        # Registered: the output register holds a result (`o.valid`).
        head_valid = Signal()
        head_valid_next = Signal()

        def local(name):
            """`(nonempty, head_valid, ready)` for one part of the queue that acts on a result leaving: the
            registers themselves, or (early_ready) flip-flop copies of them beside that part, loaded with their
            next values and the consumer's `ready_next`."""
            if not self._early_ready:
                return nonempty, head_valid, self.o.ready
            ready = register_copy(m, self.ready_next, name=f"{name}_ready", platform=platform, init=0)
            valid = register_copy(m, nonempty_next, name=f"{name}_nonempty", platform=platform, init=0)
            head = (register_copy(m, head_valid_next, name=f"{name}_head_valid", platform=platform, init=0)
                    if self._registered else None)
            return valid, head, ready

        def taken(state):
            """A result leaves on `o`."""
            valid, head, ready = state
            return (head if self._registered else valid) & ready

        def popped(state):
            """The queue's first result leaves the storage, onto `o` or (registered) into the output register."""
            valid, head, ready = state
            return valid & (~head | ready) if self._registered else valid & ready

        give = taken(local("give"))
        # Credits: beats reserved and not yet sent, in flight or in the queue. `credit` is a flip-flop of its own,
        # loaded with the next count's test, so that the decision to accept a beat starts at a register.
        owed = Signal(range(depth + 1))
        owed_next = Signal(range(depth + 1))
        credit = Signal(init=1)
        m.d.comb += [
            owed_next.eq(owed),
            self.credit.eq(credit),
            self.busy.eq(owed != 0),
        ]
        with m.If(self.reserve & ~give):
            m.d.comb += owed_next.eq(owed + 1)
        with m.Elif(give & ~self.reserve):
            m.d.comb += owed_next.eq(owed - 1)
        # `owed_next != depth` from the two tests of `owed` (registers only) and the handshakes: one LUT after
        # `reserve`, which comes from the consumer's arbitration.
        def next_credit(reserve):
            return Mux(reserve & ~give, owed < depth - 1, Mux(give & ~reserve, 1, owed != depth))
        m.d.comb += self.credit_next.eq(next_credit(self.reserve | self.may_reserve))
        m.d.sync += [
            owed.eq(owed_next),
            credit.eq(next_credit(self.reserve)),
        ]

        # The storage is split into memories of at most CHUNK bits, each read and written at its own copies of the
        # read and write pointers, counters of their own beside that memory (as the systolic array's output FIFO
        # does): a wide queue (a line of 16 int32 accumulators is 512 bits, 128 LUT RAM cells) spreads over an area
        # where one pointer register would drive every cell's address. Registered, each chunk has its part of the
        # output register beside it, loaded at the chunk's own copy of `pop`.
        produce = Signal(range(entries))
        consume = Signal(range(entries))

        # `pop`: the queue's first result leaves the storage, onto `o` or (registered) into the output register.
        pop = popped(local("pop")) if self._registered else give       # unregistered, a pop is a give

        def consume_next(pointer, pop=pop):
            return Mux(pop, advance(pointer), pointer)

        def produce_next(pointer):
            return Mux(self.w_en, advance(pointer), pointer)
        level = Signal(range(depth + 1))        # results in the queue
        width = Shape.cast(self._shape).width
        w_data, r_data = Value.cast(self.w_data), Signal(width)
        head = Signal(width, name="head", reset_less=True)
        for index, start in enumerate(range(0, width, self.CHUNK)):
            bits = min(self.CHUNK, width - start)
            storage = m.submodules[f"storage{index}"] = Memory(shape=bits, depth=entries, init=[])
            write = storage.write_port()
            read = storage.read_port(domain="comb")
            chunk_pop = pop
            if width <= self.CHUNK:
                pointer, w_pointer = consume, produce
            else:
                chunk_pop = popped(local(f"chunk{index}")) if self._early_ready else pop
                pointer = register_copy(m, lambda p, chunk_pop=chunk_pop: consume_next(p, chunk_pop),
                                        name=f"consume{index}", platform=platform, init=0, shape=range(entries))
                w_pointer = register_copy(m, produce_next, name=f"produce{index}", platform=platform, init=0,
                                          shape=range(entries))
            m.d.comb += [
                write.addr.eq(w_pointer),
                write.data.eq(w_data[start:start + bits]),
                write.en.eq(1),
                read.addr.eq(pointer),
                r_data[start:start + bits].eq(read.data),
            ]
            if self._registered:
                with m.If(chunk_pop):
                    m.d.sync += head[start:start + bits].eq(read.data)
        if self._registered:
            # The output register: loaded from the storage whenever it is empty or its result leaves, so `o` comes
            # from flip-flops beside the queue, not from the LUT RAM's read through the routing to the consumer.
            m.d.comb += [
                head_valid_next.eq(Mux(pop, 1, Mux(give, 0, head_valid))),
                self.o.payload.eq(head),
                self.o.valid.eq(head_valid),
            ]
            m.d.sync += head_valid.eq(head_valid_next)
        else:
            m.d.comb += [
                self.o.payload.eq(r_data),
                self.o.valid.eq(nonempty),
            ]
        m.d.sync += produce.eq(produce_next(produce))
        m.d.sync += consume.eq(consume_next(consume))
        m.d.comb += nonempty_next.eq(nonempty)
        with m.If(self.w_en & ~pop):
            m.d.sync += level.eq(level + 1)
            m.d.comb += nonempty_next.eq(1)
        with m.Elif(pop & ~self.w_en):
            m.d.sync += level.eq(level - 1)
            m.d.comb += nonempty_next.eq(level != 1)
        m.d.sync += nonempty.eq(nonempty_next)
        return m
