"""The instruction set of the Haneul NPU (the command stream in memory), defined once.

The host writes a program of fixed-width :data:`INSTR_WIDTH`-bit *instructions* to memory, sets ``CMD_ADDR`` and
starts the NPU; the command processor fetches the instructions through the DMA engine and hands each to one of
three queues, as in TVM VTA:

* the **load** queue: :attr:`Opcode.LOAD` (external memory -> scratchpad lines, with strides, on-the-fly padding
  and realignment, :class:`LoadArgs`) and :attr:`Opcode.PARAM` (external memory -> the requantiser's or the
  adder's parameter stream, :class:`ParamArgs`);
* the **compute** queue: :attr:`Opcode.COMPUTE`, one datapath command word (:mod:`haneul.rtl.commands`);
* the **store** queue: :attr:`Opcode.STORE` (the datapath's ``out`` lines -> external memory, :class:`StoreArgs`).

The queues run concurrently. Order between them is explicit: every instruction carries :class:`Deps` flags. The
three queues form a ring, load -> compute -> store -> load; for each queue, *next* is the queue after it and
*prev* the one before it (load: prev = store, next = compute; compute: prev = load, next = store; store: prev =
compute, next = load). Between every ordered pair of queues there is a token counter. An instruction with
``wait_prev`` (``wait_next``) first takes a token sent to its queue by the previous (next) queue, waiting until
there is one; once it has completed, ``signal_prev`` (``signal_next``) sends a token to the previous (next)
queue. Completed means: a ``LOAD`` has written its last scratchpad line, a ``PARAM`` has delivered its last
beat, a ``COMPUTE`` has finished in the datapath with everything before it (the datapath is idle), a ``STORE``
has received the write response of its last burst. Typical uses: load -> compute "the tile is in the scratchpad",
compute -> load "that scratchpad half is free again", store -> load "the layer's output is in memory" (the next
layer reads it). Lines from ``out`` need no token: ``STORE`` consumes them as the datapath produces them.

:attr:`Opcode.END` ends the program: the command processor stops fetching and the run is done when every queue is
empty and every unit idle; then ``STATUS`` says done and the interrupt is raised.

This module is used by the command processor (decoder: :class:`Instruction` is the layout it reads), the DMA
engine (:class:`LoadArgs` and :class:`StoreArgs` are its descriptors), the compiler (the :class:`Load`,
:class:`Param`, :class:`Compute`, :class:`Store`, :class:`End` and :class:`Nop` dataclasses and
:class:`InstructionFormat`), the C header and ``docs/isa.md`` (:func:`instruction_table`).
"""

import dataclasses
from typing import ClassVar

from amaranth.hdl import Shape, signed, unsigned
from amaranth.lib import data, enum

from haneul.errors import HaneulError

from . import commands
from .config import DatapathConfig

__all__ = [
    "INSTR_WIDTH", "INSTR_BYTES", "OPCODE_WIDTH", "LOAD_LOOPS", "PADDED_LOOPS", "STORE_LOOPS",
    "Opcode", "QueueId", "QUEUE_OF", "ParamTarget", "ErrorCode",
    "Deps", "LoadLoop", "Padding", "LoadArgs", "ParamArgs", "ComputeArgs", "StoreLoop", "StoreArgs",
    "Arguments", "Instruction",
    "InstructionError", "Nop", "Load", "Param", "Compute", "Store", "End", "INSTRUCTIONS",
    "InstructionFormat", "instruction_table",
]

#: Bits in an instruction (two 128-bit bus words).
INSTR_WIDTH = 256
#: Bytes in an instruction; a program is a sequence of them, little-endian, at ``CMD_ADDR``.
INSTR_BYTES = INSTR_WIDTH // 8
#: Width of the opcode field, at the bottom of every instruction.
OPCODE_WIDTH = 4
#: Nested loops of a ``LOAD`` (innermost first).
LOAD_LOOPS = 3
#: How many of them (the innermost) can insert padding lines.
PADDED_LOOPS = 2
#: Nested loops of a ``STORE``.
STORE_LOOPS = 3
#: Width of an external address.
EXT_ADDR_WIDTH = 32
#: Width of an external stride (bytes).
EXT_STRIDE_WIDTH = 20
#: Width of a scratchpad line address or stride in an instruction (checked against the configuration).
SPAD_FIELD_WIDTH = 16
#: Width of a loop count.
LOOP_COUNT_WIDTH = 16
#: Width of a padding count.
PAD_WIDTH = 4
#: Width of the datapath command field of ``COMPUTE``.
COMMAND_FIELD_WIDTH = 96


class Opcode(enum.Enum, shape=OPCODE_WIDTH):
    """Operation of an instruction. Encodings not listed are illegal (:attr:`ErrorCode.ILLEGAL_OPCODE`).

    Members
    -------
    NOP
        Nothing (its dependency flags still take and send tokens, in the compute queue). The all-zero instruction
        is a ``NOP``.
    LOAD
        Load queue: read lines from external memory into the scratchpad (:class:`LoadArgs`).
    PARAM
        Load queue: read parameter beats from external memory into the requantiser's or the adder's parameter
        stream (:class:`ParamArgs`).
    COMPUTE
        Compute queue: one datapath command (:class:`ComputeArgs`).
    STORE
        Store queue: write lines of the datapath's output stream to external memory (:class:`StoreArgs`).
    END
        End of the program: stop fetching; the run is done when every queue has drained.
    """
    NOP     = 0
    LOAD    = 1
    PARAM   = 2
    COMPUTE = 3
    STORE   = 4
    END     = 5


class QueueId(enum.Enum, shape=2):
    """The queues of the command processor, in ring order (each one's *next* is the one after it)."""
    LOAD    = 0
    COMPUTE = 1
    STORE   = 2


#: The queue that executes each opcode (``END`` is handled by the fetcher).
QUEUE_OF = {
    Opcode.NOP:     QueueId.COMPUTE,
    Opcode.LOAD:    QueueId.LOAD,
    Opcode.PARAM:   QueueId.LOAD,
    Opcode.COMPUTE: QueueId.COMPUTE,
    Opcode.STORE:   QueueId.STORE,
}


class ParamTarget(enum.Enum, shape=2):
    """Where ``PARAM`` delivers its beats.

    Members
    -------
    REQUANT
        The requantiser's parameter stream (``ppu.Params(cols)``), taken by ``REQUANT`` with ``load_params``.
    ADD
        The adder's parameter stream (``eltwise.Params``), taken by ``ADD`` with ``load_params``.
    """
    REQUANT = 0
    ADD     = 1


class ErrorCode(enum.Enum, shape=4):
    """Why a run ended with an error (``STATUS.ERROR_CODE``). Codes 1-4 are the datapath's own
    (:class:`haneul.rtl.commands.ErrorCode`), with the same values.

    Members
    -------
    NONE
        No error.
    ILLEGAL_OPCODE
        An instruction opcode, or the opcode of a datapath command, is not defined.
    BAD_COUNT
        A count is zero, or a padding count is not smaller than its loop count.
    BAD_RANGE
        A scratchpad or accumulator line range runs past the end of its memory, or a ``LOAD`` line segment
        (``offset``, ``length``) or a ``STORE`` length does not fit in a line.
    UNSUPPORTED
        The NPU was built without the unit an instruction needs.
    ADDR_WINDOW
        An external address (instruction fetch, ``LOAD``, ``PARAM``, ``STORE``) is outside the window set in the
        CSRs.
    BUS_SLVERR
        The bus answered a read or a write with ``SLVERR``.
    BUS_DECERR
        The bus answered a read or a write with ``DECERR``.
    ABORTED
        The host aborted the run (``CTRL.ABORT``).
    DEADLOCK
        Every queue waits for a token that no running instruction will send.
    """
    NONE           = 0
    ILLEGAL_OPCODE = commands.ErrorCode.ILLEGAL_OPCODE.value
    BAD_COUNT      = commands.ErrorCode.BAD_COUNT.value
    BAD_RANGE      = commands.ErrorCode.BAD_RANGE.value
    UNSUPPORTED    = commands.ErrorCode.UNSUPPORTED.value
    ADDR_WINDOW    = 8
    BUS_SLVERR     = 9
    BUS_DECERR     = 10
    ABORTED        = 11
    DEADLOCK       = 12


# Layouts -------------------------------------------------------------------------------------------------------

class Deps(data.Struct):
    """Dependency flags of an instruction (see the module documentation).

    Members
    -------
    wait_prev
        Before starting, take a token from the previous queue.
    wait_next
        Before starting, take a token from the next queue.
    signal_prev
        After completing, send a token to the previous queue.
    signal_next
        After completing, send a token to the next queue.
    """
    wait_prev:   1
    wait_next:   1
    signal_prev: 1
    signal_next: 1


class LoadLoop(data.Struct):
    """One loop of a ``LOAD``.

    Members
    -------
    count
        Iterations, at least 1 (padding iterations included).
    ext_stride
        Bytes between the external addresses of consecutive iterations.
    spad_stride
        Lines between the scratchpad addresses of consecutive iterations.
    """
    count:       unsigned(LOOP_COUNT_WIDTH)
    ext_stride:  unsigned(EXT_STRIDE_WIDTH)
    spad_stride: unsigned(SPAD_FIELD_WIDTH)


class Padding(data.Struct):
    """Padding of one of the innermost ``LOAD`` loops.

    Members
    -------
    before
        The first ``before`` iterations are padding lines (every byte ``pad_value``; nothing is read).
    after
        The last ``after`` iterations are padding lines.
    """
    before: unsigned(PAD_WIDTH)
    after:  unsigned(PAD_WIDTH)


class LoadArgs(data.Struct):
    """Arguments of ``LOAD``: external memory -> scratchpad lines, the DMA engine's read descriptor.

    The transfer writes ``loops[0].count * loops[1].count * loops[2].count`` scratchpad lines, loop 0 innermost.
    Iteration ``(i0, i1, i2)`` writes scratchpad line ``spad_addr + i0 * s0 + i1 * s1 + i2 * s2`` (``s`` the
    ``spad_stride`` s). If ``i0`` or ``i1`` is in a padding region of its loop, the line is ``pad_value`` in every
    byte. Otherwise bytes ``offset .. offset + length - 1`` of the line are read from external address
    ``ext_addr + (i0 - pad[0].before) * e0 + (i1 - pad[1].before) * e1 + i2 * e2`` (``e`` the ``ext_stride`` s;
    any byte alignment) and the other bytes of the line are ``pad_value``.

    Members
    -------
    ext_addr
        External byte address of the first element that is not padding.
    spad_addr
        Scratchpad line of iteration ``(0, 0, 0)``.
    offset
        First byte of a line that is read from memory.
    length
        Bytes of a line read from memory, at least 1; ``offset + length <= rows``.
    pad_value
        Value of every byte that is not read (the input zero point of a convolution).
    loops
        The three loops, innermost first (:class:`LoadLoop`).
    pad
        Padding of loops 0 and 1 (:class:`Padding`).
    """
    ext_addr:  unsigned(EXT_ADDR_WIDTH)
    spad_addr: unsigned(SPAD_FIELD_WIDTH)
    offset:    unsigned(8)
    length:    unsigned(8)
    pad_value: signed(8)
    loops:     data.ArrayLayout(LoadLoop, LOAD_LOOPS)
    pad:       data.ArrayLayout(Padding, PADDED_LOOPS)


class ParamArgs(data.Struct):
    """Arguments of ``PARAM``: parameter beats from external memory.

    A beat of a parameter stream is its layout (``ppu.Params(cols)`` or ``eltwise.Params``) as a little-endian bit
    string, in ``ceil(layout_bits / bus_bits)`` consecutive bus words (the tail of the last word is ignored).

    Members
    -------
    ext_addr
        External byte address of the first beat, aligned to the bus width.
    target
        The stream (:class:`ParamTarget`).
    count
        Beats, at least 1.
    """
    ext_addr: unsigned(EXT_ADDR_WIDTH)
    target:   ParamTarget
    count:    unsigned(LOOP_COUNT_WIDTH)


class ComputeArgs(data.Struct):
    """Arguments of ``COMPUTE``.

    Members
    -------
    command
        A datapath command word (:mod:`haneul.rtl.commands`), in the low bits.
    """
    command: unsigned(COMMAND_FIELD_WIDTH)


class StoreLoop(data.Struct):
    """One loop of a ``STORE``.

    Members
    -------
    count
        Iterations, at least 1.
    ext_stride
        Bytes between the external addresses of consecutive iterations.
    """
    count:      unsigned(LOOP_COUNT_WIDTH)
    ext_stride: unsigned(EXT_STRIDE_WIDTH)


class StoreArgs(data.Struct):
    """Arguments of ``STORE``: output lines -> external memory, the DMA engine's write descriptor.

    The transfer takes ``loops[0].count * loops[1].count * loops[2].count`` lines from the datapath's output
    stream; the line of iteration ``(i0, i1, i2)`` (loop 0 innermost) has its first ``length`` bytes written at
    external address ``ext_addr + i0 * e0 + i1 * e1 + i2 * e2`` (any byte alignment), the rest of it is dropped.

    Members
    -------
    ext_addr
        External byte address of the first line.
    length
        Bytes written per line, ``1 .. cols``.
    loops
        The three loops, innermost first (:class:`StoreLoop`).
    """
    ext_addr: unsigned(EXT_ADDR_WIDTH)
    length:   unsigned(8)
    loops:    data.ArrayLayout(StoreLoop, STORE_LOOPS)


class Arguments(data.UnionLayout):
    """The arguments of an instruction: one member per opcode with arguments."""
    def __init__(self):
        super().__init__({
            "load":    LoadArgs,
            "param":   ParamArgs,
            "compute": ComputeArgs,
            "store":   StoreArgs,
        })


class Instruction(data.StructLayout):
    """An instruction: ``opcode`` (bits 3:0), ``deps`` (bits 7:4), arguments from bit 8, zero-padded to
    :data:`INSTR_WIDTH` bits."""
    def __init__(self):
        args = Arguments()
        pad = INSTR_WIDTH - OPCODE_WIDTH - 4 - args.size
        if pad < 0:
            raise AssertionError(f"Instruction arguments need {args.size} bits, more than fit")  # pragma: no cover
        super().__init__({
            "opcode":  Opcode,
            "deps":    Deps,
            "args":    args,
            "reserved": unsigned(pad),
        })


# Instructions as Python values -------------------------------------------------------------------------------

class InstructionError(HaneulError, ValueError):
    """An instruction that cannot be encoded or is illegal for the configuration, or bytes that are not one."""


@dataclasses.dataclass(frozen=True)
class _Base:
    wait_prev: bool = dataclasses.field(default=False, kw_only=True)
    wait_next: bool = dataclasses.field(default=False, kw_only=True)
    signal_prev: bool = dataclasses.field(default=False, kw_only=True)
    signal_next: bool = dataclasses.field(default=False, kw_only=True)

    opcode: ClassVar[Opcode]
    member: ClassVar[str | None] = None

    @property
    def deps(self):
        return {name: bool(getattr(self, name)) for name in ("wait_prev", "wait_next", "signal_prev", "signal_next")}


@dataclasses.dataclass(frozen=True)
class Nop(_Base):
    """``NOP``."""
    opcode: ClassVar[Opcode] = Opcode.NOP


@dataclasses.dataclass(frozen=True)
class Load(_Base):
    """``LOAD`` (see :class:`LoadArgs`). ``loops`` is up to three ``(count, ext_stride, spad_stride)`` tuples,
    innermost first (missing ones are ``(1, 0, 0)``); ``pad`` up to two ``(before, after)`` tuples."""
    ext_addr: int
    spad_addr: int
    length: int
    loops: tuple = ((1, 0, 0),)
    offset: int = 0
    pad_value: int = 0
    pad: tuple = ()

    opcode: ClassVar[Opcode] = Opcode.LOAD
    member: ClassVar[str] = "load"

    def __post_init__(self):
        object.__setattr__(self, "loops", _fill(self.loops, LOAD_LOOPS, (1, 0, 0)))
        object.__setattr__(self, "pad", _fill(self.pad, PADDED_LOOPS, (0, 0)))

    @property
    def lines(self):
        n = 1
        for count, _, _ in _fill(self.loops, LOAD_LOOPS, (1, 0, 0)):
            n *= count
        return n


@dataclasses.dataclass(frozen=True)
class Param(_Base):
    """``PARAM`` (see :class:`ParamArgs`)."""
    ext_addr: int
    target: ParamTarget
    count: int = 1

    opcode: ClassVar[Opcode] = Opcode.PARAM
    member: ClassVar[str] = "param"


@dataclasses.dataclass(frozen=True)
class Compute(_Base):
    """``COMPUTE``: ``command`` is a datapath command (:mod:`haneul.rtl.commands` dataclass) or its word."""
    command: object

    opcode: ClassVar[Opcode] = Opcode.COMPUTE
    member: ClassVar[str] = "compute"


@dataclasses.dataclass(frozen=True)
class Store(_Base):
    """``STORE`` (see :class:`StoreArgs`). ``loops`` is up to three ``(count, ext_stride)`` tuples, innermost
    first."""
    ext_addr: int
    length: int
    loops: tuple = ((1, 0),)

    opcode: ClassVar[Opcode] = Opcode.STORE
    member: ClassVar[str] = "store"

    def __post_init__(self):
        object.__setattr__(self, "loops", _fill(self.loops, STORE_LOOPS, (1, 0)))

    @property
    def lines(self):
        n = 1
        for count, _ in _fill(self.loops, STORE_LOOPS, (1, 0)):
            n *= count
        return n


@dataclasses.dataclass(frozen=True)
class End(_Base):
    """``END``."""
    opcode: ClassVar[Opcode] = Opcode.END


#: The instruction classes, by opcode.
INSTRUCTIONS = {cls.opcode: cls for cls in (Nop, Load, Param, Compute, Store, End)}


def _fill(items, n, default):
    items = tuple(tuple(item) for item in items)
    if len(items) > n:
        raise InstructionError(f"At most {n} loops, not {len(items)}")
    return items + (default,) * (n - len(items))


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _check_fit(what, value, shape):
    if not _is_int(value):
        raise TypeError(f"{what} must be an integer, not {value!r}")
    shape = Shape.cast(shape)
    if shape.signed:
        low, high = -(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1
    else:
        low, high = 0, (1 << shape.width) - 1
    if not low <= value <= high:
        raise InstructionError(f"{what} {value} is not in the range {low} .. {high}")


class InstructionFormat:
    """Encoder, decoder and checker of the instructions for one datapath configuration.

    Parameters
    ----------
    config : DatapathConfig, optional
        Default: ``DatapathConfig()``.

    Attributes
    ----------
    config : DatapathConfig
    layout : Instruction
    commands : haneul.rtl.commands.CommandFormat
        The format of the datapath commands inside ``COMPUTE``.
    """

    def __init__(self, config=None):
        if config is None:
            config = DatapathConfig()
        elif not isinstance(config, DatapathConfig):
            raise TypeError(f"Configuration must be a DatapathConfig, not {config!r}")
        self.config = config
        self.layout = Instruction()
        self.commands = commands.CommandFormat(config)
        if self.commands.width > COMMAND_FIELD_WIDTH:
            raise ValueError(f"Datapath command words of {self.commands.width} bits do not fit the "
                             f"{COMMAND_FIELD_WIDTH}-bit COMPUTE field")

    # Checking and encoding ------------------------------------------------------------------------------------

    def _args(self, instr):
        """The argument values of ``instr`` as the layout's nested dict, checked (raises InstructionError)."""
        cfg = self.config
        name = instr.opcode.name
        if isinstance(instr, Load):
            loops = _fill(instr.loops, LOAD_LOOPS, (1, 0, 0))
            pads = _fill(instr.pad, PADDED_LOOPS, (0, 0))
            for field in ("ext_addr", "spad_addr", "offset", "length"):
                _check_fit(f"LOAD {field}", getattr(instr, field), data.Layout.cast(LoadArgs)[field].shape)
            _check_fit("LOAD pad_value", instr.pad_value, signed(8))
            if instr.length < 1:
                raise InstructionError(f"LOAD length must be at least 1, not {instr.length}")
            if instr.offset + instr.length > cfg.rows:
                raise InstructionError(f"LOAD line segment {instr.offset} .. {instr.offset + instr.length - 1} "
                                       f"does not fit in a scratchpad line of {cfg.rows} bytes")
            for i, (count, ext_stride, spad_stride) in enumerate(loops):
                _check_fit(f"LOAD loop {i} count", count, unsigned(LOOP_COUNT_WIDTH))
                _check_fit(f"LOAD loop {i} ext_stride", ext_stride, unsigned(EXT_STRIDE_WIDTH))
                _check_fit(f"LOAD loop {i} spad_stride", spad_stride, unsigned(SPAD_FIELD_WIDTH))
                if count < 1:
                    raise InstructionError(f"LOAD loop {i} count must be at least 1, not {count}")
            for i, (before, after) in enumerate(pads):
                _check_fit(f"LOAD loop {i} padding before", before, unsigned(PAD_WIDTH))
                _check_fit(f"LOAD loop {i} padding after", after, unsigned(PAD_WIDTH))
                if before + after >= loops[i][0]:
                    raise InstructionError(f"LOAD loop {i} padding {before} + {after} leaves no line to read in "
                                           f"{loops[i][0]} iterations")
            last = instr.spad_addr + sum((count - 1) * stride for count, _, stride in loops)
            if last >= cfg.spad_depth:
                raise InstructionError(f"LOAD would write scratchpad line {last}, past the end of the scratchpad "
                                       f"({cfg.spad_depth} lines)")
            return {"ext_addr": instr.ext_addr, "spad_addr": instr.spad_addr, "offset": instr.offset,
                    "length": instr.length, "pad_value": instr.pad_value,
                    "loops": [{"count": c, "ext_stride": e, "spad_stride": s} for c, e, s in loops],
                    "pad": [{"before": b, "after": a} for b, a in pads]}
        if isinstance(instr, Param):
            _check_fit("PARAM ext_addr", instr.ext_addr, unsigned(EXT_ADDR_WIDTH))
            _check_fit("PARAM count", instr.count, unsigned(LOOP_COUNT_WIDTH))
            if not isinstance(instr.target, ParamTarget):
                raise TypeError(f"PARAM target must be a ParamTarget, not {instr.target!r}")
            if instr.count < 1:
                raise InstructionError(f"PARAM count must be at least 1, not {instr.count}")
            return {"ext_addr": instr.ext_addr, "target": instr.target, "count": instr.count}
        if isinstance(instr, Compute):
            if _is_int(instr.command):
                word = instr.command
                self.commands.decode(word)  # raises CommandError for a malformed word
            else:
                word = self.commands.encode(instr.command)
            return {"command": word}
        if isinstance(instr, Store):
            loops = _fill(instr.loops, STORE_LOOPS, (1, 0))
            _check_fit("STORE ext_addr", instr.ext_addr, unsigned(EXT_ADDR_WIDTH))
            _check_fit("STORE length", instr.length, unsigned(8))
            if not 1 <= instr.length <= cfg.cols:
                raise InstructionError(f"STORE length must be in 1 .. {cfg.cols} (an output line), "
                                       f"not {instr.length}")
            for i, (count, ext_stride) in enumerate(loops):
                _check_fit(f"STORE loop {i} count", count, unsigned(LOOP_COUNT_WIDTH))
                _check_fit(f"STORE loop {i} ext_stride", ext_stride, unsigned(EXT_STRIDE_WIDTH))
                if count < 1:
                    raise InstructionError(f"STORE loop {i} count must be at least 1, not {count}")
            return {"ext_addr": instr.ext_addr, "length": instr.length,
                    "loops": [{"count": c, "ext_stride": e} for c, e in loops]}
        raise AssertionError(name)  # pragma: no cover

    def encode(self, instr):
        """The instruction ``instr`` as an integer of :data:`INSTR_WIDTH` bits (checked first)."""
        if type(instr) not in INSTRUCTIONS.values():
            raise TypeError(f"Instruction must be one of {', '.join(c.__name__ for c in INSTRUCTIONS.values())}, "
                            f"not {instr!r}")
        for flag, value in instr.deps.items():
            if getattr(instr, flag) not in (0, 1):
                raise TypeError(f"{instr.opcode.name} {flag} must be a bool, not {getattr(instr, flag)!r}")
        init = {"opcode": instr.opcode, "deps": instr.deps}
        if instr.member is not None:
            init["args"] = {instr.member: self._args(instr)}
        return self.layout.const(init).as_value().value

    def encode_bytes(self, instr):
        """The instruction as :data:`INSTR_BYTES` little-endian bytes (what the program in memory holds)."""
        return self.encode(instr).to_bytes(INSTR_BYTES, "little")

    def program(self, instrs):
        """A whole program as bytes: the instructions in order. Ends with ``END`` if the last one is not."""
        instrs = list(instrs)
        if not instrs or not isinstance(instrs[-1], End):
            instrs.append(End())
        return b"".join(self.encode_bytes(instr) for instr in instrs)

    def decode(self, word):
        """The instruction of an integer or of :data:`INSTR_BYTES` bytes."""
        if isinstance(word, (bytes, bytearray)):
            if len(word) != INSTR_BYTES:
                raise InstructionError(f"An instruction is {INSTR_BYTES} bytes, not {len(word)}")
            word = int.from_bytes(word, "little")
        if not _is_int(word) or word < 0 or word >> INSTR_WIDTH:
            raise InstructionError(f"Not a {INSTR_WIDTH}-bit instruction: {word!r}")
        raw = word & ((1 << OPCODE_WIDTH) - 1)
        try:
            opcode = Opcode(raw)
        except ValueError:
            raise InstructionError(f"Illegal opcode {raw} in instruction {word:#x}") from None
        view = self.layout.from_bits(word)
        deps = {name: bool(view.deps[name]) for name in ("wait_prev", "wait_next", "signal_prev", "signal_next")}
        cls = INSTRUCTIONS[opcode]
        if cls is Load:
            a = view.args.load
            return Load(ext_addr=int(a.ext_addr), spad_addr=int(a.spad_addr), length=int(a.length),
                        loops=tuple((int(l.count), int(l.ext_stride), int(l.spad_stride)) for l in a.loops),
                        offset=int(a.offset), pad_value=int(a.pad_value),
                        pad=tuple((int(p.before), int(p.after)) for p in a.pad), **deps)
        if cls is Param:
            a = view.args.param
            return Param(ext_addr=int(a.ext_addr), target=ParamTarget(a.target), count=int(a.count), **deps)
        if cls is Compute:
            word = int(view.args.compute.command) & ((1 << self.commands.width) - 1)
            return Compute(self.commands.decode(word), **deps)
        if cls is Store:
            a = view.args.store
            return Store(ext_addr=int(a.ext_addr), length=int(a.length),
                         loops=tuple((int(l.count), int(l.ext_stride)) for l in a.loops), **deps)
        return cls(**deps)

    def fields(self):
        """``(opcode, field path, lsb, width)`` of every field, for documentation."""
        rows = []
        args_offset = self.layout["args"].offset

        def as_layout(shape):
            try:
                return data.Layout.cast(shape)
            except TypeError:
                return None

        def walk(opcode, prefix, layout, offset):
            for name, field in data.Layout.cast(layout):
                path = f"{prefix}{name}"
                shape = as_layout(field.shape) or field.shape
                if isinstance(shape, data.ArrayLayout):
                    for i in range(shape.length):
                        walk(opcode, f"{path}[{i}].", shape.elem_shape,
                             offset + field.offset + i * data.Layout.cast(shape.elem_shape).size)
                elif isinstance(shape, data.StructLayout):
                    walk(opcode, f"{path}.", shape, offset + field.offset)
                else:
                    rows.append((opcode, path, offset + field.offset, field.width))

        for opcode, cls in INSTRUCTIONS.items():
            rows.append((opcode, "opcode", 0, OPCODE_WIDTH))
            rows.append((opcode, "deps", OPCODE_WIDTH, 4))
            if cls.member is not None:
                member = self.layout.members["args"].members[cls.member]
                walk(opcode, "", data.Layout.cast(member), args_offset)
        return rows


def instruction_table():
    """The instruction set as Markdown (opcodes, then every field with its bits). ``docs/isa.md`` holds it; a test
    checks that it is current."""
    fmt = InstructionFormat()
    opcode_docs = commands._member_docs(Opcode)
    out = [f"Instruction: {INSTR_WIDTH} bits ({INSTR_BYTES} bytes, little-endian); unused bits are zero.", "",
           "| opcode | value | queue | arguments | what it does |", "|---|---|---|---|---|"]
    arg_layouts = {"load": LoadArgs, "param": ParamArgs, "compute": ComputeArgs, "store": StoreArgs}
    for opcode, cls in INSTRUCTIONS.items():
        queue = QUEUE_OF[opcode].name.lower() if opcode in QUEUE_OF else "fetcher"
        args = f"`{arg_layouts[cls.member].__name__}`" if cls.member else "none"
        out.append(f"| `{opcode.name}` | {opcode.value} | {queue} | {args} | {opcode_docs[opcode.name]} |")
    out += ["", "| instruction | field | bits |", "|---|---|---|"]
    for opcode, path, lsb, width in fmt.fields():
        bits = f"{lsb}" if width == 1 else f"{lsb + width - 1}:{lsb}"
        out.append(f"| `{opcode.name}` | `{path}` | {bits} |")
    out += ["", "| error code | value | meaning |", "|---|---|---|"]
    error_docs = commands._member_docs(ErrorCode)
    for code in ErrorCode:
        out.append(f"| `{code.name}` | {code.value} | {error_docs[code.name]} |")
    return "\n".join(out) + "\n"
