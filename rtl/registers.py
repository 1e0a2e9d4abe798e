"""The control and status registers (CSRs) of the Haneul NPU, defined once.

The host sees the NPU as a 4 KiB block of 32-bit registers on an AXI4-Lite port (:class:`haneul.rtl.csr.CSR`).
This module describes them as data, in the shape of amaranth-soc: a register is a :class:`Register` subclass whose
class attributes are its :class:`Field` s (with an :class:`Access` type, a reset value and a description), and
:func:`register_map` places them at their offsets in a :class:`RegisterMap`. The same map drives

* the register decoder of :class:`haneul.rtl.csr.CSR` (which field is storage, which is a pulse, which is read
  from the core, which counts what);
* the C header ``firmware/include/haneul_regs.h`` (:mod:`haneul.firmware.cheader`);
* ``docs/registers.md`` (:func:`register_table`);

and the tests iterate it, so a register added here is decoded, documented, exported to C and tested.

Access types (:class:`Access`): ``r`` read-only (writes are ignored), ``rw`` read/write storage, ``w`` write-only
(reads as zero; writing a one bit gives a one-cycle pulse), ``w1c`` set by the hardware, cleared by writing one.

Performance counters (:class:`Counter`) are registers that count an event of the core: the 32-bit ones are one
``r`` register, the 64-bit ones two (``<NAME>_LO`` at the lower address, ``<NAME>_HI`` above it). Reading
``_LO`` copies the upper half into a shadow that ``_HI`` returns, so reading ``_LO`` then ``_HI`` gives one
consistent 64-bit value.
"""

import dataclasses
import enum as py_enum

from amaranth.hdl import Shape
from amaranth.lib import enum

from . import isa
from .config import DatapathConfig

__all__ = [
    "Access", "Field", "Register", "Counter", "RegisterMap", "register_map", "register_table",
    "MAGIC", "VERSION", "DATA_WIDTH", "ADDR_WIDTH", "DEFAULT_BUS_DATA_WIDTH",
    "Id", "Version", "Config0", "Config1", "Config2", "Config3", "Ctrl", "Status", "IrqEnable", "IrqStatus",
    "ErrorAddr", "Address", "CounterWord", "COUNTERS", "COUNTER_BASE",
]

#: ``ID``: the ASCII bytes ``"HNEU"`` at increasing byte addresses (little-endian), 0x55454E48.
MAGIC = int.from_bytes(b"HNEU", "little")
#: ``VERSION``: (major, minor, patch) of the register map and the instruction set.
VERSION = (0, 1, 0)
#: Width of every register and of the AXI4-Lite data bus.
DATA_WIDTH = 32
#: Width of the AXI4-Lite byte address: 4 KiB of register space.
ADDR_WIDTH = 12
#: Width of the NPU's AXI4 memory port (its DMA engine), in bits, unless the build says otherwise.
DEFAULT_BUS_DATA_WIDTH = 128


class Access(py_enum.Enum):
    """How the host may access a field.

    Members
    -------
    R
        Read-only. Writes are ignored.
    RW
        Read/write storage, read back as written.
    W
        Write-only: reads as zero; writing a one gives a one-cycle pulse to the hardware, writing a zero does nothing.
    W1C
        Set by the hardware, cleared by writing a one (writing a zero leaves a bit alone). If the hardware sets a bit
        in the cycle the host clears it, the bit stays set.
    """
    R   = "r"
    RW  = "rw"
    W   = "w"
    W1C = "w1c"

    @property
    def readable(self):
        return self is not Access.W

    @property
    def writable(self):
        return self is not Access.R


class Field:
    """A field of a register.

    Parameters
    ----------
    shape : int or enum class
        Width in bits, or an :class:`amaranth.lib.enum.Enum` with a shape (its values are the field's values).
    access : Access or str, optional
        Default: the access of the register.
    init : int or enum member
        Value after reset.
    offset : int, optional
        Bit position of the least significant bit. Default: just above the previous field.
    doc : str
        Description (one sentence or a few).

    Attributes
    ----------
    name : str
        Set by the register class: the attribute name.
    width : int
    enum : enum class or None
    """

    def __init__(self, shape, *, access=None, init=0, offset=None, doc=""):
        if isinstance(shape, type) and issubclass(shape, enum.Enum):
            self.enum = shape
            self.width = Shape.cast(shape).width
        elif isinstance(shape, int) and not isinstance(shape, bool) and 1 <= shape <= DATA_WIDTH:
            self.enum = None
            self.width = shape
        else:
            raise TypeError(f"Field shape must be a width in 1 .. {DATA_WIDTH} or an enum, not {shape!r}")
        self.access = None if access is None else Access(access)
        if isinstance(init, py_enum.Enum):
            init = init.value
        if not isinstance(init, int) or isinstance(init, bool) or not 0 <= init < 1 << self.width:
            raise ValueError(f"Field reset value must fit in {self.width} bits, not {init!r}")
        self.init = init
        self.offset = offset
        self.doc = doc
        self.name = None

    @property
    def mask(self):
        """The field's bits in the register."""
        return ((1 << self.width) - 1) << self.offset

    def __repr__(self):
        return f"Field({self.name!r}, offset={self.offset}, width={self.width}, access={self.access.value!r})"


class Register:
    """A 32-bit register: a subclass declares its fields as class attributes, in order from bit 0.

    ::

        class Status(Register, access="r"):
            \"\"\"Run status.\"\"\"
            busy = Field(1, doc="A run is in progress.")
            done = Field(1, doc="The last run ended without error.")

    Parameters
    ----------
    doc : str, optional
        Description of this instance (default: the first paragraph of the class docstring).
    **inits
        Reset values that differ from the fields' ``init`` (e.g. the configuration a build reports).

    Attributes
    ----------
    fields : dict of str to Field
        The fields of this instance (copies of the class's, with the reset values of ``inits``), by name.
    access : Access
        The register's default access.
    doc : str
    """

    access = None
    _fields = {}

    def __init_subclass__(cls, *, access=None, **kwargs):
        super().__init_subclass__(**kwargs)
        if access is not None:
            cls.access = Access(access)
        fields = dict(getattr(cls, "_fields", {}))
        for name, value in list(vars(cls).items()):
            if isinstance(value, Field):
                if value.access is None:
                    if cls.access is None:
                        raise TypeError(f"Field {name} of {cls.__name__} has no access type (give the register "
                                        f"one: class {cls.__name__}(Register, access=...))")
                    value.access = cls.access
                value.name = name
                fields[name] = value
        position = 0
        for field in fields.values():
            if field.offset is None:
                field.offset = position
            if field.offset < position:
                raise ValueError(f"Field {field.name} of {cls.__name__} at bit {field.offset} overlaps the field "
                                 f"below it")
            position = field.offset + field.width
        if position > DATA_WIDTH:
            raise ValueError(f"Fields of {cls.__name__} need {position} bits, more than {DATA_WIDTH}")
        cls._fields = fields

    def __init__(self, *, doc=None, **inits):
        if type(self) is Register:
            raise TypeError("Register is abstract: declare a subclass with fields")
        self.fields = {}
        for name, field in self._fields.items():
            copy = Field(field.enum or field.width, access=field.access, init=inits.pop(name, field.init),
                         offset=field.offset, doc=field.doc)
            copy.name = name
            self.fields[name] = copy
        if inits:
            raise TypeError(f"{type(self).__name__} has no field {', '.join(inits)}")
        self.doc = doc if doc is not None else " ".join((type(self).__doc__ or "").split("\n\n")[0].split())

    @property
    def init(self):
        """The register's value after reset."""
        value = 0
        for field in self.fields.values():
            value |= field.init << field.offset
        return value

    @property
    def readable_mask(self):
        """Bits that read back something other than a constant zero."""
        return sum(f.mask for f in self.fields.values() if f.access.readable)

    @property
    def access_summary(self):
        """The access types of the fields, e.g. ``"rw"`` or ``"r, w1c"``."""
        return ", ".join(dict.fromkeys(f.access.value for f in self.fields.values()))

    def __iter__(self):
        return iter(self.fields.values())


@dataclasses.dataclass(frozen=True)
class Counter:
    """A performance counter: which event it counts, its width and its registers.

    Attributes
    ----------
    name : str
        ``CYCLES``, ``MACS`` ...; the registers are ``name`` (32-bit) or ``name_LO`` / ``name_HI`` (64-bit).
    event : str
        What is added each cycle: ``"cycle"`` (one, every cycle), ``"running"`` (one while a run is in progress) or
        the name of a field of :class:`haneul.rtl.csr.Events` (``"macs"``, ``"stall.fetch"`` ...).
    width : int
        32 or 64.
    clear_on_start : bool
        ``CTRL.START`` clears it (every counter but ``CYCLES``: they count one run).
    doc : str
    """
    name: str
    event: str
    width: int
    clear_on_start: bool
    doc: str

    @property
    def registers(self):
        return [self.name] if self.width == 32 else [f"{self.name}_LO", f"{self.name}_HI"]


class RegisterMap:
    """Registers at their byte offsets. Iterating gives ``(name, offset, register)`` in address order.

    Attributes
    ----------
    counters : list of Counter
    """

    def __init__(self):
        self._registers = {}
        self._offsets = {}
        self.counters = []

    def add(self, name, register, *, offset):
        """Place ``register`` at byte ``offset`` (a multiple of 4) as ``name`` (upper case)."""
        if not isinstance(register, Register):
            raise TypeError(f"Register must be a Register, not {register!r}")
        if not name.isidentifier() or name != name.upper():
            raise ValueError(f"Register name must be an upper-case identifier, not {name!r}")
        if name in self._registers:
            raise ValueError(f"Register {name} is already in the map")
        if not 0 <= offset < 1 << ADDR_WIDTH or offset % 4:
            raise ValueError(f"Register offset must be a multiple of 4 below {1 << ADDR_WIDTH:#x}, not {offset:#x}")
        if offset in self._offsets:
            raise ValueError(f"Offset {offset:#x} of {name} is taken by {self._offsets[offset]}")
        self._registers[name] = (offset, register)
        self._offsets[offset] = name
        return register

    def add_counter(self, name, event, *, offset, width=32, clear_on_start=True, doc=""):
        """Add a performance counter (one register, or two for ``width=64``) at ``offset``."""
        if width not in (32, 64):
            raise ValueError(f"Counter width must be 32 or 64, not {width!r}")
        counter = Counter(name, event, width, clear_on_start, doc)
        if width == 32:
            self.add(name, CounterWord(doc=doc), offset=offset)
        else:
            self.add(f"{name}_LO", CounterWord(doc=f"{doc} Bits 31:0; reading it latches bits 63:32 for "
                                                    f"`{name}_HI`."), offset=offset)
            self.add(f"{name}_HI", CounterWord(doc=f"{doc} Bits 63:32, as latched by the last read of "
                                                    f"`{name}_LO`."), offset=offset + 4)
        self.counters.append(counter)
        return counter

    def __iter__(self):
        for name, (offset, register) in sorted(self._registers.items(), key=lambda item: item[1][0]):
            yield name, offset, register

    def __getitem__(self, name):
        return self._registers[name][1]

    def __contains__(self, name):
        return name in self._registers

    def __len__(self):
        return len(self._registers)

    def offset(self, name):
        return self._registers[name][0]

    def pack(self, register, **fields):
        """The word that sets the given fields of ``register`` (``pack("CTRL", start=1)``); other bits zero."""
        word = 0
        for name, value in fields.items():
            f = self[register].fields[name]
            word |= (int(value) << f.offset) & f.mask
        return word

    def unpack(self, register, name, word):
        """Field ``name`` of ``register`` in ``word``."""
        f = self[register].fields[name]
        return (word & f.mask) >> f.offset

    def at(self, offset):
        """The name of the register at ``offset``, or ``None``."""
        return self._offsets.get(offset)


# The registers ----------------------------------------------------------------------------------------------------

class Id(Register, access="r"):
    """Identification: the ASCII bytes "HNEU" (0x55454E48). A driver checks it before anything else."""
    magic = Field(32, init=MAGIC, doc='0x55454E48, "HNEU" at increasing byte addresses.')


class Version(Register, access="r"):
    """Version of the register map and the instruction set."""
    patch = Field(8, init=VERSION[2], doc="Patch version: fixes that change no register or instruction.")
    minor = Field(8, init=VERSION[1], doc="Minor version: additions that leave existing ones unchanged.")
    major = Field(8, init=VERSION[0], doc="Major version: incompatible changes.")


class Config0(Register, access="r"):
    """Build configuration: the array and the memory bus."""
    rows = Field(8, doc="Rows of the systolic array: the K depth of a weight tile, bytes in a scratchpad line.")
    cols = Field(8, doc="Columns of the systolic array: output channels of a weight tile, lanes of an output line.")
    bus_bytes = Field(8, doc="Bytes in a word of the AXI4 memory port (16 for 128 bits).")


class Config1(Register, access="r"):
    """Build configuration: scratchpad lines."""
    spad_depth = Field(32, doc="Lines in the scratchpad (each `rows` bytes).")


class Config2(Register, access="r"):
    """Build configuration: accumulator lines."""
    acc_depth = Field(32, doc="Lines in the accumulator memory (each `cols` int32 values).")


class Config3(Register, access="r"):
    """Build configuration: optional units that are built (instructions for a missing unit end the run with
    UNSUPPORTED)."""
    add = Field(1, doc="The element-wise adder (datapath command `ADD`).")
    pool = Field(1, doc="The pooling unit (datapath command `POOL`).")
    depthwise = Field(1, doc="The depthwise convolution unit.")


class Ctrl(Register, access="w"):
    """Control. Every bit is a write-1 pulse; reads as zero."""
    start = Field(1, doc="Start a run: fetch the program at `CMD_ADDR`. Clears `STATUS.DONE`, `STATUS.ERROR`, "
                         "`STATUS.ERROR_CODE`, `ERROR_ADDR` and the performance counters (not `CYCLES`). Ignored "
                         "while `STATUS.BUSY` is set.")
    abort = Field(1, doc="Abort the run: the core stops and the run ends with error `ABORTED`. Ignored when idle.")
    soft_reset = Field(1, doc="Reset the core and the status: `STATUS`, `IRQ_STATUS`, `ERROR_ADDR` and every "
                              "counter are cleared, a run in progress is dropped without an interrupt. `CMD_ADDR`, "
                              "`WINDOW_BASE`, `WINDOW_SIZE` and `IRQ_ENABLE` keep their values.")


class Status(Register, access="r"):
    """Run status. `DONE`, `ERROR` and `ERROR_CODE` describe the last run and stay until the next START or
    soft reset."""
    busy = Field(1, doc="A run is in progress (from START to the end of the run).")
    done = Field(1, doc="The last run ended without error.")
    error = Field(1, doc="The last run ended with an error.")
    error_code = Field(isa.ErrorCode, offset=4, doc="Why the last run failed (`isa.ErrorCode`; `NONE` if it "
                                                    "did not).")


class IrqEnable(Register, access="rw"):
    """Interrupt enable: the `irq` output is high while a bit of `IRQ_STATUS` is set whose bit here is set."""
    done = Field(1, doc="Interrupt when a run ends without error.")
    error = Field(1, doc="Interrupt when a run ends with an error.")


class IrqStatus(Register, access="w1c"):
    """Interrupt status: set when the event happens (whether enabled or not), cleared by writing one."""
    done = Field(1, doc="A run ended without error.")
    error = Field(1, doc="A run ended with an error.")


class Address(Register, access="rw"):
    """A 32-bit external (AXI4) byte address or size."""
    value = Field(32)


class CounterWord(Register, access="r"):
    """A performance counter (32 bits, or one half of a 64-bit one); wraps around."""
    count = Field(32)


class ErrorAddr(Register, access="r"):
    """External address of the instruction that ended the last run with an error (as reported by the core)."""
    value = Field(32, doc="Cleared by START and soft reset.")


#: Counters: (name, event, width, doc). Offsets from 0x100, in this order, 64-bit ones taking two words.
COUNTERS = (
    ("CYCLES", "cycle", 64, "Clock cycles since reset or soft reset (a timestamp; START does not clear it)."),
    ("BUSY_CYCLES", "running", 32, "Cycles of the run: from START to the end of the run."),
    ("ACTIVE_CYCLES", "active", 32, "Cycles in which the systolic array took an activation vector."),
    ("MACS", "macs", 64, "Multiply-accumulates issued to the systolic array (`rows * cols` per active cycle)."),
    ("DMA_RD_BYTES", "rd_bytes", 32, "Bytes the DMA engine read from memory (instructions, data, parameters)."),
    ("DMA_WR_BYTES", "wr_bytes", 32, "Bytes the DMA engine wrote to memory."),
    ("STALL_FETCH", "stall.fetch", 32, "Cycles in which every queue was empty and the fetcher waited for "
                                       "instructions."),
    ("STALL_LOAD_DEP", "stall.load_dep", 32, "Cycles in which the load queue's next instruction waited for a "
                                             "token."),
    ("STALL_COMPUTE_DEP", "stall.compute_dep", 32, "Cycles in which the compute queue's next instruction waited "
                                                   "for a token."),
    ("STALL_STORE_DEP", "stall.store_dep", 32, "Cycles in which the store queue's next instruction waited for a "
                                               "token."),
    ("STALL_DMA_RD", "stall.dma_rd", 32, "Cycles in which a DMA read waited for the bus (address not accepted or "
                                         "data not yet returned)."),
    ("STALL_DMA_WR", "stall.dma_wr", 32, "Cycles in which a DMA write waited for the bus (address or data not "
                                         "accepted, response not yet returned)."),
    ("STALL_OUT", "stall.out", 32, "Cycles in which the datapath had an output line that the store queue did not "
                                   "take."),
)

#: Byte offset of the first performance counter.
COUNTER_BASE = 0x100


def register_map(config=None, *, bus_data_width=DEFAULT_BUS_DATA_WIDTH, has_add=None, has_pool=None,
                 has_depthwise=False):
    """The register map of an NPU build.

    Parameters
    ----------
    config : DatapathConfig, optional
        Default: ``DatapathConfig()``. Gives the reset values of ``CONFIG0`` .. ``CONFIG2``.
    bus_data_width : int
        Width of the AXI4 memory port in bits (``CONFIG0.BUS_BYTES``).
    has_add, has_pool : bool, optional
        Whether the adder and the pooling unit are built; default as :class:`haneul.rtl.datapath.Datapath`
        (when ``rows <= cols``).
    has_depthwise : bool
        Whether the depthwise unit is built.

    Returns
    -------
    RegisterMap
    """
    if config is None:
        config = DatapathConfig()
    elif not isinstance(config, DatapathConfig):
        raise TypeError(f"Configuration must be a DatapathConfig, not {config!r}")
    if bus_data_width not in (32, 64, 128, 256, 512, 1024):
        raise ValueError(f"Bus data width must be 32, 64, 128, 256, 512 or 1024, not {bus_data_width!r}")
    fits = config.rows <= config.cols
    has_add = fits if has_add is None else has_add
    has_pool = fits if has_pool is None else has_pool
    for name, value in (("has_add", has_add), ("has_pool", has_pool), ("has_depthwise", has_depthwise)):
        if not isinstance(value, bool):
            raise TypeError(f"Option {name} must be a bool, not {value!r}")
    for what, value in (("Row count", config.rows), ("Column count", config.cols)):
        if value > 255:
            raise ValueError(f"{what} {value} does not fit in CONFIG0 (8 bits)")

    regs = RegisterMap()
    regs.add("ID", Id(), offset=0x000)
    regs.add("VERSION", Version(), offset=0x004)
    regs.add("CONFIG0", Config0(rows=config.rows, cols=config.cols, bus_bytes=bus_data_width // 8), offset=0x008)
    regs.add("CONFIG1", Config1(spad_depth=config.spad_depth), offset=0x00C)
    regs.add("CONFIG2", Config2(acc_depth=config.acc_depth), offset=0x010)
    regs.add("CONFIG3", Config3(add=int(has_add), pool=int(has_pool), depthwise=int(has_depthwise)), offset=0x014)
    regs.add("CTRL", Ctrl(), offset=0x020)
    regs.add("STATUS", Status(), offset=0x024)
    regs.add("IRQ_ENABLE", IrqEnable(), offset=0x028)
    regs.add("IRQ_STATUS", IrqStatus(), offset=0x02C)
    regs.add("ERROR_ADDR", ErrorAddr(), offset=0x030)
    regs.add("CMD_ADDR", Address(doc="External byte address of the program (its first instruction), read at "
                                     "START."), offset=0x040)
    regs.add("WINDOW_BASE", Address(doc="First byte address of the external memory window: every address the "
                                        "NPU reads or writes (instructions included) must lie in "
                                        "`WINDOW_BASE .. WINDOW_BASE + WINDOW_SIZE - 1`, or the run ends with "
                                        "`ADDR_WINDOW`."), offset=0x044)
    regs.add("WINDOW_SIZE", Address(doc="Bytes in the external memory window. Reset value 0: the window is "
                                        "closed and every access fails until the host opens it."), offset=0x048)
    offset = COUNTER_BASE
    for name, event, width, doc in COUNTERS:
        regs.add_counter(name, event, offset=offset, width=width, clear_on_start=name != "CYCLES", doc=doc)
        offset += width // 8
    return regs


# Documentation ----------------------------------------------------------------------------------------------------

def _bits(field):
    return f"{field.offset}" if field.width == 1 else f"{field.offset + field.width - 1}:{field.offset}"


def register_table(regs=None):
    """The register map as Markdown: a summary table, then the fields of every register. ``docs/registers.md``
    holds it for ``register_map()`` (a test checks that it is current)."""
    if regs is None:
        regs = register_map()
    out = ["| offset | register | access | reset | description |", "|---|---|---|---|---|"]
    for name, offset, reg in regs:
        out.append(f"| `0x{offset:03X}` | `{name}` | {reg.access_summary} | `0x{reg.init:08X}` | {reg.doc} |")
    out += ["", "| register | field | bits | access | reset | description |", "|---|---|---|---|---|---|"]
    for name, offset, reg in regs:
        if isinstance(reg, (CounterWord, Address)):
            continue  # one 32-bit field, described in the summary
        for field in reg:
            doc = field.doc
            if field.enum is not None:
                doc += " " + ", ".join(f"{m.value} `{m.name}`" for m in field.enum) + "."
            init = field.enum(field.init).name if field.enum is not None else f"{field.init:#x}"
            out.append(f"| `{name}` | `{field.name.upper()}` | {_bits(field)} | {field.access.value} | "
                       f"{init} | {doc} |")
    return "\n".join(out) + "\n"
