# amaranth: UnusedElaboratable=no
# (the constructor tests create components whose __init__ raises or that are never elaborated)
"""DMA engine in the Amaranth simulator, against :mod:`haneul.sim.dma_model`, on the AXI memory model
:class:`haneul.sim.axi_memory.AxiMemory` (random stalls on every AXI channel, latency, error injection, protocol
checks) with random valid gaps on ``rd_cmd``/``wr_cmd``/``wr_data`` and random ready gaps on ``rd_data``.

The cocotb testbench (``test_dma_cocotb.py``) runs the generated Verilog against cocotbext-axi's ``AxiRam``.
"""

import collections
import random
import zlib

import numpy as np
import pytest
from amaranth.sim import Simulator

from haneul.rtl import isa
from haneul.rtl.axi import Resp
from haneul.rtl.config import DatapathConfig
from haneul.rtl.dma import Dma, ReadCommand, ReadDest, ReadLine
from haneul.sim import dma_model
from haneul.sim.axi_memory import AxiMemory
from haneul.sim.cocotb.payload import Codec

MEM_SIZE = 1 << 14
READ_REGION = (0x0100, 0x1900)       # crosses the 4 KiB boundary at 0x1000
WRITE_REGION = (0x2000, 0x3800)      # crosses the one at 0x3000

SMALL = dict(config=DatapathConfig(rows=4, cols=4, spad_depth=256, spad_banks=4, acc_depth=64, acc_banks=2),
             data_width=32)
DEFAULT = dict(config=DatapathConfig(), data_width=128)


class Bench:
    """One simulation of a :class:`Dma` with an :class:`AxiMemory` and stream endpoints with random gaps.

    ``loads`` and ``stores`` are queued with :meth:`load` and :meth:`store`; :meth:`run` simulates until everything
    has completed (or ``main`` returns), then the results are in ``lines`` (decoded ``rd_data`` beats),
    ``done`` (``wr_done`` pulses), ``mem`` and ``cycles``.
    """

    def __init__(self, config, data_width, *, seed=0, bus_gaps=0.0, stream_gaps=0.0, latency=(1, 4), errors=(),
                 **kwargs):
        self.config = config
        self.dut = Dma(config, data_width=data_width, **kwargs)
        self.nbytes = data_width // 8
        self.rng = random.Random(seed)
        self.mem = AxiMemory(self.dut.bus, size=MEM_SIZE, rng=self.rng.random(), gaps=bus_gaps, latency=latency,
                             errors=errors)
        self.stream_gaps = stream_gaps
        self.rd_cmd_codec = Codec(ReadCommand)
        self.rd_data_codec = Codec(ReadLine(config, data_width))
        self.wr_cmd_codec = Codec(isa.StoreArgs)
        self.wr_data_codec = Codec(self.dut.wr_data.payload.shape())
        self.rd_cmds, self.wr_cmds, self.wr_lines = [], [], []       # everything queued, for the checks
        self.queues = {"rd_cmd": collections.deque(), "wr_cmd": collections.deque(), "wr_data": collections.deque()}
        self.epoch = 0
        self.expected_lines = []
        self.lines = []
        self.done = 0
        self.cycles = 0
        self.window = (0, MEM_SIZE)
        self.first_line_cycle = None
        self.last_line_cycle = None

    # Work -----------------------------------------------------------------------------------------------------

    def load(self, load, dest=ReadDest.SPAD):
        self.rd_cmds.append({"args": dma_model.load_fields(load), "dest": dest})
        self.queues["rd_cmd"].append(self.rd_cmds[-1])
        lines = dma_model.load_lines(np.frombuffer(self.mem.mem, np.uint8), load, line_bytes=self.nbytes,
                                     spad_depth=self.config.spad_depth)
        for k, (addr, line) in enumerate(lines):
            self.expected_lines.append({"addr": addr, "data": line.tolist(), "dest": dest,
                                        "last": int(k == len(lines) - 1)})

    def store(self, store, lines=None):
        if lines is None:
            lines = [[self.rng.randint(-128, 127) for _ in range(self.config.cols)] for _ in range(store.lines)]
        self.wr_cmds.append(dma_model.store_fields(store))
        self.wr_lines += lines
        self.queues["wr_cmd"].append(self.wr_cmds[-1])
        self.queues["wr_data"].extend(lines)
        return lines

    # Processes ------------------------------------------------------------------------------------------------

    async def _drive(self, ctx, stream, codec, queue):
        """Send what is queued, with random idle cycles; :meth:`cancel` drops the beat on offer and the queue."""
        while True:
            if not queue or self.rng.random() < self.stream_gaps:
                await ctx.tick()
                continue
            value, epoch = queue.popleft(), self.epoch
            ctx.set(stream.payload.as_value(), codec.pack(value))
            ctx.set(stream.valid, 1)
            while True:
                *_, ready = await ctx.tick().sample(stream.ready)
                if ready or self.epoch != epoch:
                    break
            ctx.set(stream.valid, 0)

    def cancel(self):
        """Reset the stream sources and forget the expectations (after an abort or an error)."""
        self.epoch += 1
        for queue in self.queues.values():
            queue.clear()
        self.rd_cmds, self.wr_cmds, self.wr_lines, self.expected_lines, self.lines = [], [], [], [], []
        self.done = 0

    async def _rd_cmds(self, ctx):
        await self._drive(ctx, self.dut.rd_cmd, self.rd_cmd_codec, self.queues["rd_cmd"])

    async def _wr_cmds(self, ctx):
        await self._drive(ctx, self.dut.wr_cmd, self.wr_cmd_codec, self.queues["wr_cmd"])

    async def _wr_data(self, ctx):
        await self._drive(ctx, self.dut.wr_data, self.wr_data_codec, self.queues["wr_data"])

    async def _sink(self, ctx):
        s = self.dut.rd_data
        held = None
        cycle = 0
        while True:
            ctx.set(s.ready, int(self.rng.random() >= self.stream_gaps))
            *_, valid, ready, payload, done = await ctx.tick().sample(s.valid, s.ready, s.payload.as_value(),
                                                                      self.dut.wr_done)
            cycle += 1
            self.done += done
            if held is not None:
                assert valid and payload == held, "rd_data: valid withdrawn or payload changed while stalled"
            held = payload if valid and not ready else None
            if valid and ready:
                self.lines.append(self.rd_data_codec.unpack(payload))
                if self.first_line_cycle is None:
                    self.first_line_cycle = cycle
                self.last_line_cycle = cycle

    def finished(self):
        return len(self.lines) >= len(self.expected_lines) and self.done >= len(self.wr_cmds)

    async def wait_idle(self, ctx, timeout=20000):
        for _ in range(timeout):
            await ctx.tick()
            self.cycles += 1
            if self.finished() and not ctx.get(self.dut.busy):
                return True
        return False

    def run(self, main=None, timeout=20000):
        sim = Simulator(self.dut)
        sim.add_clock(1e-8)
        sim.add_testbench(self.mem.serve, background=True)
        sim.add_testbench(self._rd_cmds, background=True)
        sim.add_testbench(self._wr_cmds, background=True)
        sim.add_testbench(self._wr_data, background=True)
        sim.add_testbench(self._sink, background=True)
        result = {}

        async def default_main(ctx):
            ctx.set(self.dut.window_base, self.window[0])
            ctx.set(self.dut.window_size, self.window[1])
            result["idle"] = await self.wait_idle(ctx, timeout)
            result["counters"] = {name: ctx.get(getattr(self.dut, name)) for name in COUNTERS}

        sim.add_testbench(main or default_main)
        sim.run()
        self.result = result
        self.mem.check()
        return result

    def check(self):
        assert self.result.get("idle", True), (f"not idle after {self.cycles} cycles: {len(self.lines)} of "
                                               f"{len(self.expected_lines)} lines, {self.done} of "
                                               f"{len(self.wr_cmds)} stores done")
        assert len(self.lines) == len(self.expected_lines)
        for k, (got, want) in enumerate(zip(self.lines, self.expected_lines)):
            assert got == want, f"line {k}: {got} != {want}"
        assert self.done == len(self.wr_cmds)


COUNTERS = ("bytes_read", "bytes_written", "rd_beats", "wr_beats", "rd_stall_cycles", "ar_stall_cycles",
            "aw_stall_cycles", "w_stall_cycles", "r_wait_cycles", "wr_starve_cycles")


def _fill(bench, seed):
    rng = np.random.default_rng(seed)
    bench.mem.mem[:] = rng.integers(0, 256, MEM_SIZE, dtype=np.uint8).tobytes()


# Tests --------------------------------------------------------------------------------------------------------

def test_constructor_checks():
    with pytest.raises(ValueError, match="fewer than a line"):
        Dma(DatapathConfig(), data_width=64)
    with pytest.raises(ValueError, match="fewer than a line"):
        Dma(DatapathConfig(rows=4, cols=8), data_width=32)
    with pytest.raises(TypeError, match="DatapathConfig"):
        Dma("16x16")
    with pytest.raises(ValueError, match="power of two"):
        Dma(DatapathConfig(), read_buffer=48)
    with pytest.raises(ValueError, match="4 KiB"):
        Dma(DatapathConfig(), data_width=1024, max_burst=64)
    Dma(DatapathConfig(rows=8, cols=8), data_width=64)


def _random_work(bench, seed, n_loads, n_stores, kinds=(None,)):
    rng = random.Random(seed)
    stores = []
    for k in range(n_loads):
        bench.load(dma_model.random_load(rng, line_bytes=bench.nbytes, region=READ_REGION,
                                         spad_depth=bench.config.spad_depth, kind=kinds[k % len(kinds)]),
                   dest=rng.choice(list(ReadDest)))
    for k in range(n_stores):
        kind = kinds[k % len(kinds)]
        if kind == "contiguous" and bench.config.cols != bench.nbytes:
            kind = "unaligned"
        store = dma_model.random_store(rng, line_bytes=bench.nbytes, cols=bench.config.cols, region=WRITE_REGION,
                                       kind=kind)
        stores.append((store, bench.store(store)))
    return stores


def _check_memory(bench, before, stores):
    want = before.copy()
    for store, lines in stores:
        dma_model.store(want, store, lines)
    got = np.frombuffer(bytes(bench.mem.mem), np.uint8)
    diff = np.flatnonzero(got != want)
    assert not len(diff), f"{len(diff)} bytes differ, first at {diff[0]:#x}: {got[diff[0]]} != {want[diff[0]]}"


@pytest.mark.parametrize("size", ["small", "default"])
@pytest.mark.parametrize("traffic", ["smooth", "stalls"])
def test_random_transfers(size, traffic):
    """Random LOADs and STOREs at once (contiguous, unaligned, strided, padded) match the model, with or without
    random stalls on every AXI channel and every stream."""
    params = SMALL if size == "small" else DEFAULT
    gaps = 0.3 if traffic == "stalls" else 0.0
    seed = zlib.crc32(f"{size}-{traffic}".encode())
    bench = Bench(**params, seed=seed, bus_gaps=gaps, stream_gaps=gaps, latency=(1, 6) if gaps else (1, 1))
    _fill(bench, seed)
    before = np.frombuffer(bytes(bench.mem.mem), np.uint8).copy()
    n = 16 if size == "small" else 10
    stores = _random_work(bench, seed, n, n, kinds=("contiguous", "unaligned", "strided", None))
    bench.run()
    bench.check()
    _check_memory(bench, before, stores)
    counters = bench.result["counters"]
    assert counters["bytes_written"] == sum(store.lines * store.length for store, _ in stores)
    loads = [c["args"] for c in bench.rd_cmds]
    want_read = sum(sum(1 for _, ext in dma_model.load_iterations(_load_of(a)) if ext is not None) * a["length"]
                    for a in loads)
    assert counters["bytes_read"] == want_read


def _load_of(fields):
    return isa.Load(ext_addr=fields["ext_addr"], spad_addr=fields["spad_addr"], length=fields["length"],
                    offset=fields["offset"], pad_value=fields["pad_value"],
                    loops=tuple((l["count"], l["ext_stride"], l["spad_stride"]) for l in fields["loops"]),
                    pad=tuple((p["before"], p["after"]) for p in fields["pad"]))


# Throughput ------------------------------------------------------------------------------------------------------

def measure_read(kind, lines=256, *, params=DEFAULT, latency=(1, 1)):
    """Lines per cycle of one LOAD of ``lines`` lines (first to last line on ``rd_data``), no stalls; and the
    bursts it used."""
    bench = Bench(**params, latency=latency)
    nb = bench.nbytes
    base = 0x1000 + (3 if kind.startswith("unaligned") else 0)
    stride = 2 * nb if kind.endswith("strided") else nb
    bench.load(isa.Load(ext_addr=base, spad_addr=0, length=nb if kind != "strided-short" else nb // 2,
                        loops=((lines, stride, 1),)))
    bench.run()
    bench.check()
    return lines / (bench.last_line_cycle - bench.first_line_cycle + 1), bench.mem.bursts


def measure_write(kind, lines=256, *, params=DEFAULT):
    """Lines per cycle of one STORE of ``lines`` lines (cycles from the command to ``wr_done``), no stalls."""
    bench = Bench(**params, latency=(1, 1))
    nb = bench.nbytes
    cols = bench.config.cols
    base = 0x1000 + (3 if kind.startswith("unaligned") else 0)
    stride = 2 * nb if kind.endswith("strided") else cols
    bench.store(isa.Store(ext_addr=base, length=cols, loops=((lines, stride),)))
    bench.run()
    bench.check()
    return lines / bench.cycles, bench.mem.bursts


@pytest.mark.parametrize("kind,minimum", [("contiguous", 0.95), ("strided", 0.95), ("unaligned", 0.95),
                                          ("unaligned-strided", 0.48)])
def test_read_throughput(kind, minimum):
    """One line per cycle when each line needs one new bus word (aligned or back to back at any alignment); two
    cycles when it needs two. Contiguous aligned lines go out as 16-beat bursts."""
    rate, bursts = measure_read(kind)
    assert rate >= minimum, f"{kind}: {rate:.3f} lines/cycle"
    if kind == "contiguous":
        assert all(beats == 16 for _, _, beats in bursts), bursts


@pytest.mark.parametrize("kind,minimum", [("contiguous", 0.9), ("strided", 0.9), ("unaligned", 0.9)])
def test_write_throughput(kind, minimum):
    rate, bursts = measure_write(kind)
    assert rate >= minimum, f"{kind}: {rate:.3f} lines/cycle"
    if kind == "contiguous":
        assert all(beats == 16 for _, _, beats in bursts), bursts


def test_outstanding_reads():
    """With a long read latency the engine keeps several bursts in flight (up to its read buffer)."""
    rate, _ = measure_read("contiguous", lines=512, latency=(24, 24))
    assert rate >= 0.95, rate


# Errors and abort ------------------------------------------------------------------------------------------------

async def _until_idle(bench, ctx, timeout=5000):
    for _ in range(timeout):
        await ctx.tick()
        if not ctx.get(bench.dut.busy):
            return
    raise AssertionError(f"busy after {timeout} cycles")


async def _until(bench, ctx, condition, timeout=20000):
    for _ in range(timeout):
        await ctx.tick()
        if condition():
            return
    raise AssertionError(f"condition not met after {timeout} cycles")


def _clean_work(bench, seed):
    """Queue random loads and stores after an error or abort; returns the stores (to check memory)."""
    return _random_work(bench, seed, 4, 4, kinds=("contiguous", "strided", "unaligned"))


def _run_recovery(bench, seed, trouble):
    """Run ``trouble(ctx)`` (which must end in an error or an abort), check that the engine stops cleanly, then
    that a clean transfer afterwards is exact."""
    _fill(bench, seed)
    outcome = {}

    async def main(ctx):
        ctx.set(bench.dut.window_base, 0)
        ctx.set(bench.dut.window_size, MEM_SIZE)
        prefix_ok = await trouble(ctx)
        await _until_idle(bench, ctx)
        outcome["error_code"] = ctx.get(bench.dut.error_code)
        outcome["prefix_ok"] = prefix_ok
        for _ in range(20):                     # stays idle, consumes nothing while error is set
            await ctx.tick()
            assert not ctx.get(bench.dut.busy)
        bench.cancel()
        ctx.set(bench.dut.error_clear, 1)
        await ctx.tick()
        ctx.set(bench.dut.error_clear, 0)
        before = np.frombuffer(bytes(bench.mem.mem), np.uint8).copy()
        stores = _clean_work(bench, seed + 1)
        await _until(bench, ctx, lambda: bench.finished())
        await _until_idle(bench, ctx)
        outcome["before"], outcome["stores"] = before, stores
        outcome["error_after"] = ctx.get(bench.dut.error)

    bench.run(main)
    bench.check()
    _check_memory(bench, outcome["before"], outcome["stores"])
    assert not outcome["error_after"]
    return outcome


def _prefix(bench):
    return all(got == want for got, want in zip(bench.lines, bench.expected_lines))


@pytest.mark.parametrize("channel", ["read", "write"])
def test_window_error(channel):
    """A line outside the window is not issued: ADDR_WINDOW, the lines before it only, a clean stop."""
    bench = Bench(**DEFAULT, seed=5, bus_gaps=0.2, stream_gaps=0.2)

    async def trouble(ctx):
        ctx.set(bench.dut.window_base, 0x1000)
        ctx.set(bench.dut.window_size, 0x0800)
        if channel == "read":
            bench.load(isa.Load(ext_addr=0x1700, spad_addr=0, length=16, loops=((40, 16, 1),)))
        else:
            bench.store(isa.Store(ext_addr=0x1700, length=16, loops=((40, 16),)))
        await _until(bench, ctx, lambda: ctx.get(bench.dut.error))
        writes = [b for b in bench.mem.bursts if b[0] == "W"]
        reads = [b for b in bench.mem.bursts if b[0] == "R"]
        for _, addr, beats in reads + writes:
            assert 0x1000 <= addr and addr + 16 * beats <= 0x1800, (addr, beats)
        ctx.set(bench.dut.window_base, 0)
        ctx.set(bench.dut.window_size, MEM_SIZE)
        return _prefix(bench)

    outcome = _run_recovery(bench, 5, trouble)
    assert outcome["error_code"] == isa.ErrorCode.ADDR_WINDOW
    assert outcome["prefix_ok"]


@pytest.mark.parametrize("channel", ["read", "write"])
@pytest.mark.parametrize("resp", [Resp.SLVERR, Resp.DECERR])
def test_bus_error(channel, resp):
    """SLVERR / DECERR on a beat: the matching error code, every outstanding burst completed, a clean stop."""
    bench = Bench(**DEFAULT, seed=6, bus_gaps=0.2, stream_gaps=0.2, errors=[(0x1400, 0x1410, resp)])

    async def trouble(ctx):
        if channel == "read":
            bench.load(isa.Load(ext_addr=0x1000, spad_addr=0, length=16, loops=((128, 16, 1),)))
        else:
            bench.store(isa.Store(ext_addr=0x1000, length=16, loops=((128, 16),)))
        await _until(bench, ctx, lambda: ctx.get(bench.dut.error))
        return _prefix(bench)

    outcome = _run_recovery(bench, 6, trouble)
    code = isa.ErrorCode.BUS_SLVERR if resp == Resp.SLVERR else isa.ErrorCode.BUS_DECERR
    assert outcome["error_code"] == code
    assert outcome["prefix_ok"]


@pytest.mark.parametrize("at", [3, 40, 150])
def test_abort(at):
    """Abort in the middle of concurrent loads and stores: the bus is left clean (checked by the memory model),
    nothing hangs, and a transfer afterwards (without reset) is exact."""
    bench = Bench(**DEFAULT, seed=at, bus_gaps=0.3, stream_gaps=0.3, latency=(1, 8))

    async def trouble(ctx):
        _random_work(bench, at, 6, 6, kinds=("contiguous", "strided"))
        for _ in range(at):
            await ctx.tick()
        ctx.set(bench.dut.abort, 1)
        prefix_ok = _prefix(bench)
        bench.cancel()                          # the command processor resets the stream sources
        await ctx.tick()
        ctx.set(bench.dut.abort, 0)
        return prefix_ok

    outcome = _run_recovery(bench, at, trouble)
    assert outcome["error_code"] == isa.ErrorCode.NONE
    assert outcome["prefix_ok"]


@pytest.mark.parametrize("gaps", [0.0, 0.3])
def test_descriptors_sharing_a_word(gaps):
    """Regression: a STORE whose first line lands in the bus word of the previous STORE's last line (4-byte
    output lines of consecutive tiles) lost that line — the planner merged it into a word already flushed. Loads
    likewise start their own words."""
    bench = Bench(SMALL["config"], 128, seed=5, bus_gaps=gaps, stream_gaps=gaps)
    _fill(bench, 5)
    before = np.frombuffer(bytes(bench.mem.mem), np.uint8).copy()
    stores = [(s, bench.store(s)) for s in (isa.Store(0x2740, 4, ((2, 4),)), isa.Store(0x2748, 4, ((2, 4),)),
                                            isa.Store(0x2750, 4, ((1, 4),)), isa.Store(0x2754, 4, ((3, 4),)))]
    for load in (isa.Load(0x1100, 0, 4, loops=((2, 4, 1),)), isa.Load(0x1108, 2, 4, loops=((2, 4, 1),)),
                 isa.Load(0x1110, 4, 4, loops=((3, 4, 1),), pad=((1, 0),))):
        bench.load(load)
    bench.run()
    bench.check()
    _check_memory(bench, before, stores)


@pytest.mark.parametrize("gaps", [0.0, 0.3])
def test_overlapping_lines_read_each_word_once(gaps):
    """im2col lines of the RGB layer: 9 bytes at 3-byte steps. A line on the same two words as the previous one
    needs no new word, so the bus carries each word of the span about once (it carried most of them twice)."""
    bench = Bench(DatapathConfig(), 128, seed=9, bus_gaps=gaps, stream_gaps=gaps)
    _fill(bench, 9)
    loads = [isa.Load(0x1003, 0, 9, loops=((30, 3, 1), (4, 96, 30)), offset=2, pad_value=-7, pad=((0, 0), (1, 1))),
             isa.Load(0x1401, 200, 6, loops=((17, 2, 1),))]
    for load in loads:
        bench.load(load)
    bench.run()
    bench.check()
    beats = sum(n for kind, _, n in bench.mem.bursts if kind == "R")
    span_words = 2 * ((30 * 3 + 9) // 16 + 2) + (17 * 2 + 6) // 16 + 2
    assert beats <= span_words, f"{beats} R beats for about {span_words} distinct words"
