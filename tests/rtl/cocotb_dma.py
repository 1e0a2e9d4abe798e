"""cocotb testbench for ``haneul.rtl.dma.Dma`` (run by ``tests/rtl/test_dma_cocotb.py``).

The DMA engine's Verilog (``top``, AXI ports named ``m_axi_*``) works on cocotbext-axi's ``AxiRam`` as external
memory, with a pause generator on every AXI channel (AR, R, AW, W, B). ``rd_cmd``, ``wr_cmd`` and ``wr_data`` are
driven by :class:`~haneul.sim.cocotb.streams.StreamDriver` s and ``rd_data`` is taken by a
:class:`~haneul.sim.cocotb.streams.StreamMonitor` with backpressure, all with random gaps. Every ``rd_data`` line is
checked in order by a :class:`~haneul.sim.cocotb.scoreboard.Scoreboard` against :mod:`haneul.sim.dma_model`, and
memory after the stores against the same model.

Bus errors are injected by :class:`FaultyRam`, an ``AxiRam`` whose accesses to given address ranges fail with
``SLVERR`` or ``DECERR``.

Parameters (from :func:`haneul.sim.cocotb.tb_params`): ``rows``, ``cols``, ``spad_depth``, ``data_width``, ``scale``
(amount of random work).
"""

import logging
import random
import zlib

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge
from cocotbext.axi import AxiBus
from cocotbext.axi.constants import AxiResp

from haneul.rtl import isa
from haneul.rtl.config import DatapathConfig
from haneul.rtl.dma import ReadCommand, ReadDest, ReadLine
from haneul.sim import dma_model
from haneul.sim.cocotb import pauses, tb_params
from haneul.sim.cocotb.memory import FaultyRam
from haneul.sim.cocotb.scoreboard import Scoreboard
from haneul.sim.cocotb.streams import StreamDriver, StreamMonitor
from amaranth.hdl import signed
from amaranth.lib import data

PARAMS = tb_params()
CONFIG = DatapathConfig(rows=PARAMS.get("rows", 16), cols=PARAMS.get("cols", 16),
                        spad_depth=PARAMS.get("spad_depth", 2048))
DATA_WIDTH = PARAMS.get("data_width", 128)
NBYTES = DATA_WIDTH // 8
SCALE = PARAMS.get("scale", 1)

MEM_SIZE = 1 << 14
READ_REGION = (0x0100, 0x1900)       # crosses the 4 KiB boundary at 0x1000
WRITE_REGION = (0x2000, 0x3800)      # crosses 0x3000
ERROR_REGION = (0x3c00, 0x3c00 + NBYTES)
TIMEOUT_MS = 600

#: Pause probabilities of the traffic mixes: (AXI channels, streams).
MIXES = {"smooth": (0.0, 0.0), "stalls": (0.3, 0.3), "bursty": ("bursty", "bursty")}


def _pause(kind, rng):
    if kind == "bursty":
        return pauses.bursts(8, 4, rng)
    return pauses.random_pauses(kind, rng) if kind else None


class TB:
    """Clock, reset, AXI RAM, stream endpoints and the reference model of one test."""

    def __init__(self, dut, name, mix="smooth", errors=()):
        self.dut = dut
        self.log = logging.getLogger("cocotb.tb")
        seed = zlib.crc32(f"{cocotb.RANDOM_SEED}-{name}".encode())
        self.rng = random.Random(seed)
        self.log.info("seed %d", seed)
        Clock(dut.clk, 10, unit="ns").start()
        dut.rst.value = 1
        for port in ("abort", "error_clear", "counter_clear"):
            getattr(dut, port).value = 0
        dut.window_base.value = 0
        dut.window_size.value = MEM_SIZE
        self.ram = FaultyRam(AxiBus.from_prefix(dut, "m_axi"), dut.clk, dut.rst, size=MEM_SIZE, errors=errors)
        bus_gap, stream_gap = MIXES[mix]
        for channel in (self.ram.read_if.ar_channel, self.ram.read_if.r_channel, self.ram.write_if.aw_channel,
                        self.ram.write_if.w_channel, self.ram.write_if.b_channel):
            channel.set_pause_generator(_pause(bus_gap, self.rng))
        kw = dict(reset=dut.rst, rng=self.rng)
        self.rd_cmd = StreamDriver(dut, "rd_cmd", dut.clk, ReadCommand, pause=_pause(stream_gap, self.rng), **kw)
        self.wr_cmd = StreamDriver(dut, "wr_cmd", dut.clk, isa.StoreArgs, pause=_pause(stream_gap, self.rng), **kw)
        self.wr_data = StreamDriver(dut, "wr_data", dut.clk, data.ArrayLayout(signed(8), CONFIG.cols),
                                    pause=_pause(stream_gap, self.rng), **kw)
        self.scoreboard = Scoreboard("rd_data")
        self.rd_data = StreamMonitor(dut, "rd_data", dut.clk, ReadLine(CONFIG, DATA_WIDTH), reset=dut.rst,
                                     pause=_pause(stream_gap, self.rng), callback=self.scoreboard.observe)
        self.stores = []            # (Store, lines) in order
        self.done = 0
        self.expected_done = 0
        self.lines_expected = 0
        cocotb.start_soon(self._count_done())
        self.ram.write(0, np.random.default_rng(seed).integers(0, 256, MEM_SIZE, dtype=np.uint8).tobytes())
        self.before = None

    async def _count_done(self):
        while True:
            await RisingEdge(self.dut.clk)
            await ReadOnly()
            self.done += int(self.dut.wr_done.value)

    async def reset(self):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 3)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    def memory(self):
        return np.frombuffer(self.ram.read(0, MEM_SIZE), np.uint8).copy()

    # Work ---------------------------------------------------------------------------------------------------

    def load(self, load, dest=ReadDest.SPAD, expect=True):
        self.rd_cmd.send_nowait({"args": dma_model.load_fields(load), "dest": dest})
        lines = dma_model.load_lines(self.memory(), load, line_bytes=NBYTES, spad_depth=CONFIG.spad_depth)
        if expect:
            for k, (addr, line) in enumerate(lines):
                self.scoreboard.expect({"addr": addr, "data": line, "dest": dest,
                                        "last": int(k == len(lines) - 1)})
            self.lines_expected += len(lines)

    def store(self, store):
        if self.before is None:
            self.before = self.memory()
        lines = [[self.rng.randint(-128, 127) for _ in range(CONFIG.cols)] for _ in range(store.lines)]
        self.wr_cmd.send_nowait(dma_model.store_fields(store))
        self.wr_data.send_many(lines)
        self.stores.append((store, lines))
        self.expected_done += 1

    def random_work(self, loads, stores, kinds=(None,)):
        for k in range(loads):
            self.load(dma_model.random_load(self.rng, line_bytes=NBYTES, region=READ_REGION,
                                            spad_depth=CONFIG.spad_depth, kind=kinds[k % len(kinds)]),
                      dest=self.rng.choice(list(ReadDest)))
        for k in range(stores):
            kind = kinds[k % len(kinds)]
            if kind == "contiguous" and CONFIG.cols != NBYTES:
                kind = "unaligned"
            self.store(dma_model.random_store(self.rng, line_bytes=NBYTES, cols=CONFIG.cols, region=WRITE_REGION,
                                              kind=kind))

    async def wait_idle(self, timeout=100_000):
        """Until every expected line and ``wr_done`` came and ``busy`` is low."""
        for _ in range(timeout):
            await RisingEdge(self.dut.clk)
            await ReadOnly()
            if (not self.scoreboard.outstanding and self.done >= self.expected_done
                    and not int(self.dut.busy.value)):
                return
        raise AssertionError(f"not idle after {timeout} cycles: {self.scoreboard.outstanding} lines outstanding, "
                             f"{self.done} of {self.expected_done} stores done")

    async def wait_busy_low(self, timeout=20_000):
        for _ in range(timeout):
            await RisingEdge(self.dut.clk)
            await ReadOnly()
            if not int(self.dut.busy.value):
                return
        raise AssertionError(f"busy after {timeout} cycles")

    def check(self):
        self.scoreboard.check(count=self.lines_expected)
        assert self.done == self.expected_done, (self.done, self.expected_done)
        if self.stores:
            want = self.before.copy()
            for store, lines in self.stores:
                dma_model.store(want, store, lines)
            got = self.memory()
            diff = np.flatnonzero(got != want)
            assert not len(diff), f"{len(diff)} bytes differ, first at {diff[0]:#x}: {got[diff[0]]} != {want[diff[0]]}"

    def flush_streams(self):
        """Reset the stream sources (what the command processor does on an abort or an error)."""
        for driver in (self.rd_cmd, self.wr_cmd, self.wr_data):
            driver.stop()
            driver._queue.clear()
            driver.valid.value = 0
            driver.start()

    def restart_checks(self):
        self.scoreboard = Scoreboard("rd_data")
        self.rd_data.callback = self.scoreboard.observe
        self.stores, self.before = [], None
        self.done = self.expected_done = self.lines_expected = 0


@cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
@cocotb.parametrize(mix=list(MIXES))
async def test_random(dut, mix):
    """Constrained-random LOADs (3 loops, padding, unaligned, offsets) and STOREs at once."""
    tb = TB(dut, f"random-{mix}", mix)
    await tb.reset()
    tb.random_work(8 * SCALE, 8 * SCALE, kinds=("contiguous", "unaligned", "strided", None))
    await tb.wait_idle()
    tb.check()
    assert int(dut.bytes_written.value) == sum(s.lines * s.length for s, _ in tb.stores)


async def _recover(tb, dut):
    """After an error or abort: idle, streams reset, error cleared; then a clean transfer must be exact."""
    await tb.wait_busy_low()
    code = isa.ErrorCode(dut.error_code.value.to_unsigned())
    await RisingEdge(dut.clk)
    tb.flush_streams()
    for _ in range(20):         # stays idle: consumes nothing while stopped (error set)
        await RisingEdge(dut.clk)
        await ReadOnly()
        assert not int(dut.busy.value)
    await RisingEdge(dut.clk)
    dut.error_clear.value = 1
    await RisingEdge(dut.clk)
    dut.error_clear.value = 0
    tb.restart_checks()
    tb.ram.errors = []
    tb.random_work(3, 3, kinds=("contiguous", "strided", "unaligned"))
    await tb.wait_idle()
    tb.check()
    assert not int(dut.error.value)
    return code


def _prefix_ok(tb):
    return not tb.scoreboard.mismatched and not tb.scoreboard.unexpected


@cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
@cocotb.parametrize(fault=["window_read", "window_write", "slverr_read", "slverr_write", "decerr_read",
                           "decerr_write"])
async def test_error(dut, fault):
    """Window violations and injected bus errors: the right code, the bus left clean, a clean stop, and a clean
    transfer afterwards without reset."""
    kind, channel = fault.split("_")
    resp = {"slverr": AxiResp.SLVERR, "decerr": AxiResp.DECERR}.get(kind)
    errors = [(*ERROR_REGION, resp)] if resp is not None else []
    tb = TB(dut, f"error-{fault}", "stalls", errors=errors)
    tb.rd_data.check_protocol = False    # an error drops the line on offer (documented)
    await tb.reset()
    lines = 6 * 16
    if kind == "window":
        dut.window_base.value = 0x1000
        dut.window_size.value = 0x0800
        start = 0x1800 - lines // 2 * NBYTES
    else:
        start = ERROR_REGION[0] - lines // 2 * NBYTES
    if channel == "read":
        tb.load(isa.Load(ext_addr=start, spad_addr=0, length=NBYTES, loops=((lines, NBYTES, 1),)), expect=False)
    else:
        tb.store(isa.Store(ext_addr=start, length=CONFIG.cols, loops=((lines, NBYTES),)))
    for _ in range(20_000):
        await RisingEdge(dut.clk)
        await ReadOnly()
        if int(dut.error.value):
            break
    else:
        raise AssertionError("no error")
    await RisingEdge(dut.clk)
    dut.window_base.value = 0
    dut.window_size.value = MEM_SIZE
    code = await _recover(tb, dut)
    want = {"window": isa.ErrorCode.ADDR_WINDOW, "slverr": isa.ErrorCode.BUS_SLVERR,
            "decerr": isa.ErrorCode.BUS_DECERR}[kind]
    assert code == want, (code, want)


@cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
@cocotb.parametrize(at=[5, 60, 200])
async def test_abort(dut, at):
    """Abort while loads and stores are in flight, then a clean transfer without reset."""
    tb = TB(dut, f"abort-{at}", "stalls")
    tb.rd_data.check_protocol = False    # an abort drops the line on offer (documented)
    await tb.reset()
    tb.random_work(6, 6, kinds=("contiguous", "strided"))
    await ClockCycles(dut.clk, at)
    dut.abort.value = 1
    tb.flush_streams()
    await RisingEdge(dut.clk)
    dut.abort.value = 0
    assert _prefix_ok(tb)
    code = await _recover(tb, dut)
    assert code == isa.ErrorCode.NONE
