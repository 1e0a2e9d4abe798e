"""Block RAM with one write port and one registered read port, and a stated read-during-write result.

A memory of the datapath (a scratchpad or accumulator bank) is written through one port and read through another,
in the same clock domain. When both address the same line at the same clock edge, Amaranth's synchronous read
port returns the old contents (it is not transparent to the write). An ECP5 ``DP16KD`` in pseudo-dual-port mode
does not define what it returns then, so Yosys *emulates* the old contents: it registers the written data and
the address match and puts a multiplexer between every read-data pin of the block RAM and the logic behind it
(for a 128-bit line: 148 LUT4 and 267 flip-flops, and a LUT on the slowest path of the bank, the block RAM's
clock-to-output).

A design that never uses the read data of a collision (it forwards the written value itself, or never reads a
line in the cycle it is written) can say so: :func:`block_ram` with ``collision="undefined"`` describes the read as
an asynchronous read followed by a register and gives the memory the ``no_rw_check`` attribute. Yosys merges the
register into the block RAM (``memory_dff``) and, told that the collision result does not matter, maps the memory
without the emulation. The cycle behaviour is the same as a synchronous read port's; only the result of a
collision differs. So that simulation cannot silently rely on it, the generic elaboration (any platform but ECP5:
simulation and the Verilog of the cocotb testbenches) *poisons* it: after a collision the read data are the
inverted old contents, which no test expects.

``collision="old"`` is the plain synchronous read port (Yosys keeps its emulation): for a memory where a read
may legally meet a write of the same line and must see the old contents (the scratchpad: its double-buffering rule
lets the load side overwrite a line from the cycle its last read is accepted).
"""

from amaranth.hdl import Mux, Signal, Value
from amaranth.lib.memory import Memory

from .pe import is_ecp5

__all__ = ["COLLISIONS", "block_ram"]

#: The read-during-write results :func:`block_ram` can give.
COLLISIONS = ("old", "undefined")


def block_ram(m, *, name, shape, depth, platform, collision, granularity=None):
    """A memory of ``depth`` elements of ``shape`` with one write port and one read port of one cycle of latency.

    Parameters
    ----------
    m : Module
        Module the memory (as submodule ``name``) and its read register are added to.
    name : str
        Name of the memory.
    shape : shape-like
        Element shape.
    depth : int
        Number of elements.
    platform : platform or None
        As passed to ``elaborate``; for anything but ECP5 an undefined collision result is poisoned (above).
    collision : str
        Read data when the read port reads the element the write port writes at the same clock edge: ``"old"``
        (the old contents) or ``"undefined"`` (the design does not use them).
    granularity : int or None
        Write granularity of the write port (:meth:`Memory.write_port`).

    Returns
    -------
    (write_port, read_addr, read_data)
        The write port (``addr``, ``data``, ``en``); the read address (a signal to drive); the read data, the
        element at the address of the previous cycle (a signal of ``shape``). The read port is always enabled.
    """
    if collision not in COLLISIONS:
        raise ValueError(f"Collision result must be one of {', '.join(map(repr, COLLISIONS))}, not {collision!r}")
    undefined = collision == "undefined"
    memory = Memory(shape=shape, depth=depth, init=[], attrs={"no_rw_check": 1} if undefined else None)
    m.submodules[name] = memory
    write = memory.write_port(granularity=granularity)
    if not undefined:
        read = memory.read_port()
        m.d.comb += read.en.eq(1)
        return write, read.addr, read.data

    read = memory.read_port(domain="comb")
    data = Signal(shape, name=f"{name}_rd", reset_less=True)
    m.d.sync += data.eq(read.data)
    if is_ecp5(platform):
        return write, read.addr, data

    # Generic elaboration: a collision poisons the read data.
    collided = Signal(name=f"{name}_collided")
    m.d.sync += collided.eq(write.en.any() & (write.addr == read.addr))
    poisoned = Signal(shape, name=f"{name}_rd_checked")
    m.d.comb += poisoned.eq(Mux(collided, ~Value.cast(data), data))
    return write, read.addr, poisoned
