"""Reference model of the DMA descriptors: what a ``LOAD`` (:class:`~haneul.rtl.isa.LoadArgs`) reads and what a
``STORE`` (:class:`~haneul.rtl.isa.StoreArgs`) writes, in numpy.

The model works on whole descriptors, in loop order, and knows nothing about buses or bursts: it is the contract the
DMA engine (``haneul.rtl.dma``) is checked against and what an instruction-level simulator executes::

    mem = np.zeros(1 << 16, np.uint8)
    lines = load_lines(mem, isa.Load(ext_addr=0x103, spad_addr=0, length=16, loops=((4, 16, 1),)), line_bytes=16)
    store(mem, isa.Store(ext_addr=0x2001, length=10, loops=((3, 10),)), [line0, line1, line2])

``memory`` is a numpy ``uint8`` (or ``int8``) array indexed by byte address; addresses wrap at 2**32 as on the bus
and must fall inside the array.
"""

import numpy as np

from haneul.rtl import isa

__all__ = ["load_iterations", "load_lines", "load_accesses", "store_addresses", "store_accesses", "store",
           "first_outside"]

ADDR_MASK = (1 << isa.EXT_ADDR_WIDTH) - 1


def _loops(loops, n, default):
    loops = tuple(tuple(loop) for loop in loops)
    return loops + (default,) * (n - len(loops))


def load_iterations(load):
    """``(spad_addr, ext_addr or None)`` of every line of ``load`` (an :class:`isa.Load`), in loop order; ``None``
    for a padding line. Scratchpad addresses are not wrapped."""
    loops = _loops(load.loops, isa.LOAD_LOOPS, (1, 0, 0))
    pads = _loops(load.pad, isa.PADDED_LOOPS, (0, 0))
    (c0, e0, s0), (c1, e1, s1), (c2, e2, s2) = loops
    (b0, a0), (b1, a1) = pads
    out = []
    for i2 in range(c2):
        for i1 in range(c1):
            for i0 in range(c0):
                spad = load.spad_addr + i0 * s0 + i1 * s1 + i2 * s2
                if i0 < b0 or i0 >= c0 - a0 or i1 < b1 or i1 >= c1 - a1:
                    out.append((spad, None))
                else:
                    ext = (load.ext_addr + (i0 - b0) * e0 + (i1 - b1) * e1 + i2 * e2) & ADDR_MASK
                    out.append((spad, ext))
    return out


def _read(memory, addr, length):
    return np.asarray(memory[addr:addr + length]).view(np.int8) if length else np.zeros(0, np.int8)


def load_lines(memory, load, *, line_bytes, spad_depth=None):
    """The lines of ``load``: a list of ``(spad_addr, line)``, ``line`` an int8 array of ``line_bytes`` bytes.

    Bytes ``offset .. offset + length - 1`` of a line that is not padding are read from memory; every other byte
    is ``pad_value``. With ``spad_depth`` the scratchpad addresses wrap modulo it (as the hardware's do).
    """
    if load.offset + load.length > line_bytes:
        raise ValueError(f"Line segment {load.offset} + {load.length} does not fit in {line_bytes} bytes")
    out = []
    for spad, ext in load_iterations(load):
        line = np.full(line_bytes, load.pad_value, np.int8)
        if ext is not None:
            line[load.offset:load.offset + load.length] = _read(memory, ext, load.length)
        out.append((spad % spad_depth if spad_depth else spad, line))
    return out


def load_accesses(load):
    """``(ext_addr, length)`` of every line of ``load`` that reads memory, in order."""
    return [(ext, load.length) for _, ext in load_iterations(load) if ext is not None]


def store_addresses(store_):
    """The external address of every line of ``store_`` (an :class:`isa.Store`), in loop order."""
    (c0, e0), (c1, e1), (c2, e2) = _loops(store_.loops, isa.STORE_LOOPS, (1, 0))
    return [(store_.ext_addr + i0 * e0 + i1 * e1 + i2 * e2) & ADDR_MASK
            for i2 in range(c2) for i1 in range(c1) for i0 in range(c0)]


def store_accesses(store_):
    """``(ext_addr, length)`` of every line of ``store_``, in order."""
    return [(addr, store_.length) for addr in store_addresses(store_)]


def store(memory, store_, lines):
    """Write the first ``length`` bytes of each line of ``lines`` (one per iteration, in order) to ``memory``; a
    later line overwrites an earlier one where they overlap."""
    addrs = store_addresses(store_)
    if len(lines) != len(addrs):
        raise ValueError(f"STORE of {len(addrs)} lines given {len(lines)}")
    for addr, line in zip(addrs, lines):
        memory[addr:addr + store_.length] = np.asarray(line, np.int64)[:store_.length].astype(np.int8).view(
            np.uint8).astype(memory.dtype)


def first_outside(accesses, base, size):
    """Index of the first ``(addr, length)`` access with a byte outside ``[base, base + size)``, else ``None``."""
    for index, (addr, length) in enumerate(accesses):
        if addr < base or addr + length > base + size:
            return index
    return None


# Descriptor fields and random descriptors (for testbenches) -------------------------------------------------------

def load_fields(load):
    """The fields of ``load`` as a nested dict of the :class:`isa.LoadArgs` layout (for ``Codec.pack``). Unlike
    :class:`isa.InstructionFormat` it checks nothing against a configuration (``FETCH``/``PARAM`` descriptors are
    wider than a scratchpad line)."""
    return {"ext_addr": load.ext_addr, "spad_addr": load.spad_addr, "offset": load.offset, "length": load.length,
            "pad_value": load.pad_value,
            "loops": [{"count": c, "ext_stride": e, "spad_stride": s}
                      for c, e, s in _loops(load.loops, isa.LOAD_LOOPS, (1, 0, 0))],
            "pad": [{"before": b, "after": a} for b, a in _loops(load.pad, isa.PADDED_LOOPS, (0, 0))]}


def store_fields(store_):
    """The fields of ``store_`` as a nested dict of the :class:`isa.StoreArgs` layout."""
    return {"ext_addr": store_.ext_addr, "length": store_.length,
            "loops": [{"count": c, "ext_stride": e} for c, e in _loops(store_.loops, isa.STORE_LOOPS, (1, 0))]}


def _span(accesses):
    return min(a for a, _ in accesses), max(a + n for a, n in accesses)


def random_load(rng, *, line_bytes, region, max_counts=(6, 4, 3), spad_depth=1 << 16, kind=None):
    """A random :class:`isa.Load` whose reads all fall in ``region`` (``(start, end)``).

    ``kind``: ``"contiguous"`` (aligned full lines back to back: bursts), ``"unaligned"`` (back to back at any
    alignment), ``"strided"`` (any strides, offsets and lengths) or ``None`` (one of them at random). Loops 0 and 1
    get random padding.
    """
    start, end = region
    kind = kind or rng.choice(["contiguous", "unaligned", "strided", "strided"])
    for _ in range(1000):
        counts = [rng.randint(1, c) for c in max_counts]
        pads = []
        for k in range(isa.PADDED_LOOPS):
            before = rng.randint(0, min(2, counts[k] - 1)) if rng.random() < 0.5 else 0
            after = rng.randint(0, min(2, counts[k] - 1 - before)) if rng.random() < 0.5 else 0
            pads.append((before, after))
        if kind == "strided":
            length = rng.randint(1, line_bytes)
            offset = rng.randint(0, line_bytes - length)
            e0 = rng.choice([length, rng.randint(0, 3 * line_bytes)])
        else:
            length, offset, e0 = line_bytes, 0, line_bytes
        real0 = counts[0] - sum(pads[0])
        real1 = counts[1] - sum(pads[1])
        e1 = real0 * e0 + (rng.randint(0, 2 * line_bytes) if kind == "strided" else 0)
        e2 = real1 * e1 + (rng.randint(0, 2 * line_bytes) if kind == "strided" else 0)
        spad_strides = [rng.randint(0, 3), rng.randint(0, 8), rng.randint(0, 32)]
        span = (real0 - 1) * e0 + (real1 - 1) * e1 + (counts[2] - 1) * e2 + length
        if span > end - start:
            continue
        addr = rng.randint(start, end - span)
        if kind == "contiguous":
            addr -= addr % line_bytes
            if addr < start:
                continue
        return isa.Load(ext_addr=addr, spad_addr=rng.randrange(spad_depth), length=length, offset=offset,
                        pad_value=rng.randint(-128, 127),
                        loops=tuple(zip(counts, (e0, e1, e2), spad_strides)), pad=tuple(pads))
    raise ValueError(f"No random LOAD fits in {region}")


def random_store(rng, *, line_bytes, cols, region, max_counts=(6, 4, 3), kind=None):
    """A random :class:`isa.Store` whose writes all fall in ``region``; ``kind`` as for :func:`random_load`
    (``"contiguous"`` needs ``cols == line_bytes`` for full lines)."""
    start, end = region
    kind = kind or rng.choice(["contiguous", "unaligned", "strided", "strided"])
    for _ in range(1000):
        counts = [rng.randint(1, c) for c in max_counts]
        if kind == "strided":
            length = rng.randint(1, cols)
            e0 = rng.choice([length, rng.randint(0, 3 * line_bytes)])
        else:
            length = cols
            e0 = length
        e1 = counts[0] * e0 + (rng.randint(0, 2 * line_bytes) if kind == "strided" else 0)
        e2 = counts[1] * e1 + (rng.randint(0, 2 * line_bytes) if kind == "strided" else 0)
        span = (counts[0] - 1) * e0 + (counts[1] - 1) * e1 + (counts[2] - 1) * e2 + length
        if span > end - start:
            continue
        addr = rng.randint(start, end - span)
        if kind == "contiguous":
            addr -= addr % line_bytes
            if addr < start:
                continue
        return isa.Store(ext_addr=addr, length=length, loops=tuple(zip(counts, (e0, e1, e2))))
    raise ValueError(f"No random STORE fits in {region}")
