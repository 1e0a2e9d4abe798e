# amaranth: UnusedElaboratable=no
# (the constructor tests create components whose __init__ raises or that are never elaborated)
"""Accumulator memory against a Python model, with int32 wrap-around from the golden model.

Each run drives the write stream and the read-out command stream from their own testbenches with random idle
cycles, holds ``rd_data.ready`` low at random, and records every handshake with its cycle. The recording is then
replayed through a dictionary model: write beats apply in order (``accumulate`` adds with ``wrap_int32``), and a
line read out must hold the value it had when its command was accepted, or (only if write beats to that line were
accepted while the command ran) a value it took later, before the line was sent.
"""

import functools
import random

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from haneul.rtl.axi import amba_ports
from haneul.rtl.accumulator import Accumulator, AccumulatorWrite
from haneul.rtl.config import DatapathConfig
from haneul.rtl.systolic import ResultBeat
from haneul.sim.golden.quant import INT32_MAX, INT32_MIN, wrap_int32


# Stream testbench helpers ----------------------------------------------------------------------------------------

async def drive(ctx, stream, payloads, rng, gap, delay=0):
    """Send ``payloads`` on ``stream`` after ``delay`` cycles, idling a random number of cycles (probability ``gap``
    each) before each."""
    if delay:
        await ctx.tick().repeat(delay)
    for payload in payloads:
        while rng.random() < gap:
            await ctx.tick()
        ctx.set(stream.payload, payload)
        ctx.set(stream.valid, 1)
        await ctx.tick().until(stream.ready)
        ctx.set(stream.valid, 0)


async def sink(ctx, stream, count, rng, gap):
    """Accept ``count`` beats on ``stream``, with ``ready`` low with probability ``gap`` in each cycle."""
    got = 0
    while got < count:
        ctx.set(stream.ready, int(rng.random() >= gap))
        *_, valid, ready = await ctx.tick().sample(stream.valid, stream.ready)
        got += valid and ready
    ctx.set(stream.ready, 0)


async def early_sink(ctx, dut, count, rng, gap):
    """As :func:`sink` for an accumulator built with ``early_ready``: ``rd_ready_next`` is drawn at random, and
    ``rd_data.ready`` (what the recording sees) is its value of the cycle before, low in the first cycle."""
    got, ready = 0, 0
    while got < count:
        upcoming = int(rng.random() >= gap)
        ctx.set(dut.rd_ready_next, upcoming)
        ctx.set(dut.rd_data.ready, ready)
        *_, valid = await ctx.tick().sample(dut.rd_data.valid)
        got += valid and ready
        ready = upcoming
    ctx.set(dut.rd_ready_next, 0)
    ctx.set(dut.rd_data.ready, 0)


class Recorder:
    """Records the handshakes of the accumulator's streams with their cycle, and checks the stream rules on
    ``rd_data`` (once ``valid`` is high, it stays high with a stable payload until the handshake)."""

    def __init__(self, dut, n_lines, n_writes=0, *, tail=2, max_cycles=20000):
        self.dut = dut
        self.n_lines = n_lines
        self.n_writes = n_writes
        self.tail = tail
        self.max_cycles = max_cycles
        self.wr, self.cmd, self.out = [], [], []
        self.busy = []
        self.cycles = 0

    async def testbench(self, ctx):
        dut = self.dut
        signals = [dut.wr.valid, dut.wr.ready, dut.wr.payload,
                   dut.rd_cmd.valid, dut.rd_cmd.ready, dut.rd_cmd.payload,
                   dut.rd_data.valid, dut.rd_data.ready, dut.rd_data.payload, dut.rd_busy]
        held = None
        tail = self.tail
        while tail:
            if len(self.out) >= self.n_lines and len(self.wr) >= self.n_writes:
                tail -= 1
            assert self.cycles < self.max_cycles, "timeout"
            (wv, wr_, wp, cv, cr, cp, ov, or_, op, busy) = (await ctx.tick().sample(*signals))[-len(signals):]
            if held is not None:
                assert ov, f"rd_data: valid dropped before the handshake (cycle {self.cycles})"
                assert op.as_value().value == held, "rd_data: payload changed before the handshake"
            held = op.as_value().value if ov and not or_ else None
            if wv and wr_:
                self.wr.append((self.cycles, int(wp.addr), int(wp.accumulate),
                                [int(wp.data[k]) for k in range(dut.cols)]))
            if cv and cr:
                self.cmd.append((self.cycles, int(cp.base), int(cp.count)))
            if ov and or_:
                self.out.append((self.cycles, [int(op[k]) for k in range(dut.cols)]))
            self.busy.append(busy)
            self.cycles += 1


def run(dut, *testbenches):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for tb in testbenches:
        sim.add_testbench(tb)
    sim.run()


def simulate(dut, writes, cmds, rng, *, wr_gap, cmd_gap, out_gap, cmd_delay=0, final_readout=False):
    """Run ``writes`` and the read-out commands ``cmds`` concurrently; return the recording.

    With ``final_readout``, a last command reads the whole memory once every write beat has been accepted (its
    lines must then be exactly the model's final state).
    """
    n_lines = sum(c["count"] for c in cmds) + (dut.depth if final_readout else 0)
    rec = Recorder(dut, n_lines, len(writes))
    seeds = [rng.getrandbits(32) for _ in range(3)]
    writes_done = []

    async def writer(ctx):
        await drive(ctx, dut.wr, writes, random.Random(seeds[0]), wr_gap)
        writes_done.append(True)

    async def commander(ctx):
        await drive(ctx, dut.rd_cmd, cmds, random.Random(seeds[1]), cmd_gap, cmd_delay)
        if final_readout:
            while not writes_done:
                await ctx.tick()
            await drive(ctx, dut.rd_cmd, [{"base": 0, "count": dut.depth}], random.Random(seeds[1]), 0)

    if dut.early_ready:
        consumer = functools.partial(early_sink, dut=dut, count=n_lines, rng=random.Random(seeds[2]), gap=out_gap)
    else:
        consumer = functools.partial(sink, stream=dut.rd_data, count=n_lines, rng=random.Random(seeds[2]), gap=out_gap)
    run(dut, rec.testbench, writer, commander, consumer)
    return rec


def random_vector(rng, cols):
    """int32 values, a third of them within 2**8 of the int32 limits so that sums wrap often."""
    out = []
    for _ in range(cols):
        kind = rng.random()
        if kind < 0.17:
            out.append(INT32_MAX - rng.randrange(256))
        elif kind < 0.33:
            out.append(INT32_MIN + rng.randrange(256))
        else:
            out.append(rng.randint(INT32_MIN, INT32_MAX))
    return out


# Model -----------------------------------------------------------------------------------------------------------

def check(rec, dut):
    """Replay the recorded write beats; check every line read out (see the module docstring for the rule)."""
    cols = dut.cols
    history = {}       # addr -> [(cycle the value was set, value)], oldest first; initial contents are zero
    for cycle, addr, acc, vec in rec.wr:
        old = history.get(addr, [(-1, [0] * cols)])[-1][1]
        new = wrap_int32(np.array(old) + np.array(vec)) if acc else np.array(vec)
        history.setdefault(addr, [(-1, [0] * cols)]).append((cycle, [int(v) for v in new]))

    def value_at(addr, cycle):
        """The line after every beat accepted up to and including ``cycle``."""
        value = [0] * cols
        for c, v in history.get(addr, []):
            if c <= cycle:
                value = v
        return value

    lines = iter(rec.out)
    for cmd_cycle, base, count in rec.cmd:
        for i in range(count):
            out_cycle, got = next(lines)
            addr = (base + i) % dut.depth
            allowed = [value_at(addr, cmd_cycle)]
            allowed += [v for c, v in history.get(addr, []) if cmd_cycle < c < out_cycle]
            assert got in allowed, (f"line {addr} (command at cycle {cmd_cycle}, out at {out_cycle}): got {got}, "
                                    f"expected {allowed[0]}" + (f" or one of {allowed[1:]}" if allowed[1:] else ""))
    assert next(lines, None) is None


def final_state(rec, dut):
    state = {}
    for _, addr, acc, vec in rec.wr:
        old = state.get(addr, [0] * dut.cols)
        state[addr] = [int(v) for v in (wrap_int32(np.array(old) + np.array(vec)) if acc else vec)]
    return state


# Constructor and interfaces --------------------------------------------------------------------------------------

def test_defaults():
    cfg = DatapathConfig()
    acc = Accumulator(cfg)
    assert (acc.cols, acc.depth, acc.banks) == (cfg.cols, cfg.acc_depth, cfg.acc_banks)
    assert acc.addr_width == 9 and acc.half_depth == 256
    assert (acc.write_latency, acc.read_latency, acc.fifo_depth) == (8, 5, 6)
    acc = Accumulator(cfg, registered=True)
    assert (acc.write_latency, acc.read_latency, acc.fifo_depth) == (8, 6, 7)


@pytest.mark.parametrize("kwargs, error", [
    (dict(config="16x16"), TypeError),
    (dict(cols=0), TypeError),
    (dict(cols=2.0), TypeError),
    (dict(depth=6), ValueError),
    (dict(depth=1, banks=1), ValueError),
    (dict(banks=0), ValueError),
    (dict(depth=4, banks=8), ValueError),
])
def test_constructor_validation(kwargs, error):
    with pytest.raises(error):
        Accumulator(**kwargs)


def test_connects_to_array_and_ppu():
    ppu_module = pytest.importorskip("haneul.rtl.ppu")   # written concurrently; skip until it is in the tree
    cfg = DatapathConfig(rows=4, cols=4)
    acc = Accumulator(cfg, depth=16)
    ppu = ppu_module.Requantizer(lanes=cfg.cols)
    assert AccumulatorWrite(cfg, cfg.cols, acc.addr_width).members["data"] == ResultBeat(cfg).members["data"]
    m = Module()
    m.submodules.acc = acc
    m.submodules.ppu = ppu
    wiring.connect(m, acc.rd_data, ppu.i)


@pytest.mark.parametrize("kwargs", [dict(), dict(cols=2, depth=8, banks=1), dict(cols=3, depth=8, banks=8)])
def test_verilog(kwargs):
    dut = Accumulator(**kwargs)
    assert "module" in verilog.convert(dut, name="accumulator", ports=amba_ports(dut))


# Directed --------------------------------------------------------------------------------------------------------

def readout(base, count):
    return {"base": base, "count": count}


def test_wraparound():
    """int32 addition wraps in both directions, also along a back-to-back chain on one line."""
    dut = Accumulator(DatapathConfig(), cols=4, depth=8, banks=2)
    w = [
        {"addr": 0, "accumulate": 0, "data": [INT32_MAX, INT32_MIN, -1, 0]},
        {"addr": 0, "accumulate": 1, "data": [1, -1, INT32_MIN, INT32_MAX]},    # MIN, MAX, MAX, MAX
        {"addr": 0, "accumulate": 1, "data": [-1, 1, 1, 1]},                    # MAX, MIN, MIN, MIN
        {"addr": 1, "accumulate": 1, "data": [INT32_MAX, INT32_MIN, 5, -5]},    # onto the reset value 0
        {"addr": 1, "accumulate": 1, "data": [INT32_MAX, INT32_MIN, 0, 0]},     # -2, 0, 5, -5
    ]
    rec = simulate(dut, w, [readout(0, 2)], random.Random(0), wr_gap=0, cmd_gap=0, out_gap=0,
                   cmd_delay=len(w))
    check(rec, dut)
    assert [v for _, v in rec.out] == [[INT32_MAX, INT32_MIN, INT32_MIN, INT32_MIN], [-2, 0, 5, -5]]


@pytest.mark.parametrize("pattern", ["AAAA", "ABAB", "AABA", "ABCA", "ABA_A", "A_A_A", "AB__A"])
def test_hazard_patterns(pattern):
    """Back-to-back, every-other-cycle and every-third-cycle accumulation into one line, valid every cycle.

    ``_`` is an idle cycle; letters are lines. Each pattern repeats 20 times, every beat accumulating.
    """
    dut = Accumulator(DatapathConfig(), cols=3, depth=8, banks=2)
    rng = random.Random(pattern)
    line = {"A": 1, "B": 2, "C": 6}
    beats = []
    for _ in range(20):
        for ch in pattern:
            beats.append(None if ch == "_" else
                         {"addr": line[ch], "accumulate": 1, "data": random_vector(rng, dut.cols)})

    rec = Recorder(dut, 3)

    async def writer(ctx):
        for beat in beats:
            ctx.set(dut.wr.valid, beat is not None)
            if beat is not None:
                ctx.set(dut.wr.payload, beat)
            await ctx.tick()
        ctx.set(dut.wr.valid, 0)
        await ctx.tick()
        for addr in (1, 2, 6):
            ctx.set(dut.rd_cmd.payload, {"base": addr, "count": 1})
            ctx.set(dut.rd_cmd.valid, 1)
            await ctx.tick().until(dut.rd_cmd.ready)
        ctx.set(dut.rd_cmd.valid, 0)

    async def reader(ctx):
        ctx.set(dut.rd_data.ready, 1)

    run(dut, rec.testbench, writer, reader)
    check(rec, dut)
    assert len(rec.wr) == sum(b is not None for b in beats)
    # The write side never stalls.
    assert [c for c, *_ in rec.wr] == [i for i, b in enumerate(beats) if b is not None]
    state = final_state(rec, dut)
    assert [v for _, v in rec.out] == [state.get(a, [0] * dut.cols) for a in (1, 2, 6)]


def test_overwrite_then_accumulate():
    """accumulate=0 replaces the line (also right behind accumulating beats), later beats add to the new value."""
    dut = Accumulator(DatapathConfig(), cols=2, depth=4, banks=1)
    w = [
        {"addr": 3, "accumulate": 1, "data": [10, 20]},
        {"addr": 3, "accumulate": 1, "data": [1, 2]},
        {"addr": 3, "accumulate": 0, "data": [100, 200]},
        {"addr": 3, "accumulate": 1, "data": [5, 6]},
        {"addr": 2, "accumulate": 0, "data": [-7, -8]},
        {"addr": 3, "accumulate": 1, "data": [1, 1]},
    ]
    rec = simulate(dut, w, [readout(2, 2)], random.Random(0), wr_gap=0, cmd_gap=0, out_gap=0,
                   cmd_delay=len(w))
    check(rec, dut)
    assert [v for _, v in rec.out] == [[-7, -8], [106, 207]]


@pytest.mark.parametrize("registered", [False, True])
def test_readout_throughput_and_latency(registered):
    """Back-to-back commands, consumer always ready: one line per cycle, the first requested two cycles after the
    first command was accepted (it goes through the command register); registered, a cycle later."""
    dut = Accumulator(DatapathConfig(), cols=2, depth=16, banks=2, registered=registered)
    cmds = [readout(3, 5), readout(15, 2), readout(8, 1), readout(4, 16)]
    rec = simulate(dut, [], cmds, random.Random(0), wr_gap=0, cmd_gap=0, out_gap=0)
    check(rec, dut)
    out = [c for c, _ in rec.out]
    first = rec.cmd[0][0]
    assert out == list(range(first + 2 + dut.read_latency, first + 2 + dut.read_latency + 24))
    # rd_busy from the cycle after the first command up to the last line.
    assert rec.busy[first] == 0 and all(rec.busy[first + 1: out[-1] + 1]) and rec.busy[out[-1] + 1] == 0


def test_readout_coherent_right_after_write():
    """A read-out command accepted in the cycle after a write beat returns the line with that beat (interlock)."""
    dut = Accumulator(DatapathConfig(), cols=2, depth=8, banks=1)
    rec = Recorder(dut, 12)

    async def tb(ctx):
        ctx.set(dut.rd_data.ready, 1)
        for i in range(6):
            for acc in (0, 1):
                ctx.set(dut.wr.payload, {"addr": i, "accumulate": acc, "data": [i + 1, -i - acc]})
                ctx.set(dut.wr.valid, 1)
                await ctx.tick()
                ctx.set(dut.wr.valid, 0)
                ctx.set(dut.rd_cmd.payload, {"base": i, "count": 1})
                ctx.set(dut.rd_cmd.valid, 1)
                await ctx.tick().until(dut.rd_cmd.ready)
                ctx.set(dut.rd_cmd.valid, 0)
                await ctx.tick().until(dut.rd_data.valid)

    run(dut, rec.testbench, tb)
    check(rec, dut)
    expected = []
    for i in range(6):
        expected += [[i + 1, -i], [2 * (i + 1), -2 * i - 1]]
    assert [v for _, v in rec.out] == expected


def test_double_buffering():
    """The array accumulates into half 1 (a beat every cycle) while half 0 is read out at one line per cycle.

    The write stream and the read-out use different banks, so neither waits for the other; then the halves swap.
    """
    dut = Accumulator(DatapathConfig(), cols=4, depth=32, banks=2)
    rng = random.Random(5)
    half = dut.half_depth
    k_tiles = 3

    def tile_beats(base):
        beats = []
        for k in range(k_tiles):
            for i in range(half):
                beats.append({"addr": base + i, "accumulate": int(k > 0), "data": random_vector(rng, dut.cols)})
        return beats

    phases = [(tile_beats(0), None), (tile_beats(half), 0), (tile_beats(0), half)]
    n_lines = sum(half for _, r in phases if r is not None)
    rec = Recorder(dut, n_lines)

    async def controller(ctx):
        ctx.set(dut.rd_data.ready, 1)
        for beats, read_base in phases:
            if read_base is not None:
                ctx.set(dut.rd_cmd.payload, {"base": read_base, "count": half})
                ctx.set(dut.rd_cmd.valid, 1)
            for beat in beats:
                ctx.set(dut.wr.payload, beat)
                ctx.set(dut.wr.valid, 1)
                *_, cmd_fire = await ctx.tick().sample(dut.rd_cmd.valid & dut.rd_cmd.ready)
                if cmd_fire:
                    ctx.set(dut.rd_cmd.valid, 0)
            ctx.set(dut.wr.valid, 0)
            assert not ctx.get(dut.rd_cmd.valid)
            # Swap: the accumulation of this half is complete once the last beat is accepted; the read-out of the
            # other half has finished (one line per cycle, shorter than the K tiles).
            assert not ctx.get(dut.rd_busy)

    run(dut, rec.testbench, controller)
    check(rec, dut)
    # One line per cycle, never stalled by the concurrent write stream.
    for start in (0, half):
        cycles = [c for c, _ in rec.out[start: start + half]]
        assert cycles == list(range(cycles[0], cycles[0] + half))
    # The write stream never waited: a beat in every cycle.
    cycles = [c for c, *_ in rec.wr]
    assert cycles == list(range(cycles[0], cycles[0] + len(cycles)))


# Constrained random ----------------------------------------------------------------------------------------------

CASES = {
    # name: constructor arguments, lines written, gaps (write, command, read-out ready)
    "hot-nogaps":     (dict(cols=2, depth=8, banks=2), 2, (0.0, 0.0, 0.0)),
    "hot-gaps":       (dict(cols=2, depth=8, banks=2), 3, (0.3, 0.5, 0.4)),
    "1bank-gaps":     (dict(cols=3, depth=8, banks=1), 8, (0.2, 0.2, 0.5)),
    "4bank-nogaps":   (dict(cols=4, depth=16, banks=4), 6, (0.0, 0.1, 0.0)),
    "8bank-stall":    (dict(cols=2, depth=8, banks=8), 8, (0.1, 0.3, 0.7)),
}


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("case", list(CASES))
def test_random_traffic(case, seed, early_ready=False, registered=False):
    kwargs, space, (wr_gap, cmd_gap, out_gap) = CASES[case]
    rng = random.Random(f"{case}-{seed}")
    dut = Accumulator(DatapathConfig(), **kwargs, early_ready=early_ready, registered=registered)
    addrs = rng.sample(range(dut.depth), space)
    writes = [{"addr": rng.choice(addrs), "accumulate": int(rng.random() < 0.7), "data": random_vector(rng, dut.cols)}
              for _ in range(300)]
    cmds = []
    while sum(c["count"] for c in cmds) < 150:
        cmds.append(readout(rng.randrange(dut.depth), rng.choice([0, 1, 1, 2, 3, dut.depth])))
    rec = simulate(dut, writes, cmds, rng, wr_gap=wr_gap, cmd_gap=cmd_gap, out_gap=out_gap, final_readout=True)
    check(rec, dut)
    state = final_state(rec, dut)
    assert [v for _, v in rec.out[-dut.depth:]] == [state.get(a, [0] * dut.cols) for a in range(dut.depth)]
    # The write side never stalls: with no write gaps, a beat in every cycle.
    if wr_gap == 0:
        assert [c for c, *_ in rec.wr] == list(range(len(writes)))


@pytest.mark.parametrize("registered", [False, True])
@pytest.mark.parametrize("case", ["1bank-gaps", "8bank-stall", "hot-nogaps"])
def test_random_traffic_early_ready(case, registered):
    """The consumer's ready told a cycle ahead (the output queue's copies of it: two storage chunks at 3 columns),
    and with it the output register (loaded per chunk at copies of the pop decision, as the datapath builds it)."""
    test_random_traffic(case, 0, early_ready=True, registered=registered)


@pytest.mark.parametrize("early_ready, registered", [(False, False), (True, False), (True, True)])
def test_default_configuration(early_ready, registered):
    """The full-size default accumulator (512 lines of 16 int32, 2 banks: eight storage chunks in the output
    queue), short random traffic."""
    dut = Accumulator(early_ready=early_ready, registered=registered)
    rng = random.Random(7)
    addrs = [rng.randrange(dut.depth) for _ in range(6)] + [0, dut.depth - 1, dut.half_depth - 1, dut.half_depth]
    writes = [{"addr": rng.choice(addrs), "accumulate": int(rng.random() < 0.7), "data": random_vector(rng, dut.cols)}
              for _ in range(80)]
    cmds = [readout(a, rng.choice([1, 2])) for a in rng.choices(addrs, k=20)]
    rec = simulate(dut, writes, cmds, rng, wr_gap=0.2, cmd_gap=0.3, out_gap=0.3, final_readout=True)
    check(rec, dut)
    state = final_state(rec, dut)
    assert [v for _, v in rec.out[-dut.depth:]] == [state.get(a, [0] * dut.cols) for a in range(dut.depth)]
